import type {
  FenceOrder,
  GuestMemory,
  MappedRanges,
  MemoryAccess,
  MemoryCounters,
  MemoryRange,
} from './guest-memory.js';
import { MAX_RANGE_LENGTH } from './guest-memory.js';
import { GuestMemoryError, type MemoryFaultCode } from './memory-errors.js';
import { fence } from './memory-fence.js';

export interface TestMemoryOptions {
  /** Guest-physical address of the first byte. Default 0. */
  base?: bigint;
  /** Ranges (relative to `base`) that are not guest memory: any access touching them faults `unmapped`. */
  holes?: readonly { offset: number; length: number }[];
  /** Ranges (relative to `base`) the device may read but not write: writes fault `read-only`. */
  readOnly?: readonly { offset: number; length: number }[];
}

/** Guest memory for tests, backed by a SharedArrayBuffer; `bytes` is the driver's side of it. */
export interface TestMemory extends GuestMemory {
  readonly base: bigint;
  readonly size: number;
  /** The whole memory as the guest driver sees it. */
  readonly bytes: Uint8Array;
  /** Little-endian accessor over the whole memory, offsets relative to `base`. */
  readonly dataView: DataView;
  /** Guest address of a byte offset into `bytes`. */
  address(offset: number): bigint;
}

interface Span {
  start: number;
  end: number;
}

class TestGuestMemory implements TestMemory {
  readonly kind = 'test';
  readonly counters: MemoryCounters = {
    maps: 0,
    unmaps: 0,
    copies: 0,
    bytesRead: 0,
    bytesWritten: 0,
    faults: 0,
  };
  readonly bytes: Uint8Array;
  readonly dataView: DataView;
  private readonly holes: Span[];
  private readonly readOnly: Span[];
  private readonly end: bigint;
  private live = 0;

  constructor(
    readonly size: number,
    readonly base: bigint,
    options: TestMemoryOptions,
  ) {
    const buffer = new SharedArrayBuffer(size);
    this.bytes = new Uint8Array(buffer);
    this.dataView = new DataView(buffer);
    this.end = base + BigInt(size);
    this.holes = (options.holes ?? []).map((h) => ({ start: h.offset, end: h.offset + h.length }));
    this.readOnly = (options.readOnly ?? []).map((h) => ({ start: h.offset, end: h.offset + h.length }));
  }

  address(offset: number): bigint {
    return this.base + BigInt(offset);
  }

  check(address: bigint, length: number, access: MemoryAccess): MemoryFaultCode | undefined {
    if (!Number.isInteger(length) || length < 0 || length > MAX_RANGE_LENGTH) return 'invalid-range';
    if (address < this.base || address + BigInt(length) > this.end) return 'unmapped';
    const start = Number(address - this.base);
    const end = start + length;
    for (const hole of this.holes) if (start < hole.end && end > hole.start) return 'unmapped';
    if (access === 'write') {
      for (const span of this.readOnly) if (start < span.end && end > span.start) return 'read-only';
    }
    return undefined;
  }

  private offsetOf(address: bigint, length: number, access: MemoryAccess): number {
    const fault = this.check(address, length, access);
    if (fault !== undefined) {
      this.counters.faults++;
      throw new GuestMemoryError(fault, address, length);
    }
    return Number(address - this.base);
  }

  read(address: bigint, target: Uint8Array): void {
    const offset = this.offsetOf(address, target.length, 'read');
    target.set(this.bytes.subarray(offset, offset + target.length));
    this.counters.copies++;
    this.counters.bytesRead += target.length;
  }

  write(address: bigint, source: Uint8Array): void {
    const offset = this.offsetOf(address, source.length, 'write');
    this.bytes.set(source, offset);
    this.counters.copies++;
    this.counters.bytesWritten += source.length;
  }

  view(address: bigint, length: number, access: MemoryAccess): Uint8Array {
    const offset = this.offsetOf(address, length, access);
    this.live++;
    this.counters.maps++;
    return this.bytes.subarray(offset, offset + length);
  }

  map(ranges: readonly MemoryRange[]): MappedRanges {
    const segments: Uint8Array[][] = [];
    for (const range of ranges) {
      const offset = this.offsetOf(range.address, range.length, range.access);
      segments.push([this.bytes.subarray(offset, offset + range.length)]);
    }
    this.counters.maps += ranges.length;
    this.live += ranges.length;
    let released = false;
    return {
      segments,
      release: (written) => {
        if (released) return;
        released = true;
        this.live -= ranges.length;
        this.counters.unmaps += ranges.length;
        ranges.forEach((range, i) => {
          if (range.access === 'read') this.counters.bytesRead += range.length;
          else this.counters.bytesWritten += written?.[i] ?? range.length;
        });
      },
    };
  }

  fence(order: FenceOrder): void {
    fence(order);
  }

  unmapAll(): void {
    this.counters.unmaps += this.live;
    this.live = 0;
  }

  liveMappings(): number {
    return this.live;
  }
}

/** Guest memory of `size` bytes for tests, optionally with holes and read-only spans. */
export function createTestMemory(size: number, options: TestMemoryOptions = {}): TestMemory {
  if (!Number.isInteger(size) || size <= 0)
    throw new RangeError(`size must be a positive integer, got ${size}`);
  return new TestGuestMemory(size, options.base ?? 0n, options);
}
