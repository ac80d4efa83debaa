import { createTestMemory } from '@xvio/grant-pool';
import { DeviceController, type VirtioDevice } from '@xvio/transport';
import { describe, expect, it } from 'vitest';
import { controllerSource, serveMetrics, snakeCase, XvioMetrics } from './metrics-registry.js';

function stubDevice(counters: Record<string, number>): VirtioDevice {
  return {
    deviceType: 4,
    name: 'rng0',
    queueMaxSizes: [8],
    features: 0n,
    configSize: 0,
    readConfig: () => undefined,
    writeConfig: () => undefined,
    activate: () => undefined,
    notify: () => undefined,
    reset: () => undefined,
    metrics: () => counters,
  };
}

describe('metrics', () => {
  it('reads controller, memory and device counters at scrape time', async () => {
    const memory = createTestMemory(4096);
    const counters = { rateLimitedWaits: 2 };
    const controller = new DeviceController(stubDevice(counters), {
      memory,
      hooks: { interruptQueue: () => undefined, interruptConfig: () => undefined },
    });
    const metrics = new XvioMetrics();
    metrics.add(controllerSource('guest1', controller));
    controller.needsReset(new Error('bad ring'));
    memory.read(0n, new Uint8Array(16));
    counters.rateLimitedWaits = 5;
    const text = await metrics.text();
    expect(text).toContain('xvio_device_faults_total{domain="guest1",device="rng0"} 1');
    expect(text).toContain('xvio_device_needs_reset_total{domain="guest1",device="rng0"} 1');
    expect(text).toContain('xvio_memory_copies_total{domain="guest1",device="rng0",strategy="test"} 1');
    expect(text).toContain(
      'xvio_memory_bytes_total{domain="guest1",device="rng0",strategy="test",direction="read"} 16',
    );
    expect(text).toContain(
      'xvio_device_counter{domain="guest1",device="rng0",counter="rate_limited_waits"} 5',
    );
    // Zero counters are exported too, so every series exists from the first scrape.
    expect(text).toContain('xvio_device_resets_total{domain="guest1",device="rng0"} 0');
  });

  it('serves Prometheus text on 127.0.0.1 and 404 elsewhere', async () => {
    const metrics = new XvioMetrics();
    const server = await serveMetrics(metrics, 0);
    try {
      const response = await fetch(`http://127.0.0.1:${server.port}/metrics`);
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toContain('text/plain');
      expect(await response.text()).toContain('# TYPE xvio_queue_requests_total counter');
      expect((await fetch(`http://127.0.0.1:${server.port}/other`)).status).toBe(404);
    } finally {
      await server.close();
    }
  });

  it('turns camelCase counter names into snake_case', () => {
    expect(snakeCase('notificationsSuppressed')).toBe('notifications_suppressed');
    expect(snakeCase('tx.bytes')).toBe('tx_bytes');
  });
});
