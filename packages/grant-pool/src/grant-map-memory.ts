import type { GrantMapping, GrantTables } from '@xvio/xen';
import { GNTST_general_error, GNTST_permission_denied } from '@xvio/xen';
import { PAGE_SIZE } from './grant-address.js';
import { firstFailedOp, type GrantSpan, grantSpan, grantStatusFault, isXenFailure } from './grant-span.js';
import type { FenceOrder, GuestMemory, MappedRanges, MemoryAccess, MemoryRange } from './guest-memory.js';
import { newStrategyCounters, type StrategyCounters } from './memory-counters.js';
import { GuestMemoryError, type MemoryFaultCode } from './memory-errors.js';
import { fence } from './memory-fence.js';

/** Default bound on the pages one request may map: 16 MiB, gntdev's usual per-handle scale. */
export const DEFAULT_MAX_REQUEST_PAGES = 4096;

export interface GrantMapMemoryOptions {
  /** The backend's grant-table handle. */
  readonly grants: GrantTables;
  /** The frontend domain whose grants the addresses name. */
  readonly domid: number;
  /** Most pages one request (or one read/write/view) may map; beyond is a `too-large` fault. */
  readonly maxRequestPages?: number;
  /** Counters to add to (a strategy built on this one shares its counters). */
  readonly counters?: StrategyCounters;
}

/** Which guest range a page of a batch belongs to, so a failed op names the guest's range. */
interface PageOwner {
  readonly address: bigint;
  readonly length: number;
}

/** Guest memory reached by mapping grants; `kind` tells the strategy. */
export interface XenGuestMemory extends GuestMemory {
  readonly counters: StrategyCounters;
}

/**
 * The `grant-map` strategy, what stock Linux guests with xen-grant-dma need: every page a
 * chain touches is mapped in one batch per direction (libxengnttab maps a batch with one
 * protection) and unmapped in `release`, so the frontend can end access as soon as it sees
 * the used element (Linux marks the device broken for good when a revocation finds the
 * grant still in use). Readable ranges are mapped read-only: a read-only grant is never
 * written, and a writable range on one is a `read-only` fault. Ring views are mapped once
 * and kept until `unmapAll`.
 */
export class GrantMapMemory implements XenGuestMemory {
  readonly kind: string = 'grant-map';
  readonly counters: StrategyCounters;
  protected readonly grants: GrantTables;
  protected readonly domid: number;
  protected readonly maxRequestPages: number;
  private readonly views = new Set<GrantMapping>();
  private readonly requests = new Set<GrantMapping[]>();

  constructor(options: GrantMapMemoryOptions) {
    this.grants = options.grants;
    this.domid = options.domid;
    this.maxRequestPages = options.maxRequestPages ?? DEFAULT_MAX_REQUEST_PAGES;
    this.counters = options.counters ?? newStrategyCounters();
  }

  protected fault(
    code: MemoryFaultCode,
    address: bigint,
    length: number,
    message?: string,
    cause?: unknown,
  ): never {
    this.counters.faults++;
    throw new GuestMemoryError(code, address, length, message, cause === undefined ? undefined : { cause });
  }

  /** Decodes and bounds a range; throws the fault. */
  protected span(address: bigint, length: number): GrantSpan {
    const span = grantSpan(address, length);
    if (typeof span === 'string') this.fault(span, address, length);
    if (span.pages > this.maxRequestPages) {
      this.fault(
        'too-large',
        address,
        length,
        `too-large: ${span.pages} pages exceed the bound of ${this.maxRequestPages}`,
      );
    }
    return span;
  }

  /**
   * Maps `refs` in one call. A failed op becomes the typed fault of the range it belongs to;
   * a writable op refused with permission_denied is probed read-only once, to tell a
   * read-only grant (`read-only`) from one never granted or revoked.
   */
  protected mapRefs(refs: readonly number[], writable: boolean, owners: readonly PageOwner[]): GrantMapping {
    this.counters.calls++;
    try {
      const mapping = this.grants.map({ domid: this.domid, refs, writable });
      this.counters.maps += refs.length;
      return mapping;
    } catch (error) {
      if (!isXenFailure(error)) throw error;
      const failed = firstFailedOp(error);
      const owner = owners[failed?.index ?? 0] ?? { address: 0n, length: 0 };
      if (failed === undefined) this.fault('host-failure', owner.address, owner.length, undefined, error);
      let code = grantStatusFault(failed.status);
      // Real Xen refuses to write-pin a read-only grant with general_error, as it refuses a
      // revoked one (and through gntdev, one errno per batch, every failed op reads
      // general_error anyway); the simulator says permission_denied. Probe on both, or a
      // read-only grant on real Xen is reported as not permitted.
      if (
        writable &&
        (failed.status === GNTST_permission_denied || failed.status === GNTST_general_error) &&
        this.grantedReadOnly(refs[failed.index] as number)
      ) {
        code = 'read-only';
      }
      return this.fault(code, owner.address, owner.length, undefined, error);
    }
  }

  /** Whether `ref` maps read-only (the fault path only). */
  protected grantedReadOnly(ref: number): boolean {
    try {
      this.counters.calls += 2;
      this.grants.map({ domid: this.domid, refs: [ref], writable: false }).unmap();
      return true;
    } catch {
      return false;
    }
  }

  protected unmapMapping(mapping: GrantMapping): void {
    if (!mapping.mapped) return;
    this.counters.calls++;
    this.counters.unmaps += mapping.refs.length;
    mapping.unmap();
  }

  /** Maps the pages of one range on its own (read, write, view, check). */
  protected mapSpan(address: bigint, span: GrantSpan, writable: boolean): GrantMapping {
    const refs = Array.from({ length: span.pages }, (_, i) => span.firstRef + i);
    const owner = { address, length: span.length };
    return this.mapRefs(
      refs,
      writable,
      refs.map(() => owner),
    );
  }

