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

/**
 * One guest-physical region as a vhost-user frontend describes it (QEMU's
 * docs/interop/vhost-user.rst "Memory region description"), already mapped on the host by
 * whoever received its file descriptor: `bytes[0]` is guest address `guestAddress`.
 */
export interface MemoryRegion {
  /** Guest-physical address of the first byte. */
  readonly guestAddress: bigint;
  /** The frontend's own virtual address of the first byte: vring addresses arrive in this space. */
  readonly userAddress: bigint;
  /** The mapped bytes; `bytes.length` is the region size (empty for an on-demand region). */
  readonly bytes: Uint8Array;
  /**
   * A region that is not mapped on the host as a whole (a Xen grant region its frontend
   * flags as not mappable in advance, vhost-user.rst "Memory region description"): every
   * access inside `[guestAddress, guestAddress + size)` goes to `memory` at the same guest
   * address, which maps what each access needs and unmaps it after. `bytes` is then empty.
   */
  readonly onDemand?: { readonly size: number; readonly memory: GuestMemory };
  /** Undoes the host mapping once nothing uses the region any more. Called once. */
  unmap?(): void;
}

/** A region's size in bytes: its mapped bytes, or the size of an on-demand region. */
export function regionSize(region: MemoryRegion): number {
  return region.onDemand?.size ?? region.bytes.length;
}

/** Guest memory made of several mapped regions; regions come and go as the frontend says. */
export interface RegionsMemory extends GuestMemory {
  readonly kind: 'regions';
  /** The regions, sorted by guest address. */
  readonly regions: readonly MemoryRegion[];
  /**
   * Adds a region. Throws `RangeError` (and leaves the region to the caller) when it
   * overlaps a region in guest-physical or frontend-virtual space, or wraps past 2^64.
   */
  addRegion(region: MemoryRegion): void;
  /**
   * Removes the region that starts at `guestAddress` with `size` bytes and unmaps it (for an
   * on-demand region `size` may also be its `bytes.length`, 0, as callers that know only
   * `bytes` pass). Returns false when there is none, or when a live view or request mapping
   * still uses it (unmapping it then would pull memory from under the device).
   */
  removeRegion(guestAddress: bigint, size: number): boolean;
  /** Removes and unmaps every region; `unmapAll` first when mappings may still be live. */
  clear(): void;
  /**
   * Translates a frontend virtual address (vhost-user ring addresses) to a guest-physical
   * one. Returns undefined when `length` bytes from it are not inside one region. Mapped
   * regions are searched before on-demand ones (whose frontend addresses may overlap: Xen
   * frontends give 0 for every region they did not map themselves).
   */
  translateUserAddress(userAddress: bigint, length: number): bigint | undefined;
}

interface RegionState {
  readonly region: MemoryRegion;
  /** The memory an on-demand region's accesses go to; undefined for a mapped region. */
  readonly delegate: GuestMemory | undefined;
  readonly size: number;
  readonly start: bigint;
  /** `start` as a number: exact whenever an address at or after it is below 2^53. */
  readonly startNumber: number;
  readonly end: bigint;
  readonly userStart: bigint;
  readonly userEnd: bigint;
  /** Views and request mappings currently pointing into this region. */
  live: number;
}

/** Addresses up to here are exact as numbers. */
const MAX_EXACT_ADDRESS = BigInt(Number.MAX_SAFE_INTEGER);

class RegionsGuestMemory implements RegionsMemory {
  readonly kind = 'regions' as const;
  readonly counters: MemoryCounters = {
    maps: 0,
    unmaps: 0,
    copies: 0,
    bytesRead: 0,
    bytesWritten: 0,
    faults: 0,
  };
  private states: RegionState[] = [];
  /** Live views (for rings) by the region they point into, so `unmapAll` can release them. */
  private views = 0;
  /** Region references held by live request mappings (one per region each range crosses). */
  private requestMappings = 0;
  /** Bumped by `unmapAll`: requests mapped before it hold nothing any more. */
  private generation = 0;
  /** The region the last request hit: consecutive buffers mostly sit in the same one. */
  private last: RegionState | undefined;

  get regions(): readonly MemoryRegion[] {
    return this.states.map((state) => state.region);
  }

