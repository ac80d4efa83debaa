import type { MemoryFaultCode } from './memory-errors.js';

/** What an access intends to do with guest memory; a write needs a writable mapping or grant. */
export type MemoryAccess = 'read' | 'write';

/**
 * Ordering between our accesses to shared rings and the other side's.
 * `release` before publishing an index, `acquire` after reading one, `seq-cst` between
 * publishing an event index and re-reading the other side's index (virtio spec 2.7.10).
 */
export type FenceOrder = 'acquire' | 'release' | 'seq-cst';

/** One guest buffer: a descriptor's address and length and the direction the device uses it in. */
export interface MemoryRange {
  readonly address: bigint;
  readonly length: number;
  readonly access: MemoryAccess;
  /**
   * Optional: `address` as its low and high 32 bits, when the producer holds it that way (a
   * descriptor chain does). Both or neither; they must equal `address`. Strategies may
   * decode these instead of `address`, with no BigInt arithmetic.
   */
  readonly addressLow?: number;
  readonly addressHigh?: number;
}

/**
 * Host views of a batch of guest ranges, valid until `release`.
 * `segments[i]` covers `ranges[i]` in order; it holds more than one view where the range
 * crosses a page or region boundary that is not contiguous on the host.
 */
export interface MappedRanges {
  readonly segments: readonly (readonly Uint8Array[])[];
  /**
   * Ends the access. `written[i]` says how many bytes of range i the device wrote (a
   * strategy that copies, like grant copy, copies back only those). Mappings made for this
   * batch are undone before `release` returns, so a completion published afterwards never
   * finds a grant still in use. A strategy that copies back (grant copy) throws
   * `GuestMemoryError` (`grant-not-permitted`) when the copy-back fails because the guest
   * revoked a grant mid-request; the request then completes with length 0. Idempotent.
   */
  release(written?: readonly number[]): void;
}

/** Counters every strategy keeps; strategies add their own beside these. */
export interface MemoryCounters {
  maps: number;
  unmaps: number;
  copies: number;
  bytesRead: number;
  bytesWritten: number;
  faults: number;
}

/**
 * Guest memory as a backend reaches it. Addresses are 64-bit `bigint`s as the ring carries
 * them (grant addresses have bit 63 set: never narrow them to a number).
 */
export interface GuestMemory {
  /** Which strategy this is (`test`, `regions`, `foreign`, `grant-map`, `grant-copy`, `persistent-pool`). */
  readonly kind: string;
  readonly counters: MemoryCounters;
  /** An explicit answer: `undefined` when the whole range can be accessed that way, else the fault. */
  check(address: bigint, length: number, access: MemoryAccess): MemoryFaultCode | undefined;
  /** Copies guest bytes out. Throws `GuestMemoryError`. */
  read(address: bigint, target: Uint8Array): void;
  /** Copies bytes into the guest. Throws `GuestMemoryError` (`read-only` on a read-only grant). */
  write(address: bigint, source: Uint8Array): void;
  /**
   * A long-lived zero-copy view, for rings: mapped once and kept until `unmapAll`.
   * Throws `GuestMemoryError` (`not-contiguous` when the range is not contiguous on the host).
   */
  view(address: bigint, length: number, access: MemoryAccess): Uint8Array;
  /** Maps a request's buffers in one batch. Throws `GuestMemoryError`; maps nothing when it throws. */
  map(ranges: readonly MemoryRange[]): MappedRanges;
  fence(order: FenceOrder): void;
  /** Drops every mapping (device reset or disconnect). The memory may be used again afterwards. */
  unmapAll(): void;
  /** Mappings currently live (views and request mappings); zero after `unmapAll`. */
  liveMappings(): number;
}

/** Largest single buffer any strategy accepts: descriptor lengths are 32-bit (virtio spec 2.7.5). */
export const MAX_RANGE_LENGTH = 0xffff_ffff;
