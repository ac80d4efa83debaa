import type { GrantCopySegment, GrantTables } from '@xvio/xen';
import { GNTST_general_error, GNTST_okay, GNTST_permission_denied } from '@xvio/xen';
import { PAGE_SIZE } from './grant-address.js';
import {
  clampWritten,
  countTransfer,
  DEFAULT_MAX_REQUEST_PAGES,
  GrantMapMemory,
  type XenGuestMemory,
} from './grant-map-memory.js';
import { type GrantSpan, grantSpan, grantStatusFault, isXenFailure } from './grant-span.js';
import type { FenceOrder, MappedRanges, MemoryAccess, MemoryRange } from './guest-memory.js';
import { newStrategyCounters, type StrategyCounters } from './memory-counters.js';
import { GuestMemoryError, type MemoryFaultCode } from './memory-errors.js';
import { fence } from './memory-fence.js';

/** netback copies at most 64 segments per GNTTABOP_copy (xen-netback's COPY_BATCH_SIZE). */
export const MAX_COPY_BATCH = 64;
/** Bounce buffers kept for reuse, in bytes, by default. */
export const DEFAULT_BOUNCE_CACHE_BYTES = 8 * 1024 * 1024;

export interface GrantCopyMemoryOptions {
  readonly grants: GrantTables;
  readonly domid: number;
  readonly maxRequestPages?: number;
  /** Segments per copy call, 1..64 (default 64). */
  readonly batchSegments?: number;
  /** Bytes of bounce buffers kept between requests (default 8 MiB). */
  readonly bounceCacheBytes?: number;
}

interface Transfer {
  readonly span: GrantSpan;
  readonly local: Uint8Array;
  /** Guest range, for faults. */
  readonly address: bigint;
}

/**
 * The `grant-copy` strategy: buffers are never mapped. `map` copies readable ranges into
 * host bounce buffers with GNTTABOP_copy in batches of at most 64 segments (as netback
 * does) and checks the writable ranges with zero-length copies; `release(written)` copies
 * back only the bytes the device wrote. Rings are still mapped (`view`), as netback maps
 * its rings. A copy-back that fails because the guest revoked a grant mid-request throws
 * `grant-not-permitted` from `release`, so the chain completes with length 0.
 */
export class GrantCopyMemory implements XenGuestMemory {
  readonly kind = 'grant-copy';
  readonly counters: StrategyCounters;
  private readonly grants: GrantTables;
  private readonly domid: number;
  private readonly maxRequestPages: number;
  private readonly batchSegments: number;
  private readonly bounceCacheBytes: number;
  /** Rings: mapped like the grant-map strategy does, sharing the counters. */
  private readonly rings: GrantMapMemory;
  private readonly bounce = new Map<number, Uint8Array[]>();
  private bounceBytes = 0;
  /** Local side of zero-length probes. */
  private readonly scratch = new Uint8Array(PAGE_SIZE);
  private readonly pending = new Set<object>();

