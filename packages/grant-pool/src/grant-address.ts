// Linux's xen-grant-dma (drivers/xen/grant-dma-ops.c) puts grant references on the ring as
// DMA addresses: bit 63 set, the grant reference in bits 12..62, the page offset in bits 0..11.
// A buffer of several pages uses consecutive grant references.

export const GRANT_ADDRESS_FLAG = 1n << 63n;
export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 1 << PAGE_SHIFT;
const offsetMask = BigInt(PAGE_SIZE - 1);

export function isGrantAddress(address: bigint): boolean {
  return (address & GRANT_ADDRESS_FLAG) !== 0n;
}

export function encodeGrantAddress(gref: number, offset = 0): bigint {
  if (!Number.isInteger(gref) || gref < 0 || gref > 0xffff_ffff)
    throw new RangeError(`gref ${gref} out of range`);
  if (!Number.isInteger(offset) || offset < 0 || offset >= PAGE_SIZE)
    throw new RangeError(`offset ${offset} out of range`);
  return GRANT_ADDRESS_FLAG | (BigInt(gref) << BigInt(PAGE_SHIFT)) | BigInt(offset);
}

/** Decodes a grant DMA address; `gref` may exceed 32 bits only in a hostile address (the caller bounds it). */
export function decodeGrantAddress(address: bigint): { gref: bigint; offset: number } {
  return {
    gref: (address & ~GRANT_ADDRESS_FLAG) >> BigInt(PAGE_SHIFT),
    offset: Number(address & offsetMask),
  };
}
