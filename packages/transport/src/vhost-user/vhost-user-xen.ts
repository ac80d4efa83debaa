import {
  createForeignMappingMemory,
  createGrantCopyMemory,
  createGrantMapMemory,
  createPersistentPoolMemory,
  DEFAULT_MAX_REQUEST_PAGES,
  type FenceOrder,
  GRANT_ADDRESS_FLAG,
  type GuestMemory,
  type MappedRanges,
  type MemoryAccess,
  type MemoryCounters,
  type MemoryFaultCode,
  type MemoryRange,
  type MemoryRegion,
} from '@xvio/grant-pool';
import type { ForeignMapping, ForeignMemory, GrantMapping, GrantTables } from '@xvio/xen';
import { VhostUserError } from './vhost-user-errors.js';
import type { XenRegionMapper, XenRegionRequest } from './vhost-user-memory.js';
import {
  XEN_MMAP_FOREIGN,
  XEN_MMAP_GRANT,
  XEN_MMAP_NO_ADVANCE_MAP,
  XEN_MMAP_NO_ADVANCE_MAP_RUST_VMM,
} from './vhost-user-wire.js';

const PAGE = 4096n;
/** Frames per foreign mapping: a region is mapped in pieces of at most 256 MiB. */
const FRAMES_PER_PIECE = 65_536;
/** Grant references are u32 (`grant_ref_t`, xen/include/public/grant_table.h). */
const MAX_GRANT_REF = 0xffff_ffffn;
/** Xen domain ids below DOMID_FIRST_RESERVED (0x7ff0) name domains. */
const MAX_DOMID = 0x7fef;
/** NO_ADVANCE_MAP as the spec (bit 8) and rust-vmm (0x8) spell it. */
const NO_ADVANCE_MAP = XEN_MMAP_NO_ADVANCE_MAP | XEN_MMAP_NO_ADVANCE_MAP_RUST_VMM;
/** Default bound on a grant region mapped in advance: 4 MiB (rings are a few pages). */
export const DEFAULT_MAX_ADVANCE_PAGES = 1024;

/** How the pages of a grant region that is not mapped in advance are reached. */
export type XenGrantStrategy = 'grant-map' | 'grant-copy' | 'persistent-pool';

export interface XenRegionMapperOptions {
  /** Maps foreign regions (privcmd). Without it, foreign regions are refused. */
  readonly foreignMemory?: ForeignMemory;
  /** Maps grant regions (gntdev). Without it, grant regions are refused. */
  readonly grants?: GrantTables;
  /**
   * Grant regions not mapped in advance: `grant-map` (default) maps each request's pages and
   * unmaps them before the used element is published (what Linux's xen-grant-dma needs, as
   * it revokes grants on completion); `grant-copy` copies through bounce buffers instead;
   * `persistent-pool` keeps the pages of `poolRefs` mapped across requests (a cooperating
   * frontend that never revokes them) and maps others per request.
   */
  readonly grantStrategy?: XenGrantStrategy;
  /** The pool's references for `persistent-pool`. */
  readonly poolRefs?: readonly number[];
  /** Most pages one request (or ring view) maps in a grant region. Default 4096 (16 MiB). */
  readonly maxRequestPages?: number;
  /**
   * Most pages of a grant region mapped in advance (one the frontend did not flag
   * NO_ADVANCE_MAP). A larger one is mapped per request instead. Default 1024 (4 MiB).
   */
  readonly maxAdvancePages?: number;
}

/**
 * Maps the regions a Xen vhost-user frontend (VHOST_USER_PROTOCOL_F_XEN_MMAP) flags:
 *
 * - *foreign* (bit 0): the guest-physical range of `domid` through privcmd
 *   (`ForeignMemory.map`), page-aligned, in pieces of at most 256 MiB, unmapped when the
 *   frontend removes the region; with NO_ADVANCE_MAP, on demand in bounded chunks (grant-pool's
 *   foreign strategy);
 * - *grant* (bit 1): guest addresses are grant DMA addresses, as vm-memory's Xen grant
 *   regions read them: page `(address & ~(1 << 63)) >> 12` of the address space is grant
 *   reference of that number (Linux's xen-grant-dma puts `1<<63 | gref<<12 | offset` on the
 *   ring). With NO_ADVANCE_MAP (bit 8, or 0x8 as rust-vmm sends it), or when larger than
 *   `maxAdvancePages`, the region is an on-demand region: each access maps what it needs
 *   through `@xvio/grant-pool`'s grant strategy (readable buffers read-only, so a read-only
 *   grant is never written) and unmaps it when the request is released. Otherwise its
 *   references are mapped once, writable (rings), until the region is removed.
 *
 * Throws `VhostUserError` (`invalid-region`, `xen-mapping-unavailable`) for a region it
 * cannot take, and maps nothing then.
 */
