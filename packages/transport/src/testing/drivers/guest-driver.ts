import type { InterruptEvent, XenSimulator } from '@xvio/xen';
import {
  hasFeature,
  VIRTIO_F_ACCESS_PLATFORM,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_VERSION_1,
} from '../../virtio-features.js';
import {
  STATUS_ACKNOWLEDGE,
  STATUS_DEVICE_NEEDS_RESET,
  STATUS_DRIVER,
  STATUS_DRIVER_OK,
  STATUS_FAILED,
  STATUS_FEATURES_OK,
} from '../../virtio-status.js';
import type { GuestDma } from './guest-dma.js';
import { type GuestBuffer, GuestSplitQueue, type GuestUsed } from './guest-split-queue.js';

/** Feature bits 0-23 are the device's own (spec 6): a guest driver accepts those it was told to. */
const DEVICE_FEATURE_MASK = (1n << 24n) - 1n;

export interface GuestDriverOptions {
  /** How buffers reach the device: guest-physical or Linux grant DMA. */
  readonly dma: GuestDma;
  /** Device-specific feature bits (0-23) the driver accepts; default: every one offered. */
  readonly deviceFeatures?: bigint;
  /** Queue size the driver picks for each queue (default min(max, 64)). */
  readonly queueSize?: number;
  /** Queues to set up (default: every queue the device has, up to 8). */
  readonly queues?: number;
  /** Negotiate VIRTIO_F_EVENT_IDX when offered (default true, as Linux does). */
  readonly eventIdx?: boolean;
  /** How long `waitUsed` waits by default (ms). */
  readonly timeoutMs?: number;
}

const marker = Symbol.for('xvio.transport.guest-driver-error');

export type GuestDriverErrorCode =
  | 'no-device'
  | 'features-rejected'
  | 'queue-unavailable'
  | 'timeout'
  | 'device-needs-reset'
  | 'queue-broken';

/** Why the guest driver gave up, as Linux would log it. */
export class GuestDriverError extends Error {
  override readonly name = 'GuestDriverError';
  readonly [marker] = true;

  constructor(
    readonly code: GuestDriverErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(`${code}: ${message}`, options);
  }

  static isInstance(value: unknown): value is GuestDriverError {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[marker] === true;
  }
}

/**
 * The transport-independent half of a guest virtio driver (Linux's virtio.c
 * virtio_dev_probe + virtio_ring.c): status order, feature negotiation, queue setup and
 * request completion. Subclasses implement the register (or xenstore) operations.
 */
export abstract class GuestVirtioDriver {
  features = 0n;
  deviceFeatureOffer = 0n;
  protected readonly queueList: (GuestSplitQueue | undefined)[] = [];
  readonly interrupts = { queue: 0, config: 0, spurious: 0 };
  /** Resolved on every interrupt (queue or config); replaced after each. */
  private interruptWaiters: (() => void)[] = [];
  private unsubscribe: (() => void) | undefined;
  private readonly handlers = new Set<Promise<void>>();
  /** `performance.now()` of the last interrupt the guest took. */
  lastInterruptAt = 0;

  constructor(
    protected readonly sim: XenSimulator,
    readonly domid: number,
    protected readonly options: GuestDriverOptions,
  ) {}

  // --- transport operations ---
  protected abstract readStatus(): Promise<number>;
  protected abstract writeStatus(status: number): Promise<void>;
  protected abstract readDeviceFeatures(): Promise<bigint>;
  protected abstract writeDriverFeatures(features: bigint): Promise<void>;
  /** Maximum size of queue `index`, 0 when it does not exist. */
  protected abstract queueMaxSize(index: number): Promise<number>;
  protected abstract enableQueue(index: number, queue: GuestSplitQueue): Promise<void>;
  protected abstract notify(index: number): Promise<void>;
  protected abstract readConfigRaw(offset: number, length: number): Promise<Uint8Array>;
  abstract configGeneration(): Promise<number>;
  /** Whether an interrupt event from the simulator is ours; called synchronously. */
  protected abstract matches(event: InterruptEvent): boolean;
  /** Reads and acknowledges the interrupt cause (ISR / InterruptStatus). */
  protected abstract acknowledge(event: InterruptEvent): Promise<{ queue: boolean; config: boolean }>;
  /** Optional teardown of transport resources (claims, event channels). */
  protected async teardown(): Promise<void> {}

