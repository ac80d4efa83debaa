import type { MemoryRegion } from '@xvio/grant-pool';
import { VhostUserError } from './vhost-user-errors.js';
import {
  F_ADD_SEALS,
  F_GET_SEALS,
  F_SEAL_SHRINK,
  libc,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_NORESERVE,
  MAP_PRIVATE,
  MAP_SHARED,
  PROT_READ,
  PROT_WRITE,
  S_IFMT,
  S_IFREG,
  STAT_MODE,
  STAT_SIZE,
  STAT_ST_SIZE,
} from './vhost-user-libc.js';
import type { RegionDescription } from './vhost-user-wire.js';

const PAGE_SIZE = 4096n;
/**
 * Regions are mapped in pieces of at most 1 GiB: one `ArrayBuffer` over native memory
 * must stay below 4 GiB (koffi aborts the process beyond), and guest RAM above 4 GiB is
 * one region. A ring never crosses a piece boundary in practice (they are 1 GiB-aligned in
 * guest-physical space and rings are page-sized); one that did would not start.
 */
export const REGION_PIECE_SIZE = 1n << 30n;
/** The largest region xvio maps: 1 TiB of guest RAM. */
export const MAX_REGION_SIZE = 1n << 40n;

interface Placeholder {
  address: unknown;
  length: number;
}

// When a region is unmapped, JS objects (a stale ring view held by a device) may still
// point into it. Instead of munmap, which would turn such an access into a crash, the
// range is replaced by private anonymous memory: the guest's pages are released at once,
// a stale access reads zeros, and the placeholder is unmapped when the last ArrayBuffer
// over it has been collected.
const placeholders = new FinalizationRegistry<Placeholder>((placeholder) => {
  libc().munmap(placeholder.address, placeholder.length);
});

/** Counters of host mappings, for the leak tests and metrics. */
export const mappingStats = { mapped: 0, unmapped: 0 };

function mapPiece(fd: number, offset: bigint, length: bigint): { bytes: Uint8Array; unmap(): void } {
  const c = libc();
  const alignedOffset = offset - (offset % PAGE_SIZE);
  const lead = Number(offset - alignedOffset);
  const mapLength = Number(length) + lead;
  const pointer = c.mmap(null, mapLength, PROT_READ | PROT_WRITE, MAP_SHARED, fd, Number(alignedOffset));
  if (c.address(pointer) === 0xffff_ffff_ffff_ffffn) {
    throw new VhostUserError(
      'host-failure',
      `mmap of ${mapLength} bytes at offset ${alignedOffset} failed: errno ${c.errno()}`,
    );
  }
  const buffer = c.view(pointer, mapLength);
  mappingStats.mapped++;
  let mapped = true;
  return {
    bytes: new Uint8Array(buffer, lead, Number(length)),
    unmap() {
      if (!mapped) return;
      mapped = false;
      mappingStats.unmapped++;
      const flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE;
      const replaced = c.mmap(pointer, mapLength, PROT_READ | PROT_WRITE, flags, -1, 0);
      if (c.address(replaced) === 0xffff_ffff_ffff_ffffn) {
        // Could not swap in a placeholder: unmapping is still better than holding guest RAM.
        c.munmap(pointer, mapLength);
        return;
      }
      placeholders.register(buffer, { address: pointer, length: mapLength });
    },
  };
}

/**
 * Touching a shared mapping beyond the end of its file raises SIGBUS, which no JS code can
 * catch: the file must be a regular file (memfd, hugetlbfs, tmpfs) at least as long as
 * the region, and is sealed against shrinking where the frontend allowed sealing (QEMU's
 * memory-backend-memfd seals by default). A frontend that shares an unsealable file and
 * truncates it later can still crash the backend, as with every vhost-user backend.
 */
function checkBackingFile(fd: number, end: bigint): void {
  const c = libc();
  const stat = new Uint8Array(STAT_SIZE);
  if (c.fstat(fd, stat) !== 0) throw new VhostUserError('invalid-region', `fstat failed: errno ${c.errno()}`);
  const view = new DataView(stat.buffer);
  if ((view.getUint32(STAT_MODE, true) & S_IFMT) !== S_IFREG) {
    throw new VhostUserError('invalid-region', 'a memory region must be backed by a regular file or memfd');
  }
  const size = view.getBigInt64(STAT_ST_SIZE, true);
  if (size < end) {
    throw new VhostUserError(
      'invalid-region',
      `the region ends at 0x${end.toString(16)} beyond its file of 0x${size.toString(16)} bytes`,
    );
  }
  const seals = c.fcntl(fd, F_GET_SEALS, 0);
  if (seals >= 0 && !(seals & F_SEAL_SHRINK)) c.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK);
}

/**
 * Maps a region a frontend passed as an fd (`MAP_SHARED` at its mmap offset) as one or
 * more `MemoryRegion`s of at most REGION_PIECE_SIZE bytes. The fd stays the caller's.
 * Throws `VhostUserError` (`invalid-region`, `host-failure`); maps nothing when it throws.
 */
export function mapFdRegion(fd: number, region: RegionDescription): MemoryRegion[] {
  checkRegion(region);
  checkBackingFile(fd, region.mmapOffset + region.size);
  const pieces: MemoryRegion[] = [];
  try {
    for (let at = 0n; at < region.size; at += REGION_PIECE_SIZE) {
      const length = region.size - at < REGION_PIECE_SIZE ? region.size - at : REGION_PIECE_SIZE;
      const piece = mapPiece(fd, region.mmapOffset + at, length);
      pieces.push({
        guestAddress: region.guestAddress + at,
        userAddress: region.userAddress + at,
        bytes: piece.bytes,
        unmap: piece.unmap,
      });
    }
  } catch (error) {
    for (const piece of pieces) piece.unmap?.();
    throw error;
  }
  return pieces;
}

/** Rejects regions no frontend can mean: empty, huge, or wrapping 64-bit space. */
export function checkRegion(region: RegionDescription): void {
  const limit = 1n << 64n;
  if (region.size === 0n || region.size > MAX_REGION_SIZE) {
    throw new VhostUserError(
      'invalid-region',
      `region size 0x${region.size.toString(16)} is empty or above 1 TiB`,
    );
  }
  if (
    region.guestAddress + region.size > limit ||
    region.userAddress + region.size > limit ||
    region.mmapOffset + region.size > limit
  ) {
    throw new VhostUserError(
      'invalid-region',
      `region at 0x${region.guestAddress.toString(16)} wraps past 2^64`,
    );
  }
}

/** A region a Xen-aware frontend flagged (XEN_MMAP protocol feature), for the mapper. */
export interface XenRegionRequest extends RegionDescription {
  /** The fd that came with the region (a privcmd or gntdev fd); closed after `map` returns. */
  readonly fd: number;
}

/**
 * Maps Xen-flagged regions (foreign memory of `domid`, or its grants). Supplied by the Xen
 * integration; `map` throws when it cannot. The pieces it returns are unmapped through
 * their own `unmap` when the frontend removes the region or goes away.
 */
export interface XenRegionMapper {
  map(request: XenRegionRequest): MemoryRegion[];
}