export function createXenRegionMapper(options: XenRegionMapperOptions): XenRegionMapper {
  return {
    map(request: XenRegionRequest): MemoryRegion[] {
      const flags = request.xenFlags;
      if ((flags & XEN_MMAP_FOREIGN) !== 0 && (flags & XEN_MMAP_GRANT) !== 0) {
        throw new VhostUserError(
          'invalid-region',
          `xen mmap flags 0x${flags.toString(16)}: foreign and grant`,
        );
      }
      if (request.domid > MAX_DOMID) {
        throw new VhostUserError('invalid-region', `domid ${request.domid} is reserved`);
      }
      if (flags & XEN_MMAP_GRANT) return mapGrantRegion(options, request);
      if (!(flags & XEN_MMAP_FOREIGN)) {
        throw new VhostUserError('invalid-region', `xen mmap flags 0x${flags.toString(16)}`);
      }
      return mapForeignRegion(options, request);
    },
  };
}

function mapForeignRegion(options: XenRegionMapperOptions, request: XenRegionRequest): MemoryRegion[] {
  const foreignMemory = options.foreignMemory;
  if (!foreignMemory) {
    throw new VhostUserError(
      'xen-mapping-unavailable',
      `foreign region of domain ${request.domid}: this backend maps no foreign memory`,
    );
  }
  if (request.xenFlags & NO_ADVANCE_MAP) {
    // The frontend may not allow the whole region at once (vhost-user.rst, bit 8): frames are
    // mapped in bounded chunks as accesses reach them (grant-pool's foreign strategy).
    const memory = createForeignMappingMemory({
      foreignMemory,
      domid: request.domid,
      maxRequestPages: options.maxRequestPages ?? DEFAULT_MAX_REQUEST_PAGES,
    });
    return [onDemandRegion(request, memory)];
  }
  if (request.guestAddress % PAGE !== 0n || request.size % PAGE !== 0n || request.userAddress % PAGE !== 0n) {
    throw new VhostUserError(
      'invalid-region',
      'a foreign region must be page-aligned in guest and frontend space',
    );
  }
  const firstFrame = request.guestAddress / PAGE;
  const frames = Number(request.size / PAGE);
  const pieces: MemoryRegion[] = [];
  const mappings: ForeignMapping[] = [];
  try {
    for (let done = 0; done < frames; done += FRAMES_PER_PIECE) {
      const count = Math.min(FRAMES_PER_PIECE, frames - done);
      const list = Array.from({ length: count }, (_, i) => firstFrame + BigInt(done + i));
      const mapping = foreignMemory.map(request.domid, list, { writable: true });
      mappings.push(mapping);
      const offset = BigInt(done) * PAGE;
      pieces.push({
        guestAddress: request.guestAddress + offset,
        userAddress: request.userAddress + offset,
        bytes: mapping.bytes,
        unmap: () => mapping.unmap(),
      });
    }
  } catch (error) {
    for (const mapping of mappings) mapping.unmap();
    throw error;
  }
  return pieces;
}

/** Grant reference named by a guest address of a grant region. */
function grantRef(address: bigint): bigint {
  return (address & ~GRANT_ADDRESS_FLAG) / PAGE;
}

