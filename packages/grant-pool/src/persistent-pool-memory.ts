import type { GrantMapping, GrantTables } from '@xvio/xen';
import { encodeGrantAddress, PAGE_SIZE } from './grant-address.js';
import {
  countTransfer,
  DEFAULT_MAX_REQUEST_PAGES,
  GrantMapMemory,
  type XenGuestMemory,
} from './grant-map-memory.js';
import { type GrantSpan, grantSpan, MAX_GRANT_REF } from './grant-span.js';
import type { FenceOrder, MappedRanges, MemoryAccess, MemoryRange } from './guest-memory.js';
import { newStrategyCounters, type StrategyCounters } from './memory-counters.js';
import { GuestMemoryError, type MemoryFaultCode } from './memory-errors.js';
import { fence } from './memory-fence.js';
import { decodePoolTable } from './pool-table-wire.js';

/** blkback's default bound on persistent grants per ring (`max_persistent_grants`, 1056). */
export const DEFAULT_MAX_PERSISTENT_PAGES = 1056;

export interface PersistentPoolMemoryOptions {
  readonly grants: GrantTables;
  readonly domid: number;
  /** Most pool pages kept mapped (default 1056); least recently used ones are unmapped beyond. */
  readonly maxPersistentPages?: number;
  /** The pool's grant references, when known from configuration (else `setPool`/`loadPoolTable`). */
  readonly poolRefs?: readonly number[];
  readonly maxRequestPages?: number;
}

/** Pool pages mapped in one call; unmapped together when the least recently used one is evicted. */
interface Batch {
  readonly mapping: GrantMapping;
  readonly refs: readonly number[];
  /** Requests using a page of this batch. */
  pins: number;
}

interface Entry {
  readonly batch: Batch;
  readonly index: number;
}

/**
 * The `persistent-pool` strategy, for a frontend that grants a pool of pages once and
 * allocates its buffers there (see pool-table-wire.ts for the protocol). Pool pages are
 * mapped writable on first use and kept, like blkback's persistent grants, in an LRU
 * bounded by `maxPersistentPages`; a request touching only mapped pool pages costs no
 * hypercall. Buffers outside the pool, and pool pages that cannot be mapped writable, are
 * mapped per request exactly as the `grant-map` strategy does. Everything is unmapped by
 * `unmapAll` (reset, disconnect), which is when the frontend may end access to the pool.
 */
export class PersistentPoolMemory implements XenGuestMemory {
  readonly kind = 'persistent-pool';
  readonly counters: StrategyCounters = newStrategyCounters();
  private readonly grants: GrantTables;
  private readonly domid: number;
  private readonly maxPages: number;
  private readonly maxRequestPages: number;
  private pool = new Set<number>();
  /** LRU order: first is least recently used. */
  private readonly entries = new Map<number, Entry>();
  private readonly batches = new Set<Batch>();
  private mappedPages = 0;
  private readonly requests = new Set<Batch[]>();
  /** Buffers outside the pool, rings, and faults: the grant-map strategy, sharing counters. */
  private readonly fallback: GrantMapMemory;

  constructor(options: PersistentPoolMemoryOptions) {
    this.grants = options.grants;
    this.domid = options.domid;
    this.maxPages = options.maxPersistentPages ?? DEFAULT_MAX_PERSISTENT_PAGES;
    if (!Number.isInteger(this.maxPages) || this.maxPages < 1)
      throw new RangeError('maxPersistentPages must be a positive integer');
    this.maxRequestPages = options.maxRequestPages ?? DEFAULT_MAX_REQUEST_PAGES;
    this.fallback = new GrantMapMemory({
      grants: this.grants,
      domid: this.domid,
      maxRequestPages: this.maxRequestPages,
      counters: this.counters,
    });
    if (options.poolRefs) this.setPool(options.poolRefs);
  }

  /** The pool's references, as the frontend published them. Mapped pages no longer in the pool are unmapped when unused. */
  setPool(refs: readonly number[]): void {
    for (const ref of refs) {
      if (!Number.isInteger(ref) || ref < 0 || ref > MAX_GRANT_REF)
        throw new RangeError(`pool ref ${ref} is not a grant reference`);
    }
    this.pool = new Set(refs);
    for (const batch of [...this.batches]) {
      if (batch.pins === 0 && batch.refs.some((ref) => !this.pool.has(ref))) this.evict(batch);
    }
  }

