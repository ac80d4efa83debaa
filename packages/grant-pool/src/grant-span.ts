import { GNTST_bad_domain, GNTST_bad_gntref, GNTST_okay, GrantError, XenError } from '@xvio/xen';
import { PAGE_SHIFT, PAGE_SIZE } from './grant-address.js';
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
  // No BigInt arithmetic (this runs for every buffer of every request; a shift allocates):
  // `low` is exact, and the double nearest the address is within 2^11 of it below 2^64, so
  // rounding recovers the high half exactly. `high` is negative below 0 and 2^32 or more
  // from 2^64 on (Infinity for a huge one).
  const low = Number(BigInt.asUintN(32, address));
  const high = Math.round((Number(address) - low) / 0x1_0000_0000);
  return grantSpanOfHalves(low, high, length);
}

/**
 * `grantSpan` of the address whose low and high 32 bits are `low` and `high` (as a
 * descriptor holds it: no BigInt). Halves that are not u32 values are an invalid range.
 */
export function grantSpanOfHalves(low: number, high: number, length: number): GrantSpan | MemoryFaultCode {
  const span: GrantSpanFields = { firstRef: 0, offset: 0, length: 0, pages: 0 };
  return decodeGrantSpan(low, high, length, span) ?? span;
}

/** A `GrantSpan` a caller reuses (a decode per request without an allocation). */
export interface GrantSpanFields {
  firstRef: number;
  offset: number;
  length: number;
  pages: number;
}

/**
 * `grantSpanOfHalves` into `into`: undefined when the range decodes (then `into` holds it),
 * else the fault (then `into` is unchanged).
 */
export function decodeGrantSpan(
  low: number,
  high: number,
  length: number,
  into: GrantSpanFields,
): MemoryFaultCode | undefined {
  if (!isValidLength(length)) return 'invalid-range';
  if (!(high >= 0 && high <= 0xffff_ffff && low >= 0 && low <= 0xffff_ffff)) return 'invalid-range';
  if (!Number.isInteger(high) || !Number.isInteger(low)) return 'invalid-range';
  // Under grant usage the device can reach nothing but grants: a guest-physical address
  // points at memory this backend has no access to.
  if (high < 0x8000_0000) return 'unmapped';
  const offset = low & PAGE_OFFSET_MASK;
  const end = offset + length;
  // Integer arithmetic while the sum fits 31 bits (every buffer but a near-4 GiB one).
  const pages =
    length === 0
      ? 0
      : end < 0x7fff_0000
        ? (end + PAGE_OFFSET_MASK) >> PAGE_SHIFT
        : Math.ceil(end / PAGE_SIZE);
  // Bits 12..62 hold the reference; one above the u32 range (address bits 44..62, bits 12..30
  // of `high`) is out of every grant table.
  if ((high & REF_OVERFLOW_HIGH) !== 0) return 'grant-out-of-range';
  const firstRef = (high & 0xfff) * 0x10_0000 + (low >>> PAGE_SHIFT);
  if (firstRef + Math.max(pages, 1) - 1 > MAX_GRANT_REF) return 'grant-out-of-range';
  into.firstRef = firstRef;
  into.offset = offset;
  into.length = length;
  into.pages = pages;
  return undefined;
}

const PAGE_OFFSET_MASK = PAGE_SIZE - 1;
/** Address bits 44..62 as bits of its high 32-bit half: a reference of 2^32 or more. */
const REF_OVERFLOW_HIGH = 0x7fff_f000;

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