  check(address: bigint, length: number, access: MemoryAccess): MemoryFaultCode | undefined {
    const span = grantSpan(address, length);
    if (typeof span === 'string') return span;
    if (span.pages > this.maxRequestPages) return 'too-large';
    if (span.pages === 0) return undefined;
    // Only the hypervisor knows what is granted: try it.
    const faults = this.counters.faults;
    try {
      this.unmapMapping(this.mapSpan(address, span, access === 'write'));
      return undefined;
    } catch (error) {
      if (!GuestMemoryError.isInstance(error)) throw error;
      this.counters.faults = faults;
      return error.code;
    }
  }

  read(address: bigint, target: Uint8Array): void {
    const span = this.span(address, target.length);
    if (span.pages > 0) {
      const mapping = this.mapSpan(address, span, false);
      target.set(mapping.bytes.subarray(span.offset, span.offset + span.length));
      this.unmapMapping(mapping);
    }
    this.counters.copies++;
    this.counters.bytesRead += target.length;
  }

  write(address: bigint, source: Uint8Array): void {
    const span = this.span(address, source.length);
    if (span.pages > 0) {
      const mapping = this.mapSpan(address, span, true);
      mapping.bytes.set(source, span.offset);
      this.unmapMapping(mapping);
    }
    this.counters.copies++;
    this.counters.bytesWritten += source.length;
  }

  view(address: bigint, length: number, access: MemoryAccess): Uint8Array {
    const span = this.span(address, length);
    if (span.pages === 0) return new Uint8Array(0);
    const mapping = this.mapSpan(address, span, access === 'write');
    this.views.add(mapping);
    return mapping.bytes.subarray(span.offset, span.offset + span.length);
  }

  map(ranges: readonly MemoryRange[]): MappedRanges {
    const spans: GrantSpan[] = [];
    let total = 0;
    for (const range of ranges) {
      const span = this.span(range.address, range.length);
      spans.push(span);
      total += span.pages;
    }
    if (total > this.maxRequestPages) {
      const first = ranges[0] as MemoryRange;
      this.fault(
        'too-large',
        first.address,
        first.length,
        `too-large: a request of ${total} pages exceeds the bound of ${this.maxRequestPages}`,
      );
    }
    // One batch for the read-only pages and one for the writable ones: libxengnttab takes
    // one protection per batch, and a readable buffer must never get a writable mapping.
    const batches = {
      read: { refs: [] as number[], owners: [] as PageOwner[] },
      write: { refs: [] as number[], owners: [] as PageOwner[] },
    };
    const firstPage: number[] = [];
    ranges.forEach((range, i) => {
      const span = spans[i] as GrantSpan;
      const batch = batches[range.access];
      firstPage.push(batch.refs.length);
      for (let page = 0; page < span.pages; page++) {
        batch.refs.push(span.firstRef + page);
        batch.owners.push(range);
      }
    });
    const readMapping =
      batches.read.refs.length > 0 ? this.mapRefs(batches.read.refs, false, batches.read.owners) : undefined;
    let writeMapping: GrantMapping | undefined;
    try {
      writeMapping =
        batches.write.refs.length > 0
          ? this.mapRefs(batches.write.refs, true, batches.write.owners)
          : undefined;
    } catch (error) {
      if (readMapping) this.unmapMapping(readMapping);
      throw error;
    }
    const segments = ranges.map((range, i) => {
      const span = spans[i] as GrantSpan;
      const mapping = range.access === 'read' ? readMapping : writeMapping;
      if (span.pages === 0 || !mapping) return [new Uint8Array(0)];
      const start = (firstPage[i] as number) * PAGE_SIZE + span.offset;
      return [mapping.bytes.subarray(start, start + span.length)];
    });
    const live = [readMapping, writeMapping].filter((m): m is GrantMapping => m !== undefined);
    this.requests.add(live);
    let released = false;
    return {
      segments,
      release: (written) => {
        if (released) return;
        released = true;
        // Unmapped before returning: the caller publishes the used element next.
        if (this.requests.delete(live)) for (const mapping of live) this.unmapMapping(mapping);
        countTransfer(this.counters, ranges, written);
      },
    };
  }

  fence(order: FenceOrder): void {
    fence(order);
  }

  unmapAll(): void {
    for (const mapping of this.views) this.unmapMapping(mapping);
    this.views.clear();
    for (const live of this.requests) for (const mapping of live) this.unmapMapping(mapping);
    this.requests.clear();
  }

  liveMappings(): number {
    let live = this.views.size;
    for (const mappings of this.requests) live += mappings.length;
    return live;
  }
}

/** Adds a released request's bytes to the counters (readable ranges read, writable ranges as written). */
export function countTransfer(
  counters: StrategyCounters,
  ranges: readonly MemoryRange[],
  written?: readonly number[],
): void {
  for (let i = 0; i < ranges.length; i++) {
    const range = ranges[i] as MemoryRange;
    if (range.access === 'read') counters.bytesRead += range.length;
    else
      counters.bytesWritten += clampWritten(
        written === undefined ? undefined : (written[i] ?? 0),
        range.length,
      );
  }
}

/** How many bytes of a writable range count as written: the device's word, bounded by the range. */
export function clampWritten(written: number | undefined, length: number): number {
  if (written === undefined) return length;
  if (!Number.isInteger(written) || written <= 0) return 0;
  return Math.min(written, length);
}

/** The `grant-map` strategy for one device. */
export function createGrantMapMemory(options: GrantMapMemoryOptions): GrantMapMemory {
  return new GrantMapMemory(options);
}
