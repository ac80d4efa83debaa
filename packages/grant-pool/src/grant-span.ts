import { GNTST_bad_domain, GNTST_bad_gntref, GNTST_okay, GrantError, XenError } from '@xvio/xen';
import { GRANT_ADDRESS_FLAG, PAGE_SIZE } from './grant-address.js';
import { MAX_RANGE_LENGTH } from './guest-memory.js';
import type { MemoryFaultCode } from './memory-errors.js';

/** Grant references are `grant_ref_t`, a u32, in every grant-table ABI (xen/include/public/grant_table.h). */
export const MAX_GRANT_REF = 0xffff_ffff;

/** The grant pages one guest range touches: `pages` consecutive references from `firstRef`. */
export interface GrantSpan {
  readonly firstRef: number;
  /** Offset of the first byte in the first page. */
  readonly offset: number;
  readonly length: number;
  /** Pages touched; 0 for a zero-length range (nothing is mapped or copied for it). */
  readonly pages: number;
}

export function isValidLength(length: number): boolean {
  return Number.isInteger(length) && length >= 0 && length <= MAX_RANGE_LENGTH;
}

/**
 * Decodes a grant DMA address range (Linux drivers/xen/grant-dma-ops.c: bit 63, gref in bits
 * 12..62, offset in bits 0..11; a multi-page buffer uses consecutive references). Everything
 * here is guest-controlled: lengths beyond 32 bits and references beyond a u32 are faults
 * before anything is mapped.
 */
export function grantSpan(address: bigint, length: number): GrantSpan | MemoryFaultCode {
  if (!isValidLength(length) || address < 0n || address > MAX_ADDRESS) return 'invalid-range';
  // Under grant usage the device can reach nothing but grants: a guest-physical address
  // points at memory this backend has no access to.
  if ((address & GRANT_ADDRESS_FLAG) === 0n) return 'unmapped';
  // Bits 12..62 hold the reference; one above the u32 range is out of every grant table.
  const high = address & REF_OVERFLOW_MASK;
  const offset = Number(address & OFFSET_MASK);
  const pages = length === 0 ? 0 : Math.ceil((offset + length) / PAGE_SIZE);
  if (high !== 0n) return 'grant-out-of-range';
  const firstRef = Number((address >> PAGE_SHIFT_BIG) & REF_MASK);
  if (firstRef + Math.max(pages, 1) - 1 > MAX_GRANT_REF) return 'grant-out-of-range';
  return { firstRef, offset, length, pages };
}

const MAX_ADDRESS = (1n << 64n) - 1n;
const PAGE_SHIFT_BIG = 12n;
const OFFSET_MASK = 0xfffn;
const REF_MASK = 0xffff_ffffn;
/** Address bits 44..62: a reference of 2^32 or more. */
const REF_OVERFLOW_MASK = ((1n << 63n) - 1n) & ~((1n << 44n) - 1n);

/** A guest-physical range as frames: `pages` frames from `firstFrame`. */
export interface FrameSpan {
  readonly firstFrame: bigint;
  readonly offset: number;
  readonly length: number;
  readonly pages: number;
}

export function frameSpan(address: bigint, length: number): FrameSpan | MemoryFaultCode {
  if (
    !isValidLength(length) ||
    address < 0n ||
    address >= 1n << 64n ||
    address + BigInt(length) > 1n << 64n
  ) {
    return 'invalid-range';
  }
  const offset = Number(address % BigInt(PAGE_SIZE));
  const pages = length === 0 ? 0 : Math.ceil((offset + length) / PAGE_SIZE);
  return { firstFrame: address / BigInt(PAGE_SIZE), offset, length, pages };
}

/**
 * The guest fault a failed grant operation stands for. `GNTST_bad_gntref`: beyond the
 * granter's table; `permission_denied`, `bad_page` and the rest: not granted to us (or
 * revoked). A vanished frontend domain or a failing host service is a host failure.
 */
export function grantStatusFault(status: number): MemoryFaultCode {
  if (status === GNTST_bad_gntref) return 'grant-out-of-range';
  if (status === GNTST_bad_domain) return 'host-failure';
  return 'grant-not-permitted';
}

/** The first failing op of a `GrantError`, or undefined when the error is not per-op. */
export function firstFailedOp(error: unknown): { index: number; status: number } | undefined {
  if (!GrantError.isInstance(error)) return undefined;
  const index = error.status.findIndex((status) => status !== GNTST_okay);
  return index < 0 ? undefined : { index, status: error.status[index] as number };
}

/** Whether an error came from the Xen layer (so it can be turned into a typed memory fault). */
export function isXenFailure(error: unknown): error is XenError {
  return XenError.isInstance(error);
}
