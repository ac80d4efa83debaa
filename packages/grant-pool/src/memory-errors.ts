const marker = Symbol.for('xvio.grant-pool.error');

/** Why a guest memory access failed. Every code is a guest fault except `host-failure`. */
export type MemoryFaultCode =
  /** The range touches no mapped guest memory (beyond RAM, in a hole, or straddling two regions). */
  | 'unmapped'
  /** The range wraps past 2^64 or its length is negative, not an integer or too large. */
  | 'invalid-range'
  /** A write was attempted on memory granted read-only (GTF_readonly). */
  | 'read-only'
  /** A grant reference was never granted to this domain, or has been revoked. */
  | 'grant-not-permitted'
  /** A grant reference is beyond the guest's grant table. */
  | 'grant-out-of-range'
  /** A zero-copy view was asked for a range that is not contiguous in host memory. */
  | 'not-contiguous'
  /**
   * A request needs more pages than the strategy maps at once (its configured bound). The
   * request fails; the device goes on.
   */
  | 'too-large'
  /** The host could not perform the access (mmap failed, hypercall error); `cause` holds why. */
  | 'host-failure';

/** A typed failure to reach guest memory. `isInstance` recognises errors from any installed copy. */
export class GuestMemoryError extends Error {
  readonly [marker] = true;
  override readonly name = 'GuestMemoryError';
  readonly code: MemoryFaultCode;
  readonly address: bigint;
  readonly length: number;

  constructor(
    code: MemoryFaultCode,
    address: bigint,
    length: number,
    message?: string,
    options?: ErrorOptions,
  ) {
    super(message ?? `${code}: guest range 0x${address.toString(16)}+${length}`, options);
    this.code = code;
    this.address = address;
    this.length = length;
  }

  static isInstance(value: unknown): value is GuestMemoryError {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[marker] === true;
  }

  /** Whether the guest caused this fault (as opposed to a host failure). */
  get isGuestFault(): boolean {
    return this.code !== 'host-failure';
  }
}