  /**
   * Reads the pool table the frontend granted as `tableRef` (pool-table-wire.ts) and takes
   * its references as the pool. Returns how many; throws `GuestMemoryError` when the page
   * cannot be read, `RangeError` when it is not a pool table.
   */
  loadPoolTable(tableRef: number): number {
    const page = new Uint8Array(PAGE_SIZE);
    this.fallback.read(encodeGrantAddress(tableRef), page);
    const refs = decodePoolTable(page);
    if (refs === undefined) throw new RangeError(`grant ${tableRef} does not hold a persistent pool table`);
    this.setPool(refs);
    return refs.length;
  }

  /** Pool pages currently mapped. */
  persistentPages(): number {
    return this.mappedPages;
  }

  private evict(batch: Batch, counted = true): void {
    for (const ref of batch.refs) {
      const entry = this.entries.get(ref);
      if (entry?.batch === batch) this.entries.delete(ref);
    }
    this.batches.delete(batch);
    this.mappedPages -= batch.refs.length;
    if (counted) this.counters.evictions++;
    this.counters.calls++;
    this.counters.unmaps += batch.refs.length;
    batch.mapping.unmap();
  }

  /** Evicts least recently used unpinned batches until `incoming` more pages fit the bound. */
  private makeRoom(incoming: number): void {
    if (this.mappedPages + incoming <= this.maxPages) return;
    for (const entry of this.entries.values()) {
      if (this.mappedPages + incoming <= this.maxPages) return;
      if (entry.batch.pins === 0 && this.batches.has(entry.batch)) this.evict(entry.batch);
    }
  }

  /** Whether every page of `span` is a pool page. */
  private inPool(span: GrantSpan): boolean {
    if (span.pages === 0) return false;
    for (let page = 0; page < span.pages; page++) if (!this.pool.has(span.firstRef + page)) return false;
    return true;
  }

  /**
   * Looks the pages of pool ranges up, mapping the missing ones in one writable batch.
   * Returns false (mapping nothing new) when they cannot all be held: the caller then maps
   * per request, which also gives the exact fault.
   */
  private resident(spans: readonly GrantSpan[]): boolean {
    const missing: number[] = [];
    const seen = new Set<number>();
    const hit = new Set<Batch>();
    for (const span of spans) {
      for (let page = 0; page < span.pages; page++) {
        const ref = span.firstRef + page;
        if (seen.has(ref)) continue;
        seen.add(ref);
        const entry = this.entries.get(ref);
        if (entry) {
          this.counters.cacheHits++;
          hit.add(entry.batch);
          this.entries.delete(ref);
          this.entries.set(ref, entry);
        } else {
          this.counters.cacheMisses++;
          missing.push(ref);
        }
      }
    }
    if (missing.length === 0) return true;
    if (missing.length > this.maxPages) return false;
    // The pages this request already hit must survive making room for the others.
    for (const batch of hit) batch.pins++;
    this.makeRoom(missing.length);
    for (const batch of hit) batch.pins--;
    let mapping: GrantMapping;
    this.counters.calls++;
    try {
      mapping = this.grants.map({ domid: this.domid, refs: missing, writable: true });
    } catch {
      // Not granted, granted read-only or revoked: not a usable pool page.
      return false;
    }
    this.counters.maps += missing.length;
    const batch: Batch = { mapping, refs: missing, pins: 0 };
    this.batches.add(batch);
    this.mappedPages += missing.length;
    missing.forEach((ref, index) => {
      this.entries.set(ref, { batch, index });
    });
    return true;
  }

  /** Host views of a resident pool range, merging pages that are adjacent in one batch. */
  private views(span: GrantSpan, pinned: Set<Batch>): Uint8Array[] {
    const out: Uint8Array[] = [];
    let run: { batch: Batch; first: number; last: number } | undefined;
    let start = span.offset;
    let done = 0;
    const flush = () => {
      if (!run) return;
      const bytes = run.batch.mapping.bytes;
      const from = run.first * PAGE_SIZE + start;
      const n = Math.min((run.last - run.first + 1) * PAGE_SIZE - start, span.length - done);
      out.push(bytes.subarray(from, from + n));
      done += n;
      start = 0;
    };
    for (let page = 0; page < span.pages; page++) {
      const entry = this.entries.get(span.firstRef + page) as Entry;
      pinned.add(entry.batch);
      if (run && run.batch === entry.batch && entry.index === run.last + 1) {
        run.last = entry.index;
      } else {
        flush();
        run = { batch: entry.batch, first: entry.index, last: entry.index };
      }
    }
    flush();
    return out;
  }

