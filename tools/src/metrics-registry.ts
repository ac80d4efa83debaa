import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { GuestMemory } from '@xvio/grant-pool';
import type { DeviceController } from '@xvio/transport';
import { Counter, Gauge, Registry } from 'prom-client';

/** One served device as metrics see it: who it serves, its controller, its memory. */
export interface MetricSource {
  /** The guest: a domain ID or a name (`guest1`, `vhost-user:/run/rng.sock`). */
  readonly domain: string;
  readonly controller: DeviceController;
  /** The memory the device reaches the guest through (the controller's, unless replaced). */
  readonly memory?: GuestMemory;
}

type Labels = Record<string, string>;

const STANDARD_MEMORY_COUNTERS = new Set(['maps', 'unmaps', 'copies', 'bytesRead', 'bytesWritten', 'faults']);

/** `rateLimitedWaits` -> `rate_limited_waits`, for Prometheus label values and names. */
export function snakeCase(name: string): string {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .replace(/[^A-Za-z0-9_]/g, '_')
    .toLowerCase();
}

/**
 * Prometheus metrics for a set of devices, read at scrape time from the counters the core
 * already keeps (controller metrics, queue stats, memory counters, device metrics()), so
 * serving a request costs nothing extra.
 */
export class XvioMetrics {
  readonly registry = new Registry();
  private readonly sources = new Set<MetricSource>();