  addRegion(region: MemoryRegion): void {
    const delegate = region.onDemand?.memory;
    const sizeNumber = regionSize(region);
    if (!Number.isSafeInteger(sizeNumber) || sizeNumber < 0) {
      throw new RangeError(`region size ${sizeNumber} is not a byte count`);
    }
    if (delegate !== undefined && region.bytes.length !== 0) {
      throw new RangeError('an on-demand region has no mapped bytes');
    }
    const size = BigInt(sizeNumber);
    const start = region.guestAddress;
    const userStart = region.userAddress;
    if (size === 0n) throw new RangeError('a memory region must not be empty');
    if (start < 0n || start + size > 1n << 64n || userStart < 0n || userStart + size > 1n << 64n) {
      throw new RangeError(`region 0x${start.toString(16)}+0x${size.toString(16)} wraps past 2^64`);
    }
    const end = start + size;
    const userEnd = userStart + size;
    for (const other of this.states) {
      if (start < other.end && end > other.start) {
        throw new RangeError(
          `region 0x${start.toString(16)}+0x${size.toString(16)} overlaps guest region 0x${other.start.toString(16)}`,
        );
      }
      // Only mapped regions must not overlap in frontend space: an on-demand region's
      // frontend address is a name for ring translation, not memory this process reads.
      if (
        delegate === undefined &&
        other.delegate === undefined &&
        userStart < other.userEnd &&
        userEnd > other.userStart
      ) {
        throw new RangeError(
          `region at user address 0x${userStart.toString(16)} overlaps the one at 0x${other.userStart.toString(16)}`,
        );
      }
    }
    this.states.push({
      region,
      delegate,
      size: sizeNumber,
      start,
      startNumber: Number(start),
      end,
      userStart,
      userEnd,
      live: 0,
    });
    this.states.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  }

  removeRegion(guestAddress: bigint, size: number): boolean {
    const index = this.states.findIndex(
      (s) => s.start === guestAddress && (s.size === size || (s.delegate !== undefined && size === 0)),
    );
    if (index < 0) return false;
    const state = this.states[index]!;
    if (state.live > 0) return false;
    this.states.splice(index, 1);
    if (this.last === state) this.last = undefined;
    state.region.unmap?.();
    return true;
  }

  clear(): void {
    const states = this.states;
    this.states = [];
    this.last = undefined;
    for (const state of states) state.region.unmap?.();
  }

  translateUserAddress(userAddress: bigint, length: number): bigint | undefined {
    const want = BigInt(length);
    let onDemand: bigint | undefined;
    for (const state of this.states) {
      if (userAddress >= state.userStart && userAddress + want <= state.userEnd) {
        const guest = state.start + (userAddress - state.userStart);
        if (state.delegate === undefined) return guest;
        onDemand ??= guest;
      }
    }
    return onDemand;
  }

  /** The region holding `address`, or undefined. */
  private find(address: bigint): RegionState | undefined {
    for (const state of this.states) if (address >= state.start && address < state.end) return state;
    return undefined;
  }

  /**
   * The regions covering `[address, address + length)` in order, or the fault. Adjacent
   * regions are separate host mappings, so a range across them comes back in pieces.
   */
  private cover(address: bigint, length: number): RegionState[] | MemoryFaultCode {
    if (!Number.isInteger(length) || length < 0 || length > MAX_RANGE_LENGTH) return 'invalid-range';
    if (address < 0n || address + BigInt(length) > 1n << 64n) return 'invalid-range';
    const end = address + BigInt(length);
    const out: RegionState[] = [];
    let at = address;
    do {
      const state = this.find(at);
      if (state === undefined) return 'unmapped';
      out.push(state);
      at = state.end;
    } while (at < end);
    return out;
  }

  check(address: bigint, length: number, access: MemoryAccess): MemoryFaultCode | undefined {
    const cover = this.cover(address, length);
    if (typeof cover === 'string') return cover;
    for (const piece of pieces(cover, address, length)) {
      const fault = piece.state.delegate?.check(piece.address, piece.length, access);
      if (fault !== undefined) return fault;
    }
    return undefined;
  }

  private coverOrThrow(address: bigint, length: number): RegionState[] {
    const cover = this.cover(address, length);
    if (typeof cover === 'string') {
      this.counters.faults++;
      throw new GuestMemoryError(cover, address, length);
    }
    return cover;
  }

  read(address: bigint, target: Uint8Array): void {
    const states = this.coverOrThrow(address, target.length);
    let done = 0;
    for (const piece of pieces(states, address, target.length)) {
      const part = target.subarray(done, done + piece.length);
      if (piece.state.delegate) piece.state.delegate.read(piece.address, part);
      else part.set(piece.state.region.bytes.subarray(piece.offset, piece.offset + piece.length));
      done += piece.length;
    }
    this.counters.copies++;
    this.counters.bytesRead += target.length;
  }

