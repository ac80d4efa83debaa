import type { GrantMapping, GrantTables } from '@xvio/xen';
import { encodeGrantAddress, PAGE_SIZE } from './grant-address.js';
import {
  clampWritten,
  DEFAULT_MAX_REQUEST_PAGES,
  GrantMapMemory,
  type XenGuestMemory,
} from './grant-map-memory.js';
import {
  decodeGrantSpan,
  type GrantSpan,
  type GrantSpanFields,
  grantSpan,
  grantSpanOfHalves,
  MAX_GRANT_REF,
} from './grant-span.js';
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

/** Pool pages mapped in one call; unmapped together when evicted (the LRU unit). */
interface Batch {
  readonly mapping: GrantMapping;
  readonly refs: readonly number[];
  /** Whether `refs` are consecutive: then any run of them is one contiguous view. */
  readonly consecutive: boolean;
  /** Requests using a page of this batch. */
  pins: number;
  /** Neighbours in the LRU list (older, newer); undefined at the ends or when not listed. */
  older: Batch | undefined;
  newer: Batch | undefined;
}

interface Entry {
  readonly batch: Batch;
  readonly index: number;
  /** Pages of the batch from this one to its end (`batch.refs.length - index`). */
  readonly room: number;
  /**
   * The segments of the last one-range request that started in this page (offset and length
   * below): a buffer the frontend reuses is then handed out again without a new view. Valid
   * while the entry is resident, which is as long as its batch stays mapped.
   */
  segments: readonly (readonly Uint8Array[])[] | undefined;
  viewOffset: number;
  viewLength: number;
}

const EMPTY = new Uint8Array(0);

/** Pool references below this are looked up in an array (at most 512 KiB of slots). */
const DENSE_REFS = 1 << 16;

/**
 * The `persistent-pool` strategy, for a frontend that grants a pool of pages once and
 * allocates its buffers there (see pool-table-wire.ts for the protocol). Pool pages are
 * mapped writable on first use (the missing pages of a request in one batch) and kept, like
 * blkback's persistent grants, in an LRU of batches bounded by `maxPersistentPages`; a
 * request touching only mapped pool pages costs no hypercall. Buffers outside the pool, and
 * pool pages that cannot be mapped writable, are mapped per request exactly as the
 * `grant-map` strategy does. Everything is unmapped by `unmapAll` (reset, disconnect), which
 * is when the frontend may end access to the pool.
 */
export class PersistentPoolMemory implements XenGuestMemory {
  readonly kind = 'persistent-pool';
  readonly counters: StrategyCounters = newStrategyCounters();
  private readonly grants: GrantTables;
  private readonly domid: number;
  private readonly maxPages: number;
  private readonly maxRequestPages: number;
  private pool = new Set<number>();
  /**
   * Resident pool pages by reference: an array indexed by reference for the pool's references
   * below `DENSE_REFS` (sized by `setPool`, so bounded), a map for any other.
   */
  private dense: (Entry | undefined)[] = [];
  private readonly sparse = new Map<number, Entry>();
  /**
   * Mapped batches as a doubly linked list, least recently used first (`oldest`) to most
   * recently used (`newest`): touching a batch is a few pointer stores, not a hash delete
   * and insert per request.
   */
  private oldest: Batch | undefined;
  private batchCount = 0;
  private mappedPages = 0;
  private readonly scratchSpan: GrantSpanFields = { firstRef: 0, offset: 0, length: 0, pages: 0 };
  /** Bumped by `unmapAll`: requests opened before it hold no pins any more. */
  private generation = 0;
  /** The most recently used batch (touching it again changes nothing). */
  private newest: Batch | undefined;
  /** Buffers outside the pool, rings, and faults: the grant-map strategy, sharing counters. */
  readonly fallback: GrantMapMemory;

