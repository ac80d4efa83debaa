import {
  CORE_FEATURES,
  type DescriptorChain,
  type DeviceContext,
  openChain,
  serviceQueue,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  type VirtioDevice,
} from '@xvio/transport';
import { parseRngConfig, type RngConfig, type RngConfigInput } from './rng-config.js';
import {
  createFileEntropySource,
  createOsEntropySource,
  createSeededEntropySource,
  type EntropySource,
} from './rng-host.js';
import { RngMetrics } from './rng-metrics.js';
import {
  RNG_CONFIG_SIZE,
  RNG_DEVICE_FEATURES,
  RNG_QUEUE_COUNT,
  RNG_REQUEST_QUEUE,
  VIRTIO_ID_ENTROPY,
} from './rng-wire.js';

/** Time as the device sees it; tests pass a fake one. Milliseconds. */
export interface RngClock {
  now(): number;
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** The process clock, looked up at each call so that fake timers installed later still apply. */
export const systemClock: RngClock = {
  now: () => Date.now(),
  setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/**
 * QEMU's virtio-rng rate limit: at most `maxBytes` in each window of `periodMs`. A window
 * starts with the first byte taken after the previous one ended, so an idle device does not
 * bank quota, and the limit is exact: no more than `maxBytes` in any one window.
 */
export class RateLimiter {
  private windowStart = Number.NEGATIVE_INFINITY;
  private remaining = 0;

  constructor(
    readonly maxBytes: number,
    readonly periodMs: number,
  ) {}

  /** Bytes that may be taken at `now`. */
  allowance(now: number): number {
    if (now >= this.windowStart + this.periodMs) return this.maxBytes;
    return this.remaining;
  }

  take(now: number, bytes: number): void {
    if (now >= this.windowStart + this.periodMs) {
      this.windowStart = now;
      this.remaining = this.maxBytes;
    }
    this.remaining -= Math.min(bytes, this.remaining);
  }

  /** Milliseconds until the allowance is refilled (0 when bytes may be taken now). */
  waitMs(now: number): number {
    if (this.allowance(now) > 0) return 0;
    return this.windowStart + this.periodMs - now;
  }
}

export interface RngDeviceOptions {
  /** The entropy source; by default the one the config names. The device closes it in `close`. */
  source?: EntropySource;
  clock?: RngClock;
}

/** Ring features the core implements; packed rings only once the core offers them. */
const RING_FEATURES =
  VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX | VIRTIO_F_INDIRECT_DESC | (CORE_FEATURES & VIRTIO_F_RING_PACKED);

/**
 * virtio-rng (spec 5.4): fills every device-writable buffer the driver posts with bytes from
 * the entropy source, no more than `maxBytesPerRequest` per request and no faster than the
 * rate limit. A request that cannot be served now stays in the ring (the chain is given back
 * with 'defer') and is served when the limit's window ends or the source has bytes: nothing
 * is dropped and nothing spins.
 */
export class RngDevice implements VirtioDevice {
  readonly deviceType = VIRTIO_ID_ENTROPY;
  readonly name: string;
  readonly queueMaxSizes: readonly number[];
  readonly features = RING_FEATURES | RNG_DEVICE_FEATURES;
  readonly configSize = RNG_CONFIG_SIZE;
  readonly config: RngConfig;
  readonly source: EntropySource;
  readonly counters = new RngMetrics();
  private readonly clock: RngClock;
  private readonly limiter: RateLimiter | undefined;
  private context: DeviceContext | undefined;
  private timer: unknown;
  private cancelSourceWait: (() => void) | undefined;

  constructor(config: RngConfig, options: RngDeviceOptions = {}) {
    this.config = config;
    this.name = config.name;
    this.queueMaxSizes = Array.from({ length: RNG_QUEUE_COUNT }, () => config.queueSize);
    this.source = options.source ?? createEntropySource(config.source);
    this.clock = options.clock ?? systemClock;
    this.limiter =
      config.maxBytes === undefined ? undefined : new RateLimiter(config.maxBytes, config.periodMs);
  }

  readConfig(_offset: number, target: Uint8Array): void {
    target.fill(0); // 5.4.4: no configuration space
  }

  writeConfig(): void {}

  activate(context: DeviceContext): void {
    this.stopWaiting();
    this.context = context;
    context.signal.addEventListener('abort', () => this.stopWaiting(), { once: true });
    this.service();
  }

  notify(queueIndex: number): void {
    if (queueIndex === RNG_REQUEST_QUEUE) this.service();
  }

  /**
   * Forgets the driver's state. The rate limit window is host policy and survives: a guest
   * cannot reset its way past the limit.
   */
  reset(): void {
    this.stopWaiting();
    this.context = undefined;
  }

  metrics(): Readonly<Record<string, number>> {
    return this.counters.snapshot();
  }

  /** Whether requests are parked until the rate limit or the source allows more. */
  get waiting(): 'rate-limit' | 'source' | undefined {
    if (this.timer !== undefined) return 'rate-limit';
    if (this.cancelSourceWait !== undefined) return 'source';
    return undefined;
  }

  /** Stops the device for good and closes its source. */
  async close(): Promise<void> {
    this.reset();
    await this.source.close();
  }

  private service(): void {
    const context = this.context;
    // While parked, a kick changes nothing: the timer or the source event serves the queue.
    if (!context || context.signal.aborted || this.waiting !== undefined) return;
    let stall: 'rate-limit' | 'source' | undefined;
    const result = serviceQueue(context, RNG_REQUEST_QUEUE, (chain) => {
      const outcome = this.fill(context, chain);
      if (outcome === 'rate-limit' || outcome === 'source') {
        stall = outcome;
        return 'defer';
      }
      return outcome;
    });
    this.counters.requests += result.completed;
    this.counters.faults += result.faulted;
    if (stall === 'rate-limit' && this.limiter) {
      this.counters.rateLimitedWaits++;
      const delay = Math.max(1, this.limiter.waitMs(this.clock.now()));
      this.timer = this.clock.setTimeout(() => {
        this.timer = undefined;
        this.service();
      }, delay);
    } else if (stall === 'source') {
      this.counters.sourceWaits++;
      this.cancelSourceWait = this.source.whenAvailable(() => {
        this.cancelSourceWait = undefined;
        this.service();
      });
    }
  }

  /** Serves one request; returns the bytes written, or why it has to wait. */
  private fill(context: DeviceContext, chain: DescriptorChain): number | 'rate-limit' | 'source' {
    if (chain.readableLength > 0) {
      // 5.4.6.1: the driver MUST NOT place driver-readable buffers in the queue. Mapping the
      // chain still checks its addresses: one outside guest memory is ring corruption (2.7.5).
      openChain(context.memory, chain).close();
      this.counters.badRequests++;
      return 0;
    }
    // 5.4.6.2: one or more bytes, unless the buffer has zero length.
    if (chain.writableLength === 0) return 0;
    const now = this.clock.now();
    const allowance = this.limiter ? this.limiter.allowance(now) : Number.POSITIVE_INFINITY;
    if (allowance === 0) return 'rate-limit';
    const ready = this.source.available();
    if (ready === 0) return 'source';
    const length = Math.min(chain.writableLength, this.config.maxBytesPerRequest, allowance, ready);
    const io = openChain(context.memory, chain);
    try {
      for (const view of io.writer.views(length)) this.source.read(view);
    } catch (error) {
      io.close();
      throw error;
    }
    const written = io.close();
    this.limiter?.take(now, written);
    this.counters.bytes += written;
    return written;
  }

  private stopWaiting(): void {
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.cancelSourceWait?.();
    this.cancelSourceWait = undefined;
  }
}

/** The source a validated config names. */
export function createEntropySource(source: RngConfig['source']): EntropySource {
  switch (source.kind) {
    case 'os':
      return createOsEntropySource();
    case 'file':
      return createFileEntropySource({ path: source.path, bufferSize: source.bufferSize });
    case 'seeded':
      return createSeededEntropySource({ seed: source.seed });
  }
}

/**
 * Builds an rng device from a configuration as a user wrote it (validated here, once).
 * Throws `RngConfigError` for a bad configuration.
 */
export function createRngDevice(
  config: RngConfigInput | unknown = {},
  options: RngDeviceOptions = {},
): RngDevice {
  return new RngDevice(parseRngConfig(config), options);
}