  get queueCount(): number {
    return this.queueList.length;
  }

  queue(index: number): GuestSplitQueue {
    const queue = this.queueList[index];
    if (!queue) throw new GuestDriverError('queue-unavailable', `queue ${index} is not set up`);
    return queue;
  }

  protected listen(): void {
    this.unsubscribe?.();
    this.unsubscribe = this.sim.onInterrupt((event) => {
      if (event.domid !== this.domid || !this.matches(event)) return;
      if ('level' in event && event.level === 0) return;
      this.lastInterruptAt = performance.now();
      const handling = this.acknowledge(event).then(
        (cause) => {
          if (cause.queue) this.interrupts.queue++;
          if (cause.config) this.interrupts.config++;
          if (!cause.queue && !cause.config) this.interrupts.spurious++;
          this.wake();
        },
        () => this.wake(),
      );
      this.handlers.add(handling);
      void handling.finally(() => this.handlers.delete(handling));
    });
  }

  protected wake(): void {
    const waiters = this.interruptWaiters;
    this.interruptWaiters = [];
    for (const waiter of waiters) waiter();
  }

  /** Waits until no interrupt handler runs (so every register access it made was answered). */
  async quiesce(): Promise<void> {
    while (this.handlers.size > 0) await Promise.allSettled([...this.handlers]);
  }

  /** Resolves at the next interrupt the guest takes. */
  nextInterrupt(): Promise<void> {
    return new Promise((resolve) => this.interruptWaiters.push(resolve));
  }