  write(address: bigint, source: Uint8Array): void {
    const states = this.coverOrThrow(address, source.length);
    let done = 0;
    for (const piece of pieces(states, address, source.length)) {
      const part = source.subarray(done, done + piece.length);
      if (piece.state.delegate) piece.state.delegate.write(piece.address, part);
      else piece.state.region.bytes.set(part, piece.offset);
      done += piece.length;
    }
    this.counters.copies++;
    this.counters.bytesWritten += source.length;
  }

  view(address: bigint, length: number, access: MemoryAccess): Uint8Array {
    const states = this.coverOrThrow(address, length);
    if (states.length !== 1) {
      this.counters.faults++;
      throw new GuestMemoryError('not-contiguous', address, length);
    }
    const state = states[0]!;
    const offset = Number(address - state.start);
    const bytes = state.delegate
      ? state.delegate.view(address, length, access)
      : state.region.bytes.subarray(offset, offset + length);
    state.live++;
    this.views++;
    this.counters.maps++;
    return bytes;
  }

  /**
   * The offset of `[address, address + length)` in the one mapped region holding all of it
   * (left in `last`), or -1 (a fault, an on-demand region, or a range across regions: `cover`
   * sorts those out). Checks the last region hit first, and computes in plain numbers below
   * 2^53 (every guest's RAM).
   */
  private within(address: bigint, length: number): number {
    if (!Number.isInteger(length) || length < 0 || length > MAX_RANGE_LENGTH) return -1;
    let state = this.last;
    if (state === undefined || address < state.start || address >= state.end) {
      state = this.find(address);
      if (state === undefined) return -1;
      this.last = state;
    }
    if (state.delegate !== undefined) return -1;
    const offset =
      address <= MAX_EXACT_ADDRESS ? Number(address) - state.startNumber : Number(address - state.start);
    return offset + length <= state.region.bytes.length ? offset : -1;
  }

  map(ranges: readonly MemoryRange[]): MappedRanges {
    // Fast path: one buffer inside one region (the usual chain of a network or block
    // request), with no intermediate arrays.
    if (ranges.length === 1) {
      const range = ranges[0]!;
      const offset = this.within(range.address, range.length);
      if (offset >= 0) {
        const state = this.last!;
        state.live++;
        this.requestMappings++;
        this.counters.maps++;
        const segments = [[state.region.bytes.subarray(offset, offset + range.length)]];
        return new RegionsRequest(this, this.generation, ranges, segments, state, undefined, undefined);
      }
    }
    // Every range is checked before anything is held: a fault maps nothing.
    const covers = ranges.map((range) => this.coverOrThrow(range.address, range.length));
    // Segments per range, per piece; pieces in on-demand regions are filled in when their
    // memory has mapped them (one batch per memory, so it can batch its own work).
    const pieceSegments: (readonly Uint8Array[])[][] = [];
    let batches: Map<GuestMemory, DelegatedBatch> | undefined;
    ranges.forEach((range, i) => {
      const out: (readonly Uint8Array[])[] = [];
      let before = 0;
      for (const piece of pieces(covers[i]!, range.address, range.length)) {
        const delegate = piece.state.delegate;
        if (delegate) {
          batches ??= new Map();
          let batch = batches.get(delegate);
          if (!batch) {
            batch = { memory: delegate, ranges: [], slots: [], mapped: undefined };
            batches.set(delegate, batch);
          }
          batch.ranges.push({ address: piece.address, length: piece.length, access: range.access });
          batch.slots.push({ range: i, piece: out.length, before });
          out.push(NO_SEGMENTS);
        } else {
          out.push([piece.state.region.bytes.subarray(piece.offset, piece.offset + piece.length)]);
        }
        before += piece.length;
      }
      pieceSegments.push(out);
    });
    let delegated: DelegatedBatch[] | undefined;
    if (batches) {
      delegated = [...batches.values()];
      try {
        for (const batch of delegated) {
          const mapped = batch.memory.map(batch.ranges);
          batch.mapped = mapped;
          batch.slots.forEach((slot, k) => {
            pieceSegments[slot.range]![slot.piece] = mapped.segments[k] ?? NO_SEGMENTS;
          });
        }
      } catch (error) {
        for (const batch of delegated) batch.mapped?.release(batch.ranges.map(() => 0));
        throw error;
      }
    }
    const segments = pieceSegments.map((parts) => (parts.length === 1 ? parts[0]! : parts.flat()));
    const touched = covers.flat();
    for (const state of touched) state.live++;
    this.requestMappings += touched.length;
    this.counters.maps += ranges.length;
    return new RegionsRequest(this, this.generation, ranges, segments, undefined, touched, delegated);
  }

