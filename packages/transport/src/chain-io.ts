import type { GuestMemory, MappedRanges } from '@xvio/grant-pool';
import type { DescriptorChain } from './descriptor-chain.js';

/** Reads a chain's device-readable bytes in order, across descriptors. */
export class ChainReader {
  private segment = 0;
  private offset = 0;
  private consumed = 0;

  constructor(
    private readonly segments: readonly Uint8Array[],
    readonly length: number,
  ) {}

  get remaining(): number {
    return this.length - this.consumed;
  }

  /** Copies up to `target.length` bytes; returns how many. */
  read(target: Uint8Array): number {
    let done = 0;
    while (done < target.length && this.segment < this.segments.length) {
      const source = this.segments[this.segment]!;
      const n = Math.min(source.length - this.offset, target.length - done);
      target.set(source.subarray(this.offset, this.offset + n), done);
      done += n;
      this.advance(n, source.length);
    }
    this.consumed += done;
    return done;
  }

  /** Copies exactly `length` bytes, or returns undefined (and consumes nothing) when fewer remain. */
  readExact(length: number): Uint8Array | undefined {
    if (length > this.remaining) return undefined;
    const bytes = new Uint8Array(length);
    this.read(bytes);
    return bytes;
  }

  skip(length: number): number {
    let done = 0;
    while (done < length && this.segment < this.segments.length) {
      const size = this.segments[this.segment]!.length;
      const n = Math.min(size - this.offset, length - done);
      done += n;
      this.advance(n, size);
    }
    this.consumed += done;
    return done;
  }

  /** Zero-copy views of the next `length` bytes (fewer if the chain ends), consumed. */
  views(length: number): Uint8Array[] {
    const out: Uint8Array[] = [];
    let done = 0;
    while (done < length && this.segment < this.segments.length) {
      const source = this.segments[this.segment]!;
      const n = Math.min(source.length - this.offset, length - done);
      if (n > 0) out.push(source.subarray(this.offset, this.offset + n));
      done += n;
      this.advance(n, source.length);
    }
    this.consumed += done;
    return out;
  }

  private advance(n: number, size: number): void {
    this.offset += n;
    if (this.offset === size) {
      this.segment++;
      this.offset = 0;
    }
  }
}

/** Writes into a chain's device-writable buffers in order, across descriptors. */
export class ChainWriter {
  private segment = 0;
  private offset = 0;
  private count = 0;

  constructor(
    private readonly segments: readonly Uint8Array[],
    readonly length: number,
    /** Bytes written so far into each writable range, for strategies that copy back. */
    private readonly perRange: number[],
    private readonly rangeOfSegment: readonly number[],
  ) {}

  get remaining(): number {
    return this.length - this.count;
  }

  get written(): number {
    return this.count;
  }

  /** Copies as much of `source` as fits; returns how many bytes. */
  write(source: Uint8Array): number {
    let done = 0;
    while (done < source.length && this.segment < this.segments.length) {
      const target = this.segments[this.segment]!;
      const n = Math.min(target.length - this.offset, source.length - done);
      target.set(source.subarray(done, done + n), this.offset);
      this.perRange[this.rangeOfSegment[this.segment]!]! += n;
      done += n;
      this.offset += n;
      if (this.offset === target.length) {
        this.segment++;
        this.offset = 0;
      }
    }
    this.count += done;
    return done;
  }

  /** Zero-copy views of the next `length` writable bytes (fewer if the chain ends), counted as written. */
  views(length: number): Uint8Array[] {
    const out: Uint8Array[] = [];
    let done = 0;
    while (done < length && this.segment < this.segments.length) {
      const target = this.segments[this.segment]!;
      const n = Math.min(target.length - this.offset, length - done);
      if (n > 0) out.push(target.subarray(this.offset, this.offset + n));
      this.perRange[this.rangeOfSegment[this.segment]!]! += n;
      done += n;
      this.offset += n;
      if (this.offset === target.length) {
        this.segment++;
        this.offset = 0;
      }
    }
    this.count += done;
    return out;
  }
}

/** A chain's buffers mapped in one batch; `close` must be called before the chain is completed. */
export interface ChainIo {
  readonly reader: ChainReader;
  readonly writer: ChainWriter;
  /** Unmaps (or copies back) and returns the bytes written, for `addUsed`. Idempotent. */
  close(): number;
}

const NO_SEGMENTS: readonly Uint8Array[] = [];
const NO_INDEXES: readonly number[] = [];

/** A mapped chain's reader and writer; a class, so a chain costs no closure. */
class MappedChain implements ChainIo {
  private closed = false;

  constructor(
    readonly reader: ChainReader,
    readonly writer: ChainWriter,
    private readonly mapped: MappedRanges,
    private readonly perRange: number[],
  ) {}

  close(): number {
    if (!this.closed) {
      this.closed = true;
      this.mapped.release(this.perRange);
    }
    return this.writer.written;
  }
}

/**
 * Maps every buffer of a chain at once through the memory strategy (grant map per request
 * batches all pages here) and gives a reader and a writer over them. Throws
 * `GuestMemoryError` when a buffer is not accessible, having mapped nothing.
 */
export function openChain(memory: GuestMemory, chain: DescriptorChain): ChainIo {
  // With the address halves: a strategy that decodes them makes no BigInt per buffer.
  const ranges = chain.descriptorRanges();
  const mapped: MappedRanges = memory.map(ranges);
  const count = ranges.length;
  // Zeros pushed, not `new Array(n).fill(0)`: a holey array and a builtin call cost more
  // than the rest of opening a one-buffer chain.
  const written: number[] = [];
  for (let i = 0; i < count; i++) written.push(0);
  // The usual chains (a request and its status, a lone buffer) have at most one readable and
  // one writable range: their segment lists are used as the strategy gave them, not copied.
  let readIndex = -1;
  let writeIndex = -1;
  let readRanges = 0;
  let writeRanges = 0;
  for (let i = 0; i < count; i++) {
    if (ranges[i]!.access === 'read') {
      readRanges++;
      readIndex = i;
    } else {
      writeRanges++;
      writeIndex = i;
    }
  }
  let readSegments: readonly Uint8Array[] = NO_SEGMENTS;
  if (readRanges === 1) {
    readSegments = mapped.segments[readIndex]!;
  } else if (readRanges > 1) {
    const gathered: Uint8Array[] = [];
    for (let i = 0; i < count; i++) {
      if (ranges[i]!.access === 'read') for (const segment of mapped.segments[i]!) gathered.push(segment);
    }
    readSegments = gathered;
  }
  let writeSegments: readonly Uint8Array[] = NO_SEGMENTS;
  let rangeOfSegment: readonly number[] = NO_INDEXES;
  if (writeRanges === 1 && mapped.segments[writeIndex]!.length === 1) {
    writeSegments = mapped.segments[writeIndex]!;
    rangeOfSegment = [writeIndex];
  } else if (writeRanges > 0) {
    const gathered: Uint8Array[] = [];
    const indexes: number[] = [];
    for (let i = 0; i < count; i++) {
      if (ranges[i]!.access === 'read') continue;
      for (const segment of mapped.segments[i]!) {
        gathered.push(segment);
        indexes.push(i);
      }
    }
    writeSegments = gathered;
    rangeOfSegment = indexes;
  }
  return new MappedChain(
    new ChainReader(readSegments, chain.readableLength),
    new ChainWriter(writeSegments, chain.writableLength, written, rangeOfSegment),
    mapped,
    written,
  );
}