  /** virtio_dev_probe: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queues, DRIVER_OK. */
  async initialize(): Promise<void> {
    this.listen();
    await this.writeStatus(0);
    await this.writeStatus(STATUS_ACKNOWLEDGE);
    await this.writeStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    const offered = await this.readDeviceFeatures();
    this.deviceFeatureOffer = offered;
    if (!hasFeature(offered, VIRTIO_F_VERSION_1)) {
      await this.writeStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FAILED);
      throw new GuestDriverError('features-rejected', 'device does not offer VIRTIO_F_VERSION_1');
    }
    const deviceBits = offered & DEVICE_FEATURE_MASK & (this.options.deviceFeatures ?? DEVICE_FEATURE_MASK);
    // Linux's xen grant DMA requires VIRTIO_F_ACCESS_PLATFORM (virtio_features_ok).
    const platform = offered & VIRTIO_F_ACCESS_PLATFORM;
    if (this.options.dma.kind === 'grant' && platform === 0n) {
      await this.writeStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FAILED);
      throw new GuestDriverError('features-rejected', 'grant DMA needs VIRTIO_F_ACCESS_PLATFORM');
    }
    const eventIdx = this.options.eventIdx === false ? 0n : offered & VIRTIO_F_EVENT_IDX;
    this.features = deviceBits | VIRTIO_F_VERSION_1 | platform | eventIdx;
    await this.writeDriverFeatures(this.features);
    await this.writeStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    const status = await this.readStatus();
    if (!(status & STATUS_FEATURES_OK)) {
      await this.writeStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FAILED);
      throw new GuestDriverError(
        'features-rejected',
        `device refused features 0x${this.features.toString(16)}`,
      );
    }
    const wanted = this.options.queues ?? 8;
    for (let index = 0; index < wanted; index++) {
      const max = await this.queueMaxSize(index);
      if (max === 0) break;
      const size = Math.min(max, this.options.queueSize ?? 64);
      const queue = new GuestSplitQueue(
        this.sim.domain(this.domid),
        this.options.dma,
        index,
        size,
        hasFeature(this.features, VIRTIO_F_EVENT_IDX),
      );
      this.queueList[index] = queue;
      await this.enableQueue(index, queue);
    }
    if (this.queueList.length === 0) {
      await this.writeStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FAILED);
      throw new GuestDriverError('queue-unavailable', 'device has no queues');
    }
    await this.writeStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
  }

  /** Status as the device reports it now. */
  status(): Promise<number> {
    return this.readStatus();
  }

  /** Kicks a queue unless the device suppressed notifications. */
  async kick(index: number): Promise<void> {
    if (!this.queue(index).kickPrepare()) return;
    await this.notify(index);
  }

  /** Adds a chain, kicks, and waits for it to complete. */
  async request(index: number, buffers: readonly GuestBuffer[], timeoutMs?: number): Promise<GuestUsed> {
    const queue = this.queue(index);
    const head = queue.add(buffers);
    if (head === undefined)
      throw new GuestDriverError('queue-broken', `queue ${index} has no room or is broken`);
    await this.kick(index);
    const used = await this.waitUsed(index, 1, timeoutMs);
    const mine = used.find((u) => u.head === head) ?? used[0];
    return mine as GuestUsed;
  }

  /**
   * Waits until `count` used elements can be collected on a queue (woken by interrupts; the
   * ring is also polled so a guest without interrupts still completes) and collects them.
   */
  async waitUsed(index: number, count = 1, timeoutMs = this.options.timeoutMs ?? 5000): Promise<GuestUsed[]> {
    const queue = this.queue(index);
    const deadline = performance.now() + timeoutMs;
    const out: GuestUsed[] = [];
    let configSeen = this.interrupts.config;
    let lastStatusCheck = performance.now();
    for (;;) {
      out.push(...queue.collect());
      if (queue.broken)
        throw new GuestDriverError('queue-broken', `queue ${index} is broken`, { cause: queue.brokenReason });
      if (out.length >= count) return out;
      const now = performance.now();
      if (now > deadline) {
        throw new GuestDriverError(
          'timeout',
          `queue ${index}: ${out.length} of ${count} used elements after ${timeoutMs} ms`,
        );
      }
      // Like Linux, DEVICE_NEEDS_RESET is looked at after a configuration interrupt; a guest
      // without interrupts also looks every 50 ms. Queue interrupts cost no register access.
      if (this.interrupts.config !== configSeen || now - lastStatusCheck > 50) {
        configSeen = this.interrupts.config;
        lastStatusCheck = now;
        if ((await this.readStatus()) & STATUS_DEVICE_NEEDS_RESET) {
          out.push(...queue.collect());
          if (out.length >= count) return out;
          throw new GuestDriverError('device-needs-reset', `device set DEVICE_NEEDS_RESET on queue ${index}`);
        }
      }
      await Promise.race([this.nextInterrupt(), new Promise((resolve) => setTimeout(resolve, 2))]);
    }
  }

  /**
   * Reads configuration space consistently (2.4.1 / Linux virtio_cread_bytes): retried while
   * the generation changes underneath.
   */
  async readConfig(offset: number, length: number): Promise<Uint8Array> {
    for (let attempt = 0; attempt < 16; attempt++) {
      const before = await this.configGeneration();
      const bytes = await this.readConfigRaw(offset, length);
      if ((await this.configGeneration()) === before) return bytes;
    }
    throw new GuestDriverError('timeout', 'config generation kept changing');
  }

  /** virtio_reset_device, then frees queues (revoking their grants). The driver can `initialize` again. */
  async reset(): Promise<void> {
    await this.writeStatus(0);
    // 4.1.4.3.2 / 4.2.3.1: wait until the device reads back 0.
    for (let i = 0; i < 100 && (await this.readStatus()) !== 0; i++)
      await new Promise((r) => setTimeout(r, 1));
    for (const queue of this.queueList) queue?.destroy();
    this.queueList.length = 0;
  }

  /** Driver unload (rmmod): reset the device and release everything. */
  async remove(): Promise<void> {
    await this.reset();
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    await this.teardown();
  }
}