  /** Called once by a request's `release`: drops its region references unless `unmapAll` did already. */
  closeRequest(request: RegionsRequest, generation: number, written: readonly number[] | undefined): void {
    if (generation === this.generation) {
      if (request.state !== undefined) {
        request.state.live--;
        this.requestMappings--;
      }
      if (request.states !== undefined) {
        for (const state of request.states) state.live--;
        this.requestMappings -= request.states.length;
      }
    }
    const ranges = request.ranges;
    const counters = this.counters;
    counters.unmaps += ranges.length;
    for (let i = 0; i < ranges.length; i++) {
      const range = ranges[i]!;
      if (range.access === 'read') counters.bytesRead += range.length;
      else counters.bytesWritten += written?.[i] ?? range.length;
    }
    if (request.delegated) releaseDelegated(request.delegated, ranges, written);
  }

  fence(order: FenceOrder): void {
    fence(order);
  }

  unmapAll(): void {
    this.counters.unmaps += this.views + this.requestMappings;
    this.views = 0;
    this.requestMappings = 0;
    this.generation++;
    for (const state of this.states) {
      state.live = 0;
      state.delegate?.unmapAll();
    }
  }

  liveMappings(): number {
    return this.views + this.requestMappings;
  }
}

const NO_SEGMENTS: readonly Uint8Array[] = [];

/** The part of a range inside one region. */
interface Piece {
  readonly state: RegionState;
  readonly address: bigint;
  /** Offset in the region. */
  readonly offset: number;
  readonly length: number;
}

/** The pieces of `[address, address + length)` over the regions `cover` found for it, in order. */
function pieces(states: readonly RegionState[], address: bigint, length: number): Piece[] {
  const out: Piece[] = [];
  let at = address;
  let left = length;
  for (const state of states) {
    const offset = Number(at - state.start);
    const n = Math.min(left, state.size - offset);
    out.push({ state, address: at, offset, length: n });
    at += BigInt(n);
    left -= n;
  }
  return out;
}

/** The pieces of a request one on-demand region's memory mapped, and where they go. */
interface DelegatedBatch {
  readonly memory: GuestMemory;
  readonly ranges: MemoryRange[];
  /** Per range of the batch: the request's range, the piece index in it, and the bytes before it. */
  readonly slots: { range: number; piece: number; before: number }[];
  mapped: MappedRanges | undefined;
}

/**
 * Releases the on-demand parts of a request, handing each the bytes written into it (the
 * range's count, spread over its pieces in order). Every part is released; the first
 * failure (a copy-back the guest refused) is rethrown afterwards.
 */
function releaseDelegated(
  batches: readonly DelegatedBatch[],
  ranges: readonly MemoryRange[],
  written: readonly number[] | undefined,
): void {
  let failure: unknown;
  for (const batch of batches) {
    const counts = batch.slots.map((slot, k) => {
      const length = batch.ranges[k]!.length;
      const total = written === undefined ? ranges[slot.range]!.length : (written[slot.range] ?? 0);
      return Math.max(0, Math.min(length, total - slot.before));
    });
    try {
      batch.mapped?.release(counts);
    } catch (error) {
      failure ??= error;
    }
  }
  if (failure !== undefined) throw failure;
}

/** One request's views and the regions they hold until `release`. */
class RegionsRequest implements MappedRanges {
  private released = false;

  constructor(
    private readonly owner: RegionsGuestMemory,
    private readonly generation: number,
    readonly ranges: readonly MemoryRange[],
    readonly segments: readonly (readonly Uint8Array[])[],
    /** The one region a single-buffer request holds, or undefined. */
    readonly state: RegionState | undefined,
    /** The regions a request holds otherwise (one entry per region each range crosses). */
    readonly states: readonly RegionState[] | undefined,
    /** What on-demand regions mapped for it, released with it. */
    readonly delegated: readonly DelegatedBatch[] | undefined,
  ) {}

  release(written?: readonly number[]): void {
    if (this.released) return;
    this.released = true;
    this.owner.closeRequest(this, this.generation, written);
  }
}

/**
 * The `regions` strategy: guest memory a vhost-user frontend shares as file descriptors,
 * one host mapping per region. Buffers are reached in place (zero copy); a buffer that
 * crosses two regions comes back as two segments.
 */
export function createRegionsMemory(regions: readonly MemoryRegion[] = []): RegionsMemory {
  const memory = new RegionsGuestMemory();
  for (const region of regions) memory.addRegion(region);
  return memory;
}
