import type { ForeignMapping, ForeignMemory } from '@xvio/xen';
import { PAGE_SIZE } from './grant-address.js';
import { countTransfer, DEFAULT_MAX_REQUEST_PAGES, type XenGuestMemory } from './grant-map-memory.js';
import { type FrameSpan, frameSpan, isXenFailure } from './grant-span.js';
import type { FenceOrder, MappedRanges, MemoryAccess, MemoryRange } from './guest-memory.js';
import { newStrategyCounters, type StrategyCounters } from './memory-counters.js';
import { GuestMemoryError, type MemoryFaultCode } from './memory-errors.js';
import { fence } from './memory-fence.js';

export const DEFAULT_CHUNK_PAGES = 256;
const EMPTY = new Uint8Array(0);
export const DEFAULT_MAX_CHUNKS = 64;

export interface ForeignMappingMemoryOptions {
  readonly foreignMemory: ForeignMemory;
  /** The guest whose physical memory the addresses name. */
  readonly domid: number;
  /** Pages per cached chunk (default 256 = 1 MiB). */
  readonly chunkPages?: number;
  /** Chunks kept mapped (default 64); chunks in use by a request are never evicted. */
  readonly maxChunks?: number;
  /** The guest's RAM size when known: addresses beyond fault without a hypercall, and chunks stop there. */
  readonly guestMemoryBytes?: number;
  readonly maxRequestPages?: number;
}

interface Chunk {
  readonly index: number;
  readonly firstFrame: bigint;
  readonly mapping: ForeignMapping;
  /** Requests currently using this chunk. */
  pins: number;
}

/** Where a piece of a range lives on the host, and what must be let go after. */
export interface Piece {
  readonly bytes: Uint8Array;
  readonly chunk?: Chunk;
  readonly mapping?: ForeignMapping;
}

/**
 * The `foreign` strategy, for guests without grant DMA (`grant_usage=0`, stock Debian
 * kernels): addresses are guest-physical and the backend maps the guest's frames with
 * privcmd. Frames are mapped in aligned chunks kept in a bounded LRU cache, so a busy
 * device maps each chunk once; a chunk that cannot be mapped whole (a hole in the guest's
 * physical map) is mapped per request instead. Rings are mapped exactly and kept.
 */
export class ForeignMappingMemory implements XenGuestMemory {
  readonly kind = 'foreign';
  readonly counters: StrategyCounters = newStrategyCounters();
  private readonly foreign: ForeignMemory;
  private readonly domid: number;
  private readonly chunkPages: number;
  private readonly maxChunks: number;
  private readonly maxRequestPages: number;
  private readonly endAddress: bigint | undefined;
  /** LRU order: first is least recently used. */
  private readonly chunks = new Map<number, Chunk>();
  private readonly views = new Set<ForeignMapping>();
  /** Per-request mappings (chunk could not be mapped whole) that are live. */
  private readonly exact = new Set<ForeignMapping>();
  private readonly requests = new Set<Piece[]>();

  constructor(options: ForeignMappingMemoryOptions) {
    this.foreign = options.foreignMemory;
    this.domid = options.domid;
    this.chunkPages = options.chunkPages ?? DEFAULT_CHUNK_PAGES;
    this.maxChunks = options.maxChunks ?? DEFAULT_MAX_CHUNKS;
    this.maxRequestPages = options.maxRequestPages ?? DEFAULT_MAX_REQUEST_PAGES;
    this.endAddress = options.guestMemoryBytes === undefined ? undefined : BigInt(options.guestMemoryBytes);
    if (!Number.isInteger(this.chunkPages) || this.chunkPages < 1)
      throw new RangeError(`chunkPages must be a positive integer`);
    if (!Number.isInteger(this.maxChunks) || this.maxChunks < 1)
      throw new RangeError(`maxChunks must be a positive integer`);
  }

  private fault(
    code: MemoryFaultCode,
    address: bigint,
    length: number,
    message?: string,
    cause?: unknown,
  ): never {
    this.counters.faults++;
    throw new GuestMemoryError(code, address, length, message, cause === undefined ? undefined : { cause });
  }

  private validate(address: bigint, length: number): FrameSpan | MemoryFaultCode {
    const span = frameSpan(address, length);
    if (typeof span === 'string') return span;
    if (this.endAddress !== undefined && address + BigInt(length) > this.endAddress) return 'unmapped';
    if (span.pages > this.maxRequestPages) return 'too-large';
    return span;
  }

