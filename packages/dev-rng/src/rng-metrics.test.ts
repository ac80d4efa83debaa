import { describe, expect, it } from 'vitest';
import { RngMetrics } from './rng-metrics.js';

describe('RngMetrics', () => {
  it('snapshots every counter under a flat name, independent of later changes', () => {
    const metrics = new RngMetrics();
    metrics.requests += 2;
    metrics.bytes += 64;
    const before = metrics.snapshot();
    metrics.rateLimitedWaits++;
    expect(before).toEqual({
      requests: 2,
      bytes: 64,
      rateLimitedWaits: 0,
      sourceWaits: 0,
      faults: 0,
      badRequests: 0,
    });
    expect(metrics.snapshot().rateLimitedWaits).toBe(1);
  });
});