  constructor(options: PersistentPoolMemoryOptions) {
    this.grants = options.grants;
    this.domid = options.domid;
    this.maxPages = options.maxPersistentPages ?? DEFAULT_MAX_PERSISTENT_PAGES;
    if (!Number.isInteger(this.maxPages) || this.maxPages < 1) {
      throw new RangeError('maxPersistentPages must be a positive integer');
    }
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
      if (!Number.isInteger(ref) || ref < 0 || ref > MAX_GRANT_REF) {
        throw new RangeError(`pool ref ${ref} is not a grant reference`);
      }
    }
    this.pool = new Set(refs);
    let top = -1;
    for (const ref of refs) if (ref < DENSE_REFS && ref > top) top = ref;
    if (top >= this.dense.length) {
      const dense: (Entry | undefined)[] = new Array(top + 1).fill(undefined);
      for (let ref = 0; ref < this.dense.length; ref++) dense[ref] = this.dense[ref];
      for (const [ref, entry] of this.sparse) {
        if (ref <= top) {
          dense[ref] = entry;
          this.sparse.delete(ref);
        }
      }
      this.dense = dense;
    }
    for (const batch of this.batches()) {
      if (batch.pins === 0 && batch.refs.some((ref) => !this.pool.has(ref))) this.evict(batch, false);
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

  private entryOf(ref: number): Entry | undefined {
    return ref < this.dense.length ? this.dense[ref] : this.sparse.get(ref);
  }

  private setEntry(ref: number, entry: Entry): void {
    if (ref < this.dense.length) this.dense[ref] = entry;
    else this.sparse.set(ref, entry);
  }

  private deleteEntry(ref: number): void {
    if (ref < this.dense.length) this.dense[ref] = undefined;
    else this.sparse.delete(ref);
  }

  /** Pool pages currently mapped. */
  persistentPages(): number {
    return this.mappedPages;
  }

  /** The mapped batches, least recently used first (a copy: evicting while iterating is safe). */
  private batches(): Batch[] {
    const out: Batch[] = [];
    for (let batch = this.oldest; batch !== undefined; batch = batch.newer) out.push(batch);
    return out;
  }

  private unlink(batch: Batch): void {
    if (batch.older) batch.older.newer = batch.newer;
    else this.oldest = batch.newer;
    if (batch.newer) batch.newer.older = batch.older;
    else this.newest = batch.older;
    batch.older = undefined;
    batch.newer = undefined;
  }

  private append(batch: Batch): void {
    batch.older = this.newest;
    batch.newer = undefined;
    if (this.newest) this.newest.newer = batch;
    else this.oldest = batch;
    this.newest = batch;
  }

  private evict(batch: Batch, counted: boolean): void {
    for (const ref of batch.refs) {
      if (this.entryOf(ref)?.batch === batch) this.deleteEntry(ref);
    }
    this.unlink(batch);
    this.batchCount--;
    this.mappedPages -= batch.refs.length;
    if (counted) this.counters.evictions++;
    this.counters.calls++;
    this.counters.unmaps += batch.refs.length;
    batch.mapping.unmap();
  }

  /** Evicts least recently used unpinned batches until `incoming` more pages fit the bound. */
  private makeRoom(incoming: number): void {
    if (this.mappedPages + incoming <= this.maxPages) return;
    let batch = this.oldest;
    while (batch !== undefined && this.mappedPages + incoming > this.maxPages) {
      const next = batch.newer;
      if (batch.pins === 0) this.evict(batch, true);
      batch = next;
    }
  }

  private touch(batch: Batch): void {
    if (this.newest === batch) return;
    this.unlink(batch);
    this.append(batch);
  }

  /**
   * The one contiguous view of a range whose pages are all resident in one batch, in order
   * (the common case: a buffer the frontend allocated from the pool and used before), or
   * undefined. Changes nothing.
   */
  private fast(span: GrantSpan): Entry | undefined {
    const entry = this.entryOf(span.firstRef);
    if (entry === undefined) return undefined;
    if (span.pages > entry.room) return undefined;
    const { batch, index } = entry;
    if (span.pages > 1 && !batch.consecutive) {
      for (let page = 1; page < span.pages; page++)
        if (batch.refs[index + page] !== span.firstRef + page) return undefined;
    }
    return entry;
  }

  /** Whether every page of `span` is a pool page. */
  private inPool(span: GrantSpan): boolean {
    if (span.pages === 0) return false;
    for (let page = 0; page < span.pages; page++) if (!this.pool.has(span.firstRef + page)) return false;
    return true;
  }

  /**
   * Makes the pages of pool ranges resident, mapping the missing ones in one writable batch.
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
        const entry = this.entryOf(ref);
        if (entry) {
          this.counters.cacheHits++;
          hit.add(entry.batch);
        } else {
          this.counters.cacheMisses++;
          missing.push(ref);
        }
      }
    }
    for (const batch of hit) this.touch(batch);
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
    let consecutive = true;
    for (let i = 1; i < missing.length; i++)
      if (missing[i] !== (missing[0] as number) + i) consecutive = false;
    const batch: Batch = { mapping, refs: missing, consecutive, pins: 0, older: undefined, newer: undefined };
    this.append(batch);
    this.batchCount++;
    this.mappedPages += missing.length;
    for (let index = 0; index < missing.length; index++)
      this.setEntry(missing[index] as number, {
        batch,
        index,
        room: missing.length - index,
        segments: undefined,
        viewOffset: 0,
        viewLength: 0,
      });
    return true;
  }

  /** Host views of a resident pool range, merging pages that are adjacent in one batch. */
  private views(span: GrantSpan, pinned: Set<Batch>): Uint8Array[] {
    const out: Uint8Array[] = [];
    let batch: Batch | undefined;
    let first = 0;
    let last = 0;
    let skip = span.offset;
    let done = 0;
    for (let page = 0; page <= span.pages; page++) {
      const entry = page < span.pages ? (this.entryOf(span.firstRef + page) as Entry) : undefined;
      if (entry && batch === entry.batch && entry.index === last + 1) {
        last = entry.index;
        continue;
      }
      if (batch) {
        const from = first * PAGE_SIZE + skip;
        const n = Math.min((last - first + 1) * PAGE_SIZE - skip, span.length - done);
        out.push(batch.mapping.bytes.subarray(from, from + n));
        done += n;
        skip = 0;
      }
      if (entry) {
        pinned.add(entry.batch);
        batch = entry.batch;
        first = entry.index;
        last = entry.index;
      }
    }
    return out;
  }

  /**
   * The span of a one-range request: decoded into a scratch object when the range carries
   * its address halves (no allocation; the span is used only inside `map`).
   */
  private oneSpan(range: MemoryRange): GrantSpan {
    const low = range.addressLow;
    const high = range.addressHigh;
    if (low === undefined || high === undefined) return this.rangeSpan(range);
    const span = this.scratchSpan;
    const fault = decodeGrantSpan(low, high, range.length, span);
    if (fault !== undefined || span.pages > this.maxRequestPages) {
      this.counters.faults++;
      throw new GuestMemoryError(fault ?? 'too-large', range.address, range.length);
    }
    return span;
  }

  /** The span of a request's range, from the address halves when the range carries them. */
  private rangeSpan(range: MemoryRange): GrantSpan {
    const low = range.addressLow;
    const high = range.addressHigh;
    if (low === undefined || high === undefined) return this.span(range.address, range.length);
    const span = grantSpanOfHalves(low, high, range.length);
    if (typeof span === 'string' || span.pages > this.maxRequestPages) {
      this.counters.faults++;
      throw new GuestMemoryError(typeof span === 'string' ? span : 'too-large', range.address, range.length);
    }
    return span;
  }

  private span(address: bigint, length: number): GrantSpan {
    const span = grantSpan(address, length);
    if (typeof span === 'string' || span.pages > this.maxRequestPages) {
      this.counters.faults++;
      throw new GuestMemoryError(typeof span === 'string' ? span : 'too-large', address, length);
    }
    return span;
  }

  /** Resident views of a pool range, or undefined when it is not (all) in the pool. */
  private poolViews(span: GrantSpan): Uint8Array[] | undefined {
    const entry = this.fast(span);
    if (entry) {
      this.counters.cacheHits += span.pages;
      this.touch(entry.batch);
      const from = entry.index * PAGE_SIZE + span.offset;
      return [entry.batch.mapping.bytes.subarray(from, from + span.length)];
    }
    if (!this.inPool(span) || !this.resident([span])) return undefined;
    return this.views(span, new Set());
  }

  check(address: bigint, length: number, access: MemoryAccess): MemoryFaultCode | undefined {
    const span = grantSpan(address, length);
    if (typeof span !== 'string' && span.pages > 0 && this.poolViews(span)) return undefined;
    return this.fallback.check(address, length, access);
  }

  read(address: bigint, target: Uint8Array): void {
    const span = this.span(address, target.length);
    const views = span.pages > 0 ? this.poolViews(span) : undefined;
    if (!views) {
      this.counters.fallbacks++;
      this.fallback.read(address, target);
      return;
    }
    let done = 0;
    for (const view of views) {
      target.set(view, done);
      done += view.length;
    }
    this.counters.copies++;
    this.counters.bytesRead += target.length;
  }

  write(address: bigint, source: Uint8Array): void {
    const span = this.span(address, source.length);
    const views = span.pages > 0 ? this.poolViews(span) : undefined;
    if (!views) {
      this.counters.fallbacks++;
      this.fallback.write(address, source);
      return;
    }
    let done = 0;
    for (const view of views) {
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
    const count = ranges.length;
    // Fast path: every range resident in one batch (a buffer allocated from the pool and
    // used before). Spans are decoded one at a time and nothing is pinned or touched until
    // every range was found, so a fault (thrown by `span`) or a miss leaves no trace.
    if (count === 1) {
      const range = ranges[0] as MemoryRange;
      const span = this.oneSpan(range);
      if (span.pages === 0) {
        return new PoolRequest(
          this,
          this.generation,
          ranges,
          [[EMPTY]],
          undefined,
          undefined,
          undefined,
          undefined,
        );
      }
      const entry = this.fast(span);
      if (entry !== undefined) {
        const batch = entry.batch;
        this.counters.cacheHits += span.pages;
        batch.pins++;
        this.touch(batch);
        let segments = entry.segments;
        if (segments === undefined || entry.viewOffset !== span.offset || entry.viewLength !== span.length) {
          const from = entry.index * PAGE_SIZE + span.offset;
          segments = [[batch.mapping.bytes.subarray(from, from + span.length)]];
          entry.segments = segments;
          entry.viewOffset = span.offset;
          entry.viewLength = span.length;
        }
        return new PoolRequest(
          this,
          this.generation,
          ranges,
          segments,
          batch,
          undefined,
          undefined,
          undefined,
        );
      }
    } else {
      const segments: Uint8Array[][] = new Array(count);
      const batches: Batch[] = [];
      let pages = 0;
      let fast = true;
      for (let i = 0; i < count; i++) {
        const range = ranges[i] as MemoryRange;
        const span = this.rangeSpan(range);
        if (!fast) continue; // keep decoding: a fault anywhere is thrown before anything is mapped
        if (span.pages === 0) {
          segments[i] = [EMPTY];
          continue;
        }
        const entry = this.fast(span);
        if (entry === undefined) {
          fast = false;
          continue;
        }
        const from = entry.index * PAGE_SIZE + span.offset;
        segments[i] = [entry.batch.mapping.bytes.subarray(from, from + span.length)];
        batches.push(entry.batch);
        pages += span.pages;
      }
      if (fast) {
        this.counters.cacheHits += pages;
        for (const batch of batches) {
          batch.pins++;
          this.touch(batch);
        }
        return new PoolRequest(
          this,
          this.generation,
          ranges,
          segments,
          undefined,
          batches,
          undefined,
          undefined,
        );
      }
    }
    const spans: GrantSpan[] = new Array(count);
    for (let i = 0; i < count; i++) {
      const range = ranges[i] as MemoryRange;
      spans[i] = this.rangeSpan(range);
    }
    return this.mapSlow(ranges, spans);
  }

  private mapSlow(ranges: readonly MemoryRange[], spans: readonly GrantSpan[]): MappedRanges {
    const pooled = spans.map((span) => this.inPool(span));
    const poolSpans = spans.filter((_, i) => pooled[i]);
    if (poolSpans.length > 0 && !this.resident(poolSpans)) pooled.fill(false);
    const otherIndexes: number[] = [];
    for (let i = 0; i < ranges.length; i++)
      if (!pooled[i] && (spans[i] as GrantSpan).pages > 0) otherIndexes.push(i);
    const others = otherIndexes.map((i) => ranges[i] as MemoryRange);
    this.counters.fallbacks += others.length;
    // Throws the typed fault having mapped nothing; pool pages stay mapped (a cache).
    const perRequest = others.length > 0 ? this.fallback.map(others) : undefined;
    const pinned = new Set<Batch>();
    let other = 0;
    const segments = ranges.map((_, i) => {
      const span = spans[i] as GrantSpan;
      if (pooled[i]) return this.views(span, pinned);
      if (span.pages === 0) return [EMPTY];
      return (perRequest as MappedRanges).segments[other++] as Uint8Array[];
    });
    const batches = [...pinned];
    for (const batch of batches) batch.pins++;
    return new PoolRequest(
      this,
      this.generation,
      ranges,
      segments,
      undefined,
      batches,
      perRequest,
      otherIndexes,
    );
  }

  /** Called once by a request's `release`: drops its pins unless `unmapAll` did already. */
  closeRequest(request: PoolRequest, generation: number): void {
    if (generation !== this.generation) return;
    if (request.batch !== undefined) request.batch.pins--;
    if (request.batches !== undefined) for (const batch of request.batches) batch.pins--;
    this.makeRoom(0);
  }

  fence(order: FenceOrder): void {
    fence(order);
  }

  /** Unmaps the whole pool and every ring (reset, disconnect): the frontend may end access afterwards. */
  unmapAll(): void {
    for (const batch of this.batches()) {
      batch.pins = 0;
      this.evict(batch, false);
    }
    this.dense.fill(undefined);
    this.sparse.clear();
    this.generation++;
    this.fallback.unmapAll();
  }

  liveMappings(): number {
    return this.batchCount + this.fallback.liveMappings();
  }
}

/** One request's views: pool pages pinned, plus the per-request mapping of buffers outside the pool. */
class PoolRequest implements MappedRanges {
  private released = false;

  constructor(
    private readonly owner: PersistentPoolMemory,
    private readonly generation: number,
    private readonly ranges: readonly MemoryRange[],
    readonly segments: readonly (readonly Uint8Array[])[],
    /** The one batch a single-batch request pins, or undefined. */
    readonly batch: Batch | undefined,
    /** The batches a request pins otherwise (a batch may appear more than once: one pin each). */
    readonly batches: readonly Batch[] | undefined,
    private readonly perRequest: MappedRanges | undefined,
    /** Indexes of the ranges `perRequest` maps, in its order. */
    private readonly otherIndexes: readonly number[] | undefined,
  ) {}

  release(written?: readonly number[]): void {
    if (this.released) return;
    this.released = true;
    this.owner.closeRequest(this, this.generation);
    const counters = this.owner.counters;
    const ranges = this.ranges;
    if (this.perRequest && this.otherIndexes) {
      // The per-request part counts its own bytes.
      const other: number[] = [];
      for (const i of this.otherIndexes)
        other.push(written === undefined ? (ranges[i] as MemoryRange).length : (written[i] ?? 0));
      this.perRequest.release(other);
    }
    for (let i = 0; i < ranges.length; i++) {
      if (this.otherIndexes?.includes(i)) continue;
      const range = ranges[i] as MemoryRange;
      if (range.access === 'read') counters.bytesRead += range.length;
      else
        counters.bytesWritten += clampWritten(
          written === undefined ? undefined : (written[i] ?? 0),
          range.length,
        );
    }
  }
}

export function createPersistentPoolMemory(options: PersistentPoolMemoryOptions): PersistentPoolMemory {
  return new PersistentPoolMemory(options);
}