function mapGrantRegion(options: XenRegionMapperOptions, request: XenRegionRequest): MemoryRegion[] {
  const grants = options.grants;
  if (!grants) {
    throw new VhostUserError(
      'xen-mapping-unavailable',
      `grant region of domain ${request.domid}: this backend maps no grants`,
    );
  }
  if (request.size <= 0n || request.guestAddress < 0n) {
    throw new VhostUserError('invalid-region', `grant region of 0x${request.size.toString(16)} bytes`);
  }
  const start = request.guestAddress;
  const last = start + request.size - 1n;
  // vm-memory maps a grant region through the frontend's gntdev fd at offset 0; an offset
  // means a layout this backend does not know.
  if (request.mmapOffset !== 0n) {
    throw new VhostUserError(
      'invalid-region',
      `a grant region has mmap offset 0x${request.mmapOffset.toString(16)}`,
    );
  }
  // Bit 63 only marks grant addresses: a region across it would name the same references twice.
  if ((start & GRANT_ADDRESS_FLAG) !== (last & GRANT_ADDRESS_FLAG)) {
    throw new VhostUserError('invalid-region', `grant region at 0x${start.toString(16)} crosses bit 63`);
  }
  if (grantRef(last) > MAX_GRANT_REF) {
    throw new VhostUserError(
      'invalid-region',
      `grant region at 0x${start.toString(16)} names references beyond 2^32`,
    );
  }
  const firstRef = grantRef(start);
  const pages = Number(grantRef(last) - firstRef) + 1;
  const advance =
    (request.xenFlags & NO_ADVANCE_MAP) === 0 &&
    pages <= (options.maxAdvancePages ?? DEFAULT_MAX_ADVANCE_PAGES);
  if (advance) {
    // Rings: mapped once, writable (the used ring is written), until the region goes.
    let mapping: GrantMapping;
    try {
      mapping = grants.map({
        domid: request.domid,
        refs: Array.from({ length: pages }, (_, i) => Number(firstRef) + i),
        writable: true,
      });
    } catch (error) {
      throw new VhostUserError(
        'invalid-region',
        `grant region of domain ${request.domid} at 0x${start.toString(16)} cannot be mapped writable in advance: ${(error as Error).message}`,
        { cause: error },
      );
    }
    const offset = Number(start % PAGE);
    return [
      {
        guestAddress: start,
        userAddress: request.userAddress,
        bytes: mapping.bytes.subarray(offset, offset + Number(request.size)),
        unmap: () => {
          if (mapping.mapped) mapping.unmap();
        },
      },
    ];
  }
  return [
    onDemandRegion(request, new GrantRegionMemory(grantStrategyMemory(options, grants, request.domid))),
  ];
}

/** A region reached through `memory` per access; its mappings go when the region does. */
function onDemandRegion(request: XenRegionRequest, memory: GuestMemory): MemoryRegion {
  return {
    guestAddress: request.guestAddress,
    userAddress: request.userAddress,
    bytes: new Uint8Array(0),
    onDemand: { size: Number(request.size), memory },
    unmap: () => memory.unmapAll(),
  };
}

function grantStrategyMemory(
  options: XenRegionMapperOptions,
  grants: GrantTables,
  domid: number,
): GuestMemory {
  const maxRequestPages = options.maxRequestPages ?? DEFAULT_MAX_REQUEST_PAGES;
  switch (options.grantStrategy ?? 'grant-map') {
    case 'grant-map':
      return createGrantMapMemory({ grants, domid, maxRequestPages });
    case 'grant-copy':
      return createGrantCopyMemory({ grants, domid, maxRequestPages });
    case 'persistent-pool':
      return createPersistentPoolMemory({ grants, domid, maxRequestPages, poolRefs: options.poolRefs });
  }
}

/**
 * A grant region's memory: guest addresses of the region become grant DMA addresses (bit 63
 * set; for a region below 2^63 the reference is the page number) for the grant strategy,
 * which bounds, maps, checks permissions and counts.
 */
export class GrantRegionMemory implements GuestMemory {
  readonly kind: string;
  readonly counters: MemoryCounters;

  constructor(readonly strategy: GuestMemory) {
    this.kind = strategy.kind;
    this.counters = strategy.counters;
  }

  check(address: bigint, length: number, access: MemoryAccess): MemoryFaultCode | undefined {
    return this.strategy.check(address | GRANT_ADDRESS_FLAG, length, access);
  }

  read(address: bigint, target: Uint8Array): void {
    this.strategy.read(address | GRANT_ADDRESS_FLAG, target);
  }

  write(address: bigint, source: Uint8Array): void {
    this.strategy.write(address | GRANT_ADDRESS_FLAG, source);
  }

  view(address: bigint, length: number, access: MemoryAccess): Uint8Array {
    return this.strategy.view(address | GRANT_ADDRESS_FLAG, length, access);
  }

  map(ranges: readonly MemoryRange[]): MappedRanges {
    return this.strategy.map(
      ranges.map((range) => ({
        address: range.address | GRANT_ADDRESS_FLAG,
        length: range.length,
        access: range.access,
      })),
    );
  }

  fence(order: FenceOrder): void {
    this.strategy.fence(order);
  }

  unmapAll(): void {
    this.strategy.unmapAll();
  }

  liveMappings(): number {
    return this.strategy.liveMappings();
  }
}
