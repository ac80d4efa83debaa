import { describe, expect, it } from 'vitest';
import { ConsoleMetrics, ConsolePortMetrics } from './console-metrics.js';

describe('console metrics', () => {
  it('names port counters with the port prefix', () => {
    const port = new ConsolePortMetrics();
    port.txBytes += 5;
    const snapshot = port.snapshot('port3');
    expect(snapshot['port3.txBytes']).toBe(5);
    expect(Object.keys(snapshot).every((key) => key.startsWith('port3.'))).toBe(true);
  });

  it('snapshots device counters by value', () => {
    const metrics = new ConsoleMetrics();
    const before = metrics.snapshot();
    metrics.badControl++;
    expect(before.badControl).toBe(0);
    expect(metrics.snapshot().badControl).toBe(1);
  });
});