  constructor() {
    const sources = () => [...this.sources];
    const deviceLabels = (source: MetricSource): Labels => ({
      domain: source.domain,
      device: source.controller.device.name,
    });
    const counter = (
      name: string,
      help: string,
      labelNames: string[],
      read: (add: (labels: Labels, value: number) => void) => void,
    ) =>
      new Counter({
        name,
        help,
        labelNames,
        registers: [this.registry],
        collect() {
          this.reset();
          read((labels, value) => {
            if (Number.isFinite(value) && value > 0) this.inc(labels, value);
          });
        },
      });
    const perQueue =
      (read: (stats: NonNullable<ReturnType<DeviceController['runningQueue']>>['stats']) => number) =>
      (add: (labels: Labels, value: number) => void) => {
        for (const source of sources()) {
          for (let index = 0; index < source.controller.queueCount; index++) {
            const queue = source.controller.runningQueue(index);
            if (queue) add({ ...deviceLabels(source), queue: String(index) }, read(queue.stats));
          }
        }
      };
    const queueLabels = ['domain', 'device', 'queue'];
    counter(
      'xvio_queue_requests_total',
      'chains completed (used elements published)',
      queueLabels,
      perQueue((s) => s.used),
    );
    counter(
      'xvio_queue_popped_total',
      'chains taken from the available ring',
      queueLabels,
      perQueue((s) => s.popped),
    );
    counter(
      'xvio_queue_notifications_sent_total',
      'used-buffer notifications the driver asked for',
      queueLabels,
      perQueue((s) => s.notificationsNeeded),
    );
    counter(
      'xvio_queue_notifications_suppressed_total',
      'used-buffer notifications saved by event suppression',
      queueLabels,
      perQueue((s) => s.notificationsSuppressed),
    );
    const deviceNames = ['domain', 'device'];
    const perController =
      (key: keyof DeviceController['metrics']) => (add: (labels: Labels, value: number) => void) => {
        for (const source of sources()) add(deviceLabels(source), source.controller.metrics[key]);
      };
    counter(
      'xvio_device_faults_total',
      'guest faults that broke a ring or the device',
      deviceNames,
      perController('faults'),
    );
    counter(
      'xvio_device_needs_reset_total',
      'times the device entered DEVICE_NEEDS_RESET',
      deviceNames,
      perController('needsReset'),
    );
    counter(
      'xvio_device_resets_total',
      'device resets by the driver or the backend',
      deviceNames,
      perController('resets'),
    );
    counter(
      'xvio_device_activations_total',
      'times the driver set DRIVER_OK',
      deviceNames,
      perController('activations'),
    );
    counter(
      'xvio_device_ignored_kicks_total',
      'kicks for a queue that was not running',
      deviceNames,
      perController('ignoredKicks'),
    );
    const memoryOf = (source: MetricSource) => source.memory ?? source.controller.memory;
    const memoryCounter = (name: string, help: string, key: 'maps' | 'unmaps' | 'copies' | 'faults') =>
      counter(name, help, ['domain', 'device', 'strategy'], (add) => {
        for (const source of sources()) {
          const memory = memoryOf(source);
          add({ ...deviceLabels(source), strategy: memory.kind }, memory.counters[key]);
        }
      });
    memoryCounter('xvio_memory_maps_total', 'guest ranges mapped', 'maps');
    memoryCounter('xvio_memory_unmaps_total', 'guest ranges unmapped', 'unmaps');
    memoryCounter('xvio_memory_copies_total', 'copies to or from guest memory', 'copies');
    memoryCounter(
      'xvio_memory_faults_total',
      'guest memory accesses refused (revoked, read-only, unmapped)',
      'faults',
    );
    counter(
      'xvio_memory_bytes_total',
      'bytes the device read from or wrote to guest buffers',
      ['domain', 'device', 'strategy', 'direction'],
      (add) => {
        for (const source of sources()) {
          const memory = memoryOf(source);
          const labels = { ...deviceLabels(source), strategy: memory.kind };
          add({ ...labels, direction: 'read' }, memory.counters.bytesRead);
          add({ ...labels, direction: 'write' }, memory.counters.bytesWritten);
        }
      },
    );
    // Strategy-specific counters (pool hits, grant batches, ...) and device counters are open
    // sets: one gauge each with the counter's name as a label keeps the metric names fixed.
    new Gauge({
      name: 'xvio_memory_strategy_counter',
      help: 'counters specific to a memory strategy (e.g. persistent pool hits)',
      labelNames: ['domain', 'device', 'strategy', 'counter'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const source of sources()) {
          const memory = memoryOf(source);
          for (const [key, value] of Object.entries(memory.counters as unknown as Record<string, unknown>)) {
            if (STANDARD_MEMORY_COUNTERS.has(key) || typeof value !== 'number') continue;
            this.set({ ...deviceLabels(source), strategy: memory.kind, counter: snakeCase(key) }, value);
          }
        }
      },
    });
    new Gauge({
      name: 'xvio_device_counter',
      help: "the device's own counters (requests, bytes, drops...) from device.metrics()",
      labelNames: ['domain', 'device', 'counter'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const source of sources()) {
          const values = source.controller.device.metrics?.() ?? {};
          for (const [key, value] of Object.entries(values)) {
            if (typeof value === 'number' && Number.isFinite(value)) {
              this.set({ ...deviceLabels(source), counter: snakeCase(key) }, value);
            }
          }
        }
      },
    });
    new Gauge({
      name: 'xvio_device_status',
      help: 'the device status byte (virtio spec 2.1)',
      labelNames: deviceNames,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const source of sources()) this.set(deviceLabels(source), source.controller.status);
      },
    });
  }

  add(source: MetricSource): () => void {
    this.sources.add(source);
    return () => this.sources.delete(source);
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}

export interface MetricsServer {
  readonly port: number;
  close(): Promise<void>;
}

/** Serves `/metrics` on 127.0.0.1 only: counters name guests and are nobody else's business. */
export function serveMetrics(metrics: XvioMetrics, port: number): Promise<MetricsServer> {
  const server: Server = createServer((request, response) => {
    if (request.method !== 'GET' || (request.url !== '/metrics' && request.url !== '/')) {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics\n');
      return;
    }
    metrics.text().then(
      (text) => response.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
      (error: unknown) => response.writeHead(500, { 'content-type': 'text/plain' }).end(`${String(error)}\n`),
    );
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve({
        port: (server.address() as AddressInfo).port,
        close: () => new Promise<void>((done) => server.close(() => done())),
      });
    });
  });
}
