import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { GuestMemory } from '@xvio/grant-pool';
import type { DeviceController, VirtioDevice, Virtqueue, VirtqueueStats } from '@xvio/transport';
import { Counter, Gauge, Registry } from 'prom-client';

/** Device health counters every transport can report (DeviceController keeps all of them). */
export interface HealthCounters {
  faults: number;
  needsReset: number;
  resets?: number;
  activations?: number;
  ignoredKicks?: number;
}

/**
 * One served device as metrics see it, read at scrape time. Getters, because a transport
 * replaces the device, its queues and its memory on every connection or reset.
 */
export interface MetricSource {
  /** The guest: a domain ID or a name (`guest1`, `vhost-user:/run/rng.sock`). */
  readonly domain: string;
  device(): VirtioDevice | undefined;
  queues(): readonly (Virtqueue | undefined)[];
  memory(): GuestMemory | undefined;
  health(): HealthCounters;
  status?(): number;
  /** The transport's own counters (vhost-user messages, kicks, ...). */
  transport?(): Readonly<Record<string, number>>;
}

/** A device behind a DeviceController (MMIO, PCI, XenBus and the demo's in-process driver). */
export function controllerSource(domain: string, controller: DeviceController): MetricSource {
  return {
    domain,
    device: () => controller.device,
    queues: () => Array.from({ length: controller.queueCount }, (_, index) => controller.runningQueue(index)),
    memory: () => controller.memory,
    health: () => controller.metrics,
    status: () => controller.status,
  };
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
    const live = () =>
      sources().flatMap((source) => {
        const device = source.device();
        return device
          ? [{ source, device, labels: { domain: source.domain, device: device.name } as Labels }]
          : [];
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
            if (Number.isFinite(value) && value >= 0) this.inc(labels, value);
          });
        },
      });
    const perQueue =
      (read: (stats: VirtqueueStats) => number) => (add: (labels: Labels, value: number) => void) => {
        for (const { source, labels } of live()) {
          for (const [index, queue] of source.queues().entries()) {
            if (queue) add({ ...labels, queue: String(index) }, read(queue.stats));
          }
        }
      };
    const queueLabels = ['domain', 'device', 'queue'];
    counter(
      'xvio_queue_requests_total',
      'chains completed (used elements)',
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
    const perHealth = (key: keyof HealthCounters) => (add: (labels: Labels, value: number) => void) => {
      for (const { source, labels } of live()) add(labels, source.health()[key] ?? 0);
    };
    counter(
      'xvio_device_faults_total',
      'guest faults that broke a ring or the device',
      deviceNames,
      perHealth('faults'),
    );
    counter(
      'xvio_device_needs_reset_total',
      'times the device entered DEVICE_NEEDS_RESET',
      deviceNames,
      perHealth('needsReset'),
    );
    counter('xvio_device_resets_total', 'device resets', deviceNames, perHealth('resets'));
    counter(
      'xvio_device_activations_total',
      'times the driver started the device',
      deviceNames,
      perHealth('activations'),
    );
    counter(
      'xvio_device_ignored_kicks_total',
      'kicks for a queue that was not running',
      deviceNames,
      perHealth('ignoredKicks'),
    );
    const memoryCounter = (name: string, help: string, key: 'maps' | 'unmaps' | 'copies' | 'faults') =>
      counter(name, help, ['domain', 'device', 'strategy'], (add) => {
        for (const { source, labels } of live()) {
          const memory = source.memory();
          if (memory) add({ ...labels, strategy: memory.kind }, memory.counters[key]);
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
        for (const { source, labels } of live()) {
          const memory = source.memory();
          if (!memory) continue;
          add({ ...labels, strategy: memory.kind, direction: 'read' }, memory.counters.bytesRead);
          add({ ...labels, strategy: memory.kind, direction: 'write' }, memory.counters.bytesWritten);
        }
      },
    );
    // Strategy, device and transport counters are open sets: one gauge each, with the
    // counter's name as a label, keeps the metric names fixed.
    const openSet = (
      name: string,
      help: string,
      extraLabel: string | undefined,
      read: (
        entry: ReturnType<typeof live>[number],
      ) => [Labels, Readonly<Record<string, unknown>>] | undefined,
    ) =>
      new Gauge({
        name,
        help,
        labelNames: ['domain', 'device', ...(extraLabel ? [extraLabel] : []), 'counter'],
        registers: [this.registry],
        collect() {
          this.reset();
          for (const entry of live()) {
            const found = read(entry);
            if (!found) continue;
            const [labels, values] = found;
            for (const [key, value] of Object.entries(values)) {
              if (
                typeof value === 'number' &&
                Number.isFinite(value) &&
                !(extraLabel === 'strategy' && STANDARD_MEMORY_COUNTERS.has(key))
              ) {
                this.set({ ...labels, counter: snakeCase(key) }, value);
              }
            }
          }
        },
      });
    openSet(
      'xvio_memory_strategy_counter',
      'counters specific to a memory strategy (e.g. persistent pool hits)',
      'strategy',
      ({ source, labels }) => {
        const memory = source.memory();
        return memory
          ? [{ ...labels, strategy: memory.kind }, memory.counters as unknown as Record<string, unknown>]
          : undefined;
      },
    );
    openSet(
      'xvio_device_counter',
      "the device's own counters (device.metrics())",
      undefined,
      ({ device, labels }) => [labels, device.metrics?.() ?? {}],
    );
    openSet(
      'xvio_transport_counter',
      "the transport's counters (vhost-user messages, kicks, calls...)",
      undefined,
      ({ source, labels }) => (source.transport ? [labels, source.transport()] : undefined),
    );
    new Gauge({
      name: 'xvio_device_status',
      help: 'the device status byte (virtio spec 2.1)',
      labelNames: deviceNames,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const { source, labels } of live()) {
          if (source.status) this.set(labels, source.status());
        }
      },
    });
  }

  add(source: MetricSource): () => void {
    this.sources.add(source);
    return () => {
      this.sources.delete(source);
    };
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
