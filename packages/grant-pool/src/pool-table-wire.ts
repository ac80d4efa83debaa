// The persistent pool table: how a cooperating frontend tells the backend which grants it
// keeps for the lifetime of the connection. xvio's own convention (no Xen or virtio spec
// defines one); blkif's `feature-persistent` promises the same thing without a table.
//
// One page, granted to the backend (read-only is enough), little-endian:
//   u32 magic  @0  POOL_TABLE_MAGIC ("XVPT")
//   u32 count  @4  number of references, at most POOL_TABLE_MAX_REFS
//   u32 refs[] @8  the pool's grant references, one per granted 4 KiB page
// The frontend writes the table's own grant reference to its device directory in xenstore
// as `persistent-pool-table` before it switches to Connected, never ends access to a pool
// page while connected, and allocates every buffer it puts on the rings from pool pages,
// addressing them with ordinary grant DMA addresses (`1<<63 | ref<<12 | offset`) so that a
// backend without pool support still works (it maps them per request).
import { PAGE_SIZE } from './grant-address.js';

export const POOL_TABLE_MAGIC = 0x5450_5658; // "XVPT" as bytes in little-endian order
export const POOL_TABLE_MAGIC_OFFSET = 0;
export const POOL_TABLE_COUNT_OFFSET = 4;
export const POOL_TABLE_REFS_OFFSET = 8;
export const POOL_TABLE_REF_SIZE = 4;
/** (4096 - 8) / 4 references fit one page. */
export const POOL_TABLE_MAX_REFS = (PAGE_SIZE - POOL_TABLE_REFS_OFFSET) / POOL_TABLE_REF_SIZE;
/** The xenstore key (in the frontend's device directory) holding the table's grant reference. */
export const POOL_TABLE_XENSTORE_KEY = 'persistent-pool-table';

/** Writes a table (frontend side and tests). */
export function encodePoolTable(refs: readonly number[], page = new Uint8Array(PAGE_SIZE)): Uint8Array {
  if (refs.length > POOL_TABLE_MAX_REFS)
    throw new RangeError(`a pool table holds at most ${POOL_TABLE_MAX_REFS} refs`);
  const view = new DataView(page.buffer, page.byteOffset, page.byteLength);
  view.setUint32(POOL_TABLE_MAGIC_OFFSET, POOL_TABLE_MAGIC, true);
  view.setUint32(POOL_TABLE_COUNT_OFFSET, refs.length, true);
  refs.forEach((ref, i) => {
    view.setUint32(POOL_TABLE_REFS_OFFSET + i * POOL_TABLE_REF_SIZE, ref, true);
  });
  return page;
}

/** Parses a table copied out of guest memory; undefined when it is malformed. */
export function decodePoolTable(page: Uint8Array): number[] | undefined {
  if (page.length < POOL_TABLE_REFS_OFFSET) return undefined;
  const view = new DataView(page.buffer, page.byteOffset, page.byteLength);
  if (view.getUint32(POOL_TABLE_MAGIC_OFFSET, true) !== POOL_TABLE_MAGIC) return undefined;
  const count = view.getUint32(POOL_TABLE_COUNT_OFFSET, true);
  if (count > POOL_TABLE_MAX_REFS || POOL_TABLE_REFS_OFFSET + count * POOL_TABLE_REF_SIZE > page.length)
    return undefined;
  const refs: number[] = [];
  for (let i = 0; i < count; i++)
    refs.push(view.getUint32(POOL_TABLE_REFS_OFFSET + i * POOL_TABLE_REF_SIZE, true));
  return refs;
}
