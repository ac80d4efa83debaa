import { encodeGrantAddress, PAGE_SIZE } from '@xvio/grant-pool';
import type { GrantTables, SimDomain } from '@xvio/xen';

/** Which way the device uses a buffer (Linux's dma_data_direction). */
export type DmaDirection = 'to-device' | 'from-device' | 'bidirectional';

/** One buffer mapped for the device: the address the ring carries, and how to undo it. */
export interface DmaMapping {
  readonly address: bigint;
  readonly length: number;
  /** Undoes the mapping. Throws `DmaRevokeError` when the backend still maps a page. */
  unmap(): void;
}

const marker = Symbol.for('xvio.transport.dma-revoke-error');

/** Linux's "grant still in use": the backend kept a page mapped after completing the request. */
export class DmaRevokeError extends Error {
  override readonly name = 'DmaRevokeError';
  readonly [marker] = true;
  readonly code = 'grant-still-in-use';

  constructor(message: string, options?: ErrorOptions) {
    super(`grant-still-in-use: ${message}`, options);
  }

  static isInstance(value: unknown): value is DmaRevokeError {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[marker] === true;
  }
}

/** How a guest driver hands memory to its device (Linux: the device's dma_map_ops). */
export interface GuestDma {
  readonly kind: 'physical' | 'grant';
  /** Maps guest-physical `[physical, physical + length)`. */
  map(physical: bigint, length: number, direction: DmaDirection): DmaMapping;
  /** Counters: live mappings, grants made and revoked, revocations that failed. */
  readonly counters: {
    mapped: number;
    unmapped: number;
    grants: number;
    revoked: number;
    revokeFailures: number;
  };
  /** Where buffers should live (a persistent pool); undefined: anywhere in guest RAM. */
  allocatePages?(count: number): number | undefined;
  /** Frees pool pages; false when they are not the pool's (the caller frees them to RAM). */
  freePages?(first: number, count: number): boolean;
}

/** No IOMMU: the ring carries guest-physical addresses (grant_usage=0, a backend that maps the guest). */
export function physicalDma(): GuestDma {
  const counters = { mapped: 0, unmapped: 0, grants: 0, revoked: 0, revokeFailures: 0 };
  return {
    kind: 'physical',
    counters,
    map(physical, length) {
      counters.mapped++;
      return {
        address: physical,
        length,
        unmap: () => {
          counters.unmapped++;
        },
      };
    },
  };
}

/**
 * Linux's xen-grant-dma (drivers/xen/grant-dma-ops.c): every mapping grants the pages it
 * covers to the backend domain with consecutive grant references (gnttab_alloc_grant_reference_seq),
 * read-only for DMA_TO_DEVICE, and the ring carries `1<<63 | gref0<<12 | offset`. Unmapping
 * revokes each grant; a revocation that fails because the backend still maps the page is
 * what makes Linux mark the device broken for good (`DmaRevokeError`).
 */
/**
 * A cooperating frontend's persistent pool (grant-pool's pool table): `pages` frames granted
 * once with consecutive references; buffers are allocated from them and carry ordinary
 * grant DMA addresses into the pool, so nothing is granted or revoked per request. Buffers
 * that do not fit fall back to per-mapping grants.
 */
export function poolDma(
  domain: SimDomain,
  backendDomid: number,
  pages: number,
): GuestDma & { readonly refs: readonly number[]; release(): void } {
  const table = domain.services().grants;
  const first = domain.allocatePages(pages);
  const refs = grantConsecutive(table, backendDomid, first, pages, false);
  const fallback = grantDma(domain, backendDomid, table);
  const used = new Array<boolean>(pages).fill(false);
  const counters = fallback.counters;
  counters.grants += pages;
  const inPool = (frame: number, count: number) => frame >= first && frame + count <= first + pages;
  return {
    kind: 'grant',
    counters,
    refs,
    map(physical, length, direction) {
      const frame = Number(physical / BigInt(PAGE_SIZE));
      const offset = Number(physical % BigInt(PAGE_SIZE));
      const count = Math.max(1, Math.ceil((offset + length) / PAGE_SIZE));
      if (!inPool(frame, count)) return fallback.map(physical, length, direction);
      counters.mapped++;
      return {
        address: encodeGrantAddress(refs[frame - first] as number, offset),
        length,
        unmap: () => {
          counters.unmapped++;
        },
      };
    },
    allocatePages(count) {
      for (let start = 0; start + count <= pages; start++) {
        if (used.slice(start, start + count).every((u) => !u)) {
          used.fill(true, start, start + count);
          return first + start;
        }
      }
      return undefined;
    },
    freePages(frame, count) {
      if (!inPool(frame, count)) return false;
      used.fill(false, frame - first, frame - first + count);
      return true;
    },
    release() {
      for (const ref of refs) table.endAccess(ref);
      domain.freePages(first, pages);
    },
  };
}

export function grantDma(domain: SimDomain, backendDomid: number, grants?: GrantTables): GuestDma {
  const table = grants ?? domain.services().grants;
  const counters = { mapped: 0, unmapped: 0, grants: 0, revoked: 0, revokeFailures: 0 };
  return {
    kind: 'grant',
    counters,
    map(physical, length, direction) {
      const firstFrame = Number(physical / BigInt(PAGE_SIZE));
      const offset = Number(physical % BigInt(PAGE_SIZE));
      const pages = Math.max(1, Math.ceil((offset + length) / PAGE_SIZE));
      const readOnly = direction === 'to-device';
      const refs = grantConsecutive(table, backendDomid, firstFrame, pages, readOnly);
      counters.grants += pages;
      counters.mapped++;
      let live = true;
      return {
        address: encodeGrantAddress(refs[0] as number, offset),
        length,
        unmap: () => {
          if (!live) return;
          const failed: number[] = [];
          for (const ref of refs) {
            try {
              table.endAccess(ref);
              counters.revoked++;
            } catch (error) {
              failed.push(ref);
              counters.revokeFailures++;
              void error;
            }
          }
          live = false;
          counters.unmapped++;
          if (failed.length > 0)
            throw new DmaRevokeError(`backend ${backendDomid} still maps grant refs ${failed.join(',')}`);
        },
      };
    },
  };
}

/**
 * Grants `pages` frames with consecutive references. The table hands out the lowest free
 * reference, so a run breaks only where another grant sits; the refs below the break are
 * kept as fillers until the run is complete, then released.
 */
function grantConsecutive(
  table: GrantTables,
  grantee: number,
  firstFrame: number,
  pages: number,
  readOnly: boolean,
): number[] {
  const run: number[] = [];
  const fillers: number[] = [];
  try {
    while (run.length < pages) {
      const ref = table.grantAccess(grantee, firstFrame + run.length, { readOnly });
      const previous = run.at(-1);
      if (previous === undefined || ref === previous + 1) {
        run.push(ref);
        continue;
      }
      // The run broke: keep what we have as fillers and restart at `ref` with page 0.
      fillers.push(...run);
      run.length = 0;
      table.endAccess(ref);
      run.push(table.grantAccess(grantee, firstFrame, { readOnly }));
    }
    return run;
  } catch (error) {
    for (const ref of run) table.endAccess(ref);
    throw error;
  } finally {
    for (const ref of fillers) table.endAccess(ref);
  }
}