  private span(address: bigint, length: number): FrameSpan {
    const span = this.validate(address, length);
    if (typeof span === 'string') this.fault(span, address, length);
    return span;
  }

  /** Maps frames, or throws the typed fault (EINVAL: not guest RAM). */
  private mapFrames(frames: bigint[], writable: boolean, address: bigint, length: number): ForeignMapping {
    this.counters.calls++;
    try {
      const mapping = this.foreign.map(this.domid, frames, { writable });
      this.counters.maps += frames.length;
      return mapping;
    } catch (error) {
      if (!isXenFailure(error)) throw error;
      return this.fault(
        error.code === 'EINVAL' ? 'unmapped' : 'host-failure',
        address,
        length,
        undefined,
        error,
      );
    }
  }

  private unmapMapping(mapping: ForeignMapping): void {
    if (!mapping.mapped) return;
    this.counters.calls++;
    this.counters.unmaps += mapping.pages;
    mapping.unmap();
  }

  /** The cached chunk `index`, mapping it when missing; undefined when it cannot be mapped whole. */
  private chunk(index: number): Chunk | undefined {
    const hit = this.chunks.get(index);
    if (hit) {
      this.counters.cacheHits++;
      this.chunks.delete(index);
      this.chunks.set(index, hit);
      return hit;
    }
    this.counters.cacheMisses++;
    const firstFrame = BigInt(index * this.chunkPages);
    let pages = this.chunkPages;
    if (this.endAddress !== undefined) {
      const left = this.endAddress / BigInt(PAGE_SIZE) - firstFrame;
      if (left < BigInt(pages)) pages = Number(left);
    }
    if (pages < 1) return undefined;
    let mapping: ForeignMapping;
    this.counters.calls++;
    try {
      mapping = this.foreign.map(
        this.domid,
        Array.from({ length: pages }, (_, i) => firstFrame + BigInt(i)),
        { writable: true },
      );
    } catch (error) {
      if (!isXenFailure(error)) throw error;
      return undefined;
    }
    this.counters.maps += pages;
    const chunk: Chunk = { index, firstFrame, mapping, pins: 0 };
    // Trimmed once the request has pinned what it uses, so this chunk is not evicted at once.
    this.chunks.set(index, chunk);
    return chunk;
  }

  /** Evicts least recently used chunks that no request uses, down to the bound. */
  private trim(): void {
    if (this.chunks.size <= this.maxChunks) return;
    for (const chunk of this.chunks.values()) {
      if (this.chunks.size <= this.maxChunks) break;
      if (chunk.pins > 0) continue;
      this.chunks.delete(chunk.index);
      this.unmapMapping(chunk.mapping);
      this.counters.evictions++;
    }
  }

  /** Host pieces covering a range, pinned; `release` them with `unpin`. Throws the fault, holding nothing. */
  private pieces(address: bigint, span: FrameSpan): Piece[] {
    const out: Piece[] = [];
    if (span.pages === 0) return [{ bytes: EMPTY }];
    // Frames are below 2^52 (addresses below 2^64): exact as numbers.
    const chunkPages = this.chunkPages;
    let frame = Number(span.firstFrame);
    const endFrame = frame + span.pages;
    let skip = span.offset;
    let left = span.length;
    try {
      while (frame < endFrame) {
        const index = Math.floor(frame / chunkPages);
        const chunk = this.chunk(index);
        const runEnd = Math.min((index + 1) * chunkPages, endFrame);
        const runPages = runEnd - frame;
        const n = Math.min(runPages * PAGE_SIZE - skip, left);
        const chunkFirst = index * chunkPages;
        if (chunk && chunk.mapping.pages >= runEnd - chunkFirst) {
          chunk.pins++;
          const start = (frame - chunkFirst) * PAGE_SIZE + skip;
          out.push({ bytes: chunk.mapping.bytes.subarray(start, start + n), chunk });
        } else {
          this.counters.fallbacks++;
          const frames: bigint[] = [];
          for (let i = 0; i < runPages; i++) frames.push(BigInt(frame + i));
          const mapping = this.mapFrames(frames, true, address, span.length);
          this.exact.add(mapping);
          out.push({ bytes: mapping.bytes.subarray(skip, skip + n), mapping });
        }
        left -= n;
        skip = 0;
        frame = runEnd;
      }
    } catch (error) {
      this.unpin(out);
      throw error;
    }
    this.trim();
    return out;
  }