  private span(address: bigint, length: number): GrantSpan {
    const span = grantSpan(address, length);
    if (typeof span === 'string' || span.pages > this.maxRequestPages) {
      this.counters.faults++;
      throw new GuestMemoryError(typeof span === 'string' ? span : 'too-large', address, length);
    }
    return span;
  }

  check(address: bigint, length: number, access: MemoryAccess): MemoryFaultCode | undefined {
    const span = grantSpan(address, length);
    if (typeof span !== 'string' && this.inPool(span) && this.resident([span])) return undefined;
    return this.fallback.check(address, length, access);
  }

  read(address: bigint, target: Uint8Array): void {
    const span = this.span(address, target.length);
    if (!this.inPool(span) || !this.resident([span])) {
      this.counters.fallbacks++;
      this.fallback.read(address, target);
      return;
    }
    let done = 0;
    for (const view of this.views(span, new Set())) {
      target.set(view, done);
      done += view.length;
    }
    this.counters.copies++;
    this.counters.bytesRead += target.length;
  }

  write(address: bigint, source: Uint8Array): void {
    const span = this.span(address, source.length);
    if (!this.inPool(span) || !this.resident([span])) {
      this.counters.fallbacks++;
      this.fallback.write(address, source);
      return;
    }
    let done = 0;
    for (const view of this.views(span, new Set())) {
      view.set(source.subarray(done, done + view.length));
      done += view.length;
    }
    this.counters.copies++;
    this.counters.bytesWritten += source.length;
  }

  /** Rings are mapped on their own and kept, whether or not they sit in the pool. */
  view(address: bigint, length: number, access: MemoryAccess): Uint8Array {
    return this.fallback.view(address, length, access);
  }

  map(ranges: readonly MemoryRange[]): MappedRanges {
    const spans = ranges.map((range) => this.span(range.address, range.length));
    const pooled = spans.map((span) => this.inPool(span));
    const poolSpans = spans.filter((_, i) => pooled[i]);
    if (poolSpans.length > 0 && !this.resident(poolSpans)) pooled.fill(false);
    const indexes = ranges.map((_, i) => i);
    const otherIndexes = indexes.filter((i) => !pooled[i] && (spans[i] as GrantSpan).pages > 0);
    const others = otherIndexes.map((i) => ranges[i] as MemoryRange);
    if (others.length > 0) this.counters.fallbacks += others.length;
    // Throws the typed fault having mapped nothing; pool pages stay mapped (a cache).
    const perRequest = others.length > 0 ? this.fallback.map(others) : undefined;
    const pinned = new Set<Batch>();
    let other = 0;
    const segments = ranges.map((_, i) => {
      const span = spans[i] as GrantSpan;
      if (pooled[i]) return this.views(span, pinned);
      if (span.pages === 0) return [new Uint8Array(0)];
      return (perRequest as MappedRanges).segments[other++] as Uint8Array[];
    });
    const batches = [...pinned];
    for (const batch of batches) batch.pins++;
    this.requests.add(batches);
    let released = false;
    return {
      segments,
      release: (written) => {
        if (released) return;
        released = true;
        if (this.requests.delete(batches)) for (const batch of batches) batch.pins--;
        // The per-request part counts its own bytes; the pool part is counted here.
        const writtenOf = (i: number) => (written === undefined ? ranges[i]?.length : (written[i] ?? 0)) ?? 0;
        perRequest?.release(otherIndexes.map(writtenOf));
        const poolIndexes = indexes.filter((i) => pooled[i]);
        countTransfer(
          this.counters,
          poolIndexes.map((i) => ranges[i] as MemoryRange),
          poolIndexes.map(writtenOf),
        );
        this.makeRoom(0);
      },
    };
  }

  fence(order: FenceOrder): void {
    fence(order);
  }

  /** Unmaps the whole pool and every ring (reset, disconnect): the frontend may end access afterwards. */
  unmapAll(): void {
    for (const batch of [...this.batches]) {
      batch.pins = 0;
      this.evict(batch, false);
    }
    this.entries.clear();
    this.requests.clear();
    this.fallback.unmapAll();
  }

  liveMappings(): number {
    return this.batches.size + this.fallback.liveMappings();
  }
}

export function createPersistentPoolMemory(options: PersistentPoolMemoryOptions): PersistentPoolMemory {
  return new PersistentPoolMemory(options);
}
