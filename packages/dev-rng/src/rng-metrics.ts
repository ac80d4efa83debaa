/** Counters of one rng device. Monotonic: compare snapshots to get rates. */
export class RngMetrics {
  /** Requests completed (including bad ones, with length 0). */
  requests = 0;
  /** Random bytes written into guest buffers. */
  bytes = 0;
  /** Times the queue waited because the rate limit was used up. */
  rateLimitedWaits = 0;
  /** Times the queue waited because the source had no bytes ready. */
  sourceWaits = 0;
  /** Requests whose buffers the device could not reach (read-only or revoked grant), completed with 0. */
  faults = 0;
  /** Requests the spec forbids (driver-readable buffers, 5.4.6.1), completed with 0. */
  badRequests = 0;

  snapshot(): Readonly<Record<string, number>> {
    return {
      requests: this.requests,
      bytes: this.bytes,
      rateLimitedWaits: this.rateLimitedWaits,
      sourceWaits: this.sourceWaits,
      faults: this.faults,
      badRequests: this.badRequests,
    };
  }
}