  private unpin(pieces: readonly Piece[]): void {
    for (const piece of pieces) {
      if (piece.chunk) piece.chunk.pins--;
      if (piece.mapping) {
        this.exact.delete(piece.mapping);
        this.unmapMapping(piece.mapping);
      }
    }
    this.trim();
  }

  check(address: bigint, length: number, _access: MemoryAccess): MemoryFaultCode | undefined {
    const span = this.validate(address, length);
    if (typeof span === 'string') return span;
    const faults = this.counters.faults;
    try {
      this.unpin(this.pieces(address, span));
      return undefined;
    } catch (error) {
      if (!GuestMemoryError.isInstance(error)) throw error;
      this.counters.faults = faults;
      return error.code;
    }
  }

  read(address: bigint, target: Uint8Array): void {
    const pieces = this.pieces(address, this.span(address, target.length));
    let done = 0;
    for (const piece of pieces) {
      target.set(piece.bytes, done);
      done += piece.bytes.length;
    }
    this.unpin(pieces);
    this.counters.copies++;
    this.counters.bytesRead += target.length;
  }

  write(address: bigint, source: Uint8Array): void {
    const pieces = this.pieces(address, this.span(address, source.length));
    let done = 0;
    for (const piece of pieces) {
      piece.bytes.set(source.subarray(done, done + piece.bytes.length));
      done += piece.bytes.length;
    }
    this.unpin(pieces);
    this.counters.copies++;
    this.counters.bytesWritten += source.length;
  }

  view(address: bigint, length: number, access: MemoryAccess): Uint8Array {
    const span = this.span(address, length);
    if (span.pages === 0) return new Uint8Array(0);
    // Exact and contiguous, whatever the chunk boundaries: rings live as long as the device.
    const frames = Array.from({ length: span.pages }, (_, i) => span.firstFrame + BigInt(i));
    const mapping = this.mapFrames(frames, access === 'write', address, length);
    this.views.add(mapping);
    return mapping.bytes.subarray(span.offset, span.offset + length);
  }

  map(ranges: readonly MemoryRange[]): MappedRanges {
    const spans: FrameSpan[] = [];
    let total = 0;
    for (const range of ranges) {
      const span = this.span(range.address, range.length);
      spans.push(span);
      total += span.pages;
    }
    if (total > this.maxRequestPages) {
      const first = ranges[0] as MemoryRange;
      this.fault('too-large', first.address, first.length);
    }
    const all: Piece[] = [];
    const segments: Uint8Array[][] = [];
    try {
      for (let i = 0; i < ranges.length; i++) {
        const pieces = this.pieces((ranges[i] as MemoryRange).address, spans[i] as FrameSpan);
        const views: Uint8Array[] = [];
        for (const piece of pieces) {
          all.push(piece);
          views.push(piece.bytes);
        }
        segments.push(views);
      }
    } catch (error) {
      this.unpin(all);
      throw error;
    }
    this.requests.add(all);
    return new ForeignRequest(this, ranges, segments, all);
  }

  /** Called once by a request's `release`. */
  closeRequest(
    pieces: Piece[],
    ranges: readonly MemoryRange[],
    written: readonly number[] | undefined,
  ): void {
    if (this.requests.delete(pieces)) this.unpin(pieces);
    countTransfer(this.counters, ranges, written);
  }

  fence(order: FenceOrder): void {
    fence(order);
  }

  unmapAll(): void {
    for (const mapping of this.views) this.unmapMapping(mapping);
    this.views.clear();
    for (const mapping of this.exact) this.unmapMapping(mapping);
    this.exact.clear();
    this.requests.clear();
    for (const chunk of this.chunks.values()) this.unmapMapping(chunk.mapping);
    this.chunks.clear();
  }

  /** Chunks in the cache, rings and per-request mappings. */
  liveMappings(): number {
    return this.chunks.size + this.views.size + this.exact.size;
  }

  /** Chunks currently cached. */
  cachedChunks(): number {
    return this.chunks.size;
  }
}

class ForeignRequest implements MappedRanges {
  private released = false;

  constructor(
    private readonly owner: ForeignMappingMemory,
    private readonly ranges: readonly MemoryRange[],
    readonly segments: readonly (readonly Uint8Array[])[],
    private readonly pieces: Piece[],
  ) {}

  release(written?: readonly number[]): void {
    if (this.released) return;
    this.released = true;
    this.owner.closeRequest(this.pieces, this.ranges, written);
  }
}

export function createForeignMappingMemory(options: ForeignMappingMemoryOptions): ForeignMappingMemory {
  return new ForeignMappingMemory(options);
}
