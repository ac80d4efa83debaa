import type { MemoryRegion } from '@xvio/grant-pool';
import type { ForeignMapping, ForeignMemory } from '@xvio/xen';
import { VhostUserError } from './vhost-user-errors.js';
import type { XenRegionMapper, XenRegionRequest } from './vhost-user-memory.js';
import { XEN_MMAP_FOREIGN, XEN_MMAP_GRANT } from './vhost-user-wire.js';

const PAGE = 4096n;
/** Frames per foreign mapping: a region is mapped in pieces of at most 256 MiB. */
const FRAMES_PER_PIECE = 65_536;

export interface XenRegionMapperOptions {
  readonly foreignMemory: ForeignMemory;
}

/**
 * Maps the regions a Xen vhost-user frontend (VHOST_USER_PROTOCOL_F_XEN_MMAP) flags as
 * foreign memory: the guest-physical range of `domid` is mapped through privcmd
 * (`ForeignMemory.map`), page-aligned, in pieces of at most 256 MiB, each unmapped when the
 * frontend removes the region. Grant regions, which must be mapped on demand per request
 * (their "addresses" are grant references), are refused with `xen-mapping-unavailable`.
 */
export function createXenRegionMapper(options: XenRegionMapperOptions): XenRegionMapper {
  return {
    map(request: XenRegionRequest): MemoryRegion[] {
      if (request.xenFlags & XEN_MMAP_GRANT) {
        throw new VhostUserError(
          'xen-mapping-unavailable',
          `grant-mapped region of domain ${request.domid} needs per-request grant mapping, which this backend does not offer over vhost-user`,
        );
      }
      if (!(request.xenFlags & XEN_MMAP_FOREIGN)) {
        throw new VhostUserError('invalid-region', `xen mmap flags 0x${request.xenFlags.toString(16)}`);
      }
      if (
        request.guestAddress % PAGE !== 0n ||
        request.size % PAGE !== 0n ||
        request.userAddress % PAGE !== 0n
      ) {
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
          const mapping = options.foreignMemory.map(request.domid, list, { writable: true });
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
    },
  };
}