  constructor(options: GrantCopyMemoryOptions) {
    this.grants = options.grants;
    this.domid = options.domid;
    this.maxRequestPages = options.maxRequestPages ?? DEFAULT_MAX_REQUEST_PAGES;
    const batch = options.batchSegments ?? MAX_COPY_BATCH;
    if (!Number.isInteger(batch) || batch < 1 || batch > MAX_COPY_BATCH) {
      throw new RangeError(`batchSegments must be 1..${MAX_COPY_BATCH}, got ${batch}`);
    }
    this.batchSegments = batch;
    this.bounceCacheBytes = options.bounceCacheBytes ?? DEFAULT_BOUNCE_CACHE_BYTES;
    this.counters = newStrategyCounters();
    this.rings = new GrantMapMemory({
      grants: this.grants,
      domid: this.domid,
      maxRequestPages: this.maxRequestPages,
      counters: this.counters,
    });
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

  private span(address: bigint, length: number): GrantSpan {
    const span = grantSpan(address, length);
    if (typeof span === 'string') this.fault(span, address, length);
    if (span.pages > this.maxRequestPages) this.fault('too-large', address, length);
    return span;
  }

  /** Copy segments for a transfer, one per page, never crossing a page (GNTST_bad_copy_arg otherwise). */
  private segments(transfer: Transfer, toGuest: boolean, length: number): GrantCopySegment[] {
    const out: GrantCopySegment[] = [];
    const { span, local } = transfer;
    let done = 0;
    for (let page = 0; done < length; page++) {
      const offset = page === 0 ? span.offset : 0;
      const n = Math.min(PAGE_SIZE - offset, length - done);
      const grant = { kind: 'grant' as const, domid: this.domid, ref: span.firstRef + page, offset };
      const host = { kind: 'local' as const, bytes: local.subarray(done, done + n) };
      out.push(toGuest ? { source: host, dest: grant, length: n } : { source: grant, dest: host, length: n });
      done += n;
    }
    return out;
  }

  /** Zero-length copies that make Xen check each page's grant without moving a byte. */
  private probes(span: GrantSpan, toGuest: boolean): GrantCopySegment[] {
    // A real local buffer even for zero bytes: the native call passes its address down.
    const empty = { kind: 'local' as const, bytes: this.scratch };
    return Array.from({ length: span.pages }, (_, page) => {
      const grant = { kind: 'grant' as const, domid: this.domid, ref: span.firstRef + page, offset: 0 };
      return toGuest ? { source: empty, dest: grant, length: 0 } : { source: grant, dest: empty, length: 0 };
    });
  }

  /** Runs segments in batches; returns the first failing segment's index and status. */
  private copy(segments: readonly GrantCopySegment[]): { index: number; status: number } | undefined {
    let failed: { index: number; status: number } | undefined;
    for (let start = 0; start < segments.length; start += this.batchSegments) {
      const batch = segments.slice(start, start + this.batchSegments);
      this.counters.calls++;
      const status = this.grants.copy(batch);
      this.counters.copies += batch.length;
      if (failed === undefined) {
        const index = status.findIndex((s) => s !== GNTST_okay);
        if (index >= 0) failed = { index: start + index, status: status[index] as number };
      }
    }
    return failed;
  }

  /** Runs segments and turns a failure into the typed fault of the range it belongs to. */
  private copyOrFault(
    segments: readonly GrantCopySegment[],
    owners: readonly { address: bigint; length: number }[],
  ): void {
    let failed: { index: number; status: number } | undefined;
    try {
      failed = this.copy(segments);
    } catch (error) {
      if (!isXenFailure(error)) throw error;
      const owner = owners[0] ?? { address: 0n, length: 0 };
      this.fault('host-failure', owner.address, owner.length, undefined, error);
    }
    if (failed === undefined) return;
    const owner = owners[failed.index] as { address: bigint; length: number };
    const segment = segments[failed.index] as GrantCopySegment;
    let code = grantStatusFault(failed.status);
    // Real Xen refuses to write-pin a read-only grant with general_error (as it refuses a
    // revoked one); the simulator says permission_denied. Probe on both.
    if (
      (failed.status === GNTST_permission_denied || failed.status === GNTST_general_error) &&
      segment.dest.kind === 'grant'
    ) {
      const { ref, offset } = segment.dest;
      // Refused as a destination: readable, so granted read-only? One byte is read: Linux's
      // gntdev answers a zero-length segment GNTST_okay without asking Xen.
      const probe = this.copy([
        {
          source: { kind: 'grant', domid: this.domid, ref, offset },
          dest: { kind: 'local', bytes: this.scratch },
          length: 1,
        },
      ]);
      if (probe === undefined) code = 'read-only';
    }
    this.fault(code, owner.address, owner.length);
  }

  private takeBounce(length: number): Uint8Array {
    const size = Math.max(PAGE_SIZE, 2 ** Math.ceil(Math.log2(Math.max(length, 1))));
    const free = this.bounce.get(size)?.pop();
    if (free) {
      this.bounceBytes -= size;
      return free.subarray(0, length);
    }
    return new Uint8Array(size).subarray(0, length);
  }

  private giveBounce(bytes: Uint8Array): void {
    const size = bytes.buffer.byteLength;
    if (this.bounceBytes + size > this.bounceCacheBytes) return;
    const list = this.bounce.get(size) ?? [];
    list.push(new Uint8Array(bytes.buffer));
    this.bounce.set(size, list);
    this.bounceBytes += size;
  }

  check(address: bigint, length: number, access: MemoryAccess): MemoryFaultCode | undefined {
    const span = grantSpan(address, length);
    if (typeof span === 'string') return span;
    if (span.pages > this.maxRequestPages) return 'too-large';
    const faults = this.counters.faults;
    try {
      const probes = this.probes(span, access === 'write');
      this.copyOrFault(
        probes,
        probes.map(() => ({ address, length })),
      );
      return undefined;
    } catch (error) {
      if (!GuestMemoryError.isInstance(error)) throw error;
      this.counters.faults = faults;
      return error.code;
    }
  }

  read(address: bigint, target: Uint8Array): void {
    const span = this.span(address, target.length);
    const segments = this.segments({ span, local: target, address }, false, target.length);
    this.copyOrFault(
      segments,
      segments.map(() => ({ address, length: target.length })),
    );
    this.counters.bytesRead += target.length;
  }

  write(address: bigint, source: Uint8Array): void {
    const span = this.span(address, source.length);
    const segments = this.segments({ span, local: source, address }, true, source.length);
    this.copyOrFault(
      segments,
      segments.map(() => ({ address, length: source.length })),
    );
    this.counters.bytesWritten += source.length;
  }

  view(address: bigint, length: number, access: MemoryAccess): Uint8Array {
    return this.rings.view(address, length, access);
  }

  map(ranges: readonly MemoryRange[]): MappedRanges {
    const spans = ranges.map((range) => this.span(range.address, range.length));
    const total = spans.reduce((sum, span) => sum + span.pages, 0);
    if (total > this.maxRequestPages) {
      const first = ranges[0] as MemoryRange;
      this.fault('too-large', first.address, first.length);
    }
    const transfers: Transfer[] = ranges.map((range, i) => ({
      span: spans[i] as GrantSpan,
      local: this.takeBounce(range.length),
      address: range.address,
    }));
    // Readable ranges are copied in; writable ones only checked (their old contents are
    // of no use to the device, and only what it writes goes back).
    const segments: GrantCopySegment[] = [];
    const owners: { address: bigint; length: number }[] = [];
    ranges.forEach((range, i) => {
      const transfer = transfers[i] as Transfer;
      const part =
        range.access === 'read'
          ? this.segments(transfer, false, range.length)
          : this.probes(transfer.span, true);
      for (const segment of part) {
        segments.push(segment);
        owners.push(range);
      }
    });
    try {
      this.copyOrFault(segments, owners);
    } catch (error) {
      for (const transfer of transfers) this.giveBounce(transfer.local);
      throw error;
    }
    const token = {};
    this.pending.add(token);
    let released = false;
    return {
      segments: transfers.map((transfer) => [transfer.local]),
      release: (written) => {
        if (released) return;
        released = true;
        // After a reset (`unmapAll`) the buffers are the driver's again: copy nothing back.
        const open = this.pending.delete(token);
        const back: GrantCopySegment[] = [];
        const backOwners: { address: bigint; length: number }[] = [];
        ranges.forEach((range, i) => {
          if (range.access !== 'write' || !open) return;
          const count = clampWritten(written?.[i], range.length);
          for (const segment of this.segments(transfers[i] as Transfer, true, count)) {
            back.push(segment);
            backOwners.push(range);
          }
        });
        try {
          if (back.length > 0) this.copyOrFault(back, backOwners);
          countTransfer(this.counters, ranges, written);
        } finally {
          for (const transfer of transfers) this.giveBounce(transfer.local);
        }
      },
    };
  }

  fence(order: FenceOrder): void {
    fence(order);
  }

  unmapAll(): void {
    this.rings.unmapAll();
    // Requests still open keep their bounce buffers until released; nothing of theirs is
    // mapped, and their release copies nothing back.
    this.pending.clear();
  }

  liveMappings(): number {
    return this.rings.liveMappings() + this.pending.size;
  }
}

export function createGrantCopyMemory(options: GrantCopyMemoryOptions): GrantCopyMemory {
  return new GrantCopyMemory(options);
}
