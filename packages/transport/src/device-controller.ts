import type { GuestMemory } from '@xvio/grant-pool';
import { USED_IDX } from './split-ring-wire.js';
import type { DeviceContext, VirtioDevice } from './virtio-device.js';
import { DeviceError, VirtioError } from './virtio-errors.js';
import {
  CORE_FEATURES,
  hasFeature,
  RESERVED_FEATURE_MASK,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
} from './virtio-features.js';
import {
  describeStatus,
  isValidStatusTransition,
  STATUS_DEVICE_NEEDS_RESET,
  STATUS_DRIVER_OK,
  STATUS_FAILED,
  STATUS_FEATURES_OK,
} from './virtio-status.js';
import type { Virtqueue, VirtqueueState } from './virtqueue.js';
import { createVirtqueue } from './virtqueue-factory.js';

/** How the driver configured one queue through the transport's registers. */
export interface QueueSetup {
  size: number;
  desc: bigint;
  driver: bigint;
  device: bigint;
  ready: boolean;
}

/**
 * What a transport keeps of the controller to hand a running driver to another backend
 * process (backend restart): everything the driver wrote through the transport.
 */
export interface ControllerSnapshot {
  readonly status: number;
  readonly driverFeatures: bigint;
  readonly generation: number;
  readonly queues: readonly QueueSetup[];
}

/** How the controller reaches the driver: the transport's interrupt mechanism. */
export interface ControllerHooks {
  /** Used-buffer notification for a queue. */
  interruptQueue(queueIndex: number): void;
  /** Configuration change notification (also sent on NEEDS_RESET). */
  interruptConfig(): void;
}

export interface ControllerOptions {
  /** Guest memory as this device reaches it. One instance per device: reset unmaps it all. */
  memory: GuestMemory;
  hooks: ControllerHooks;
  /** Features the transport cannot carry (e.g. packed rings on a transport without them). */
  transportMask?: bigint;
  /** Features the platform adds, e.g. VIRTIO_F_ACCESS_PLATFORM when buffers are grant addresses. */
  platformFeatures?: bigint;
  /** Called for every guest fault that put the device in NEEDS_RESET. */
  onFault?(error: unknown): void;
}

export interface ControllerMetrics {
  activations: number;
  resets: number;
  needsReset: number;
  faults: number;
  rejectedStatusWrites: number;
  rejectedFeatures: number;
  ignoredKicks: number;
}

/**
 * The transport-independent half of every transport: device status state machine (2.1),
 * feature negotiation (2.2, 3.1.1), queue setup and activation, config generation (2.5),
 * NEEDS_RESET on guest-caused corruption. MMIO, PCI, XenBus and vhost-user map their
 * registers or messages onto it.
 */
export class DeviceController {
  readonly device: VirtioDevice;
  readonly offeredFeatures: bigint;
  readonly metrics: ControllerMetrics = {
    activations: 0,
    resets: 0,
    needsReset: 0,
    faults: 0,
    rejectedStatusWrites: 0,
    rejectedFeatures: 0,
    ignoredKicks: 0,
  };
  /** The last fault that set NEEDS_RESET, for diagnostics. */
  lastFault: unknown;
  private statusValue = 0;
  private driverFeaturesValue = 0n;
  private generation = 0;
  private queueSetups: QueueSetup[];
  private queues: (Virtqueue | undefined)[] = [];
  private abort: AbortController | undefined;
  private memoryValue: GuestMemory;

  constructor(
    device: VirtioDevice,
    private readonly options: ControllerOptions,
  ) {
    this.device = device;
    this.memoryValue = options.memory;
    const deviceBits = device.features & (~RESERVED_FEATURE_MASK | CORE_FEATURES);
    this.offeredFeatures =
      (deviceBits | VIRTIO_F_VERSION_1 | (options.platformFeatures ?? 0n)) & ~(options.transportMask ?? 0n);
    this.queueSetups = device.queueMaxSizes.map((max) => emptySetup(max));
  }

  get status(): number {
    return this.statusValue;
  }

  get driverFeatures(): bigint {
    return this.driverFeaturesValue;
  }

  get configGeneration(): number {
    return this.generation;
  }

  get memory(): GuestMemory {
    return this.memoryValue;
  }

  /** Replaces guest memory (vhost-user SET_MEM_TABLE); only while the device is not running. */
  setMemory(memory: GuestMemory): void {
    this.memoryValue = memory;
  }

  get queueCount(): number {
    return this.queueSetups.length;
  }

  queueMaxSize(index: number): number {
    return this.device.queueMaxSizes[index] ?? 0;
  }

  /** The setup of a queue, or undefined for an index the device does not have. */
  queue(index: number): QueueSetup | undefined {
    return this.queueSetups[index];
  }

  /** A running queue (after DRIVER_OK), for transports that inspect it. */
  runningQueue(index: number): Virtqueue | undefined {
    return this.queues[index];
  }

  get running(): boolean {
    return this.abort !== undefined && !this.abort.signal.aborted;
  }

  /** The driver writes features; only before FEATURES_OK (spec 3.1.1). Returns false when ignored. */
  setDriverFeatures(features: bigint): boolean {
    if (this.statusValue & STATUS_FEATURES_OK) return false;
    this.driverFeaturesValue = features;
    return true;
  }

  /** Driver writes the status register. Returns false when the write was refused. */
  setStatus(value: number): boolean {
    const to = value & 0xff;
    if (to === 0) {
      this.reset();
      return true;
    }
    const from = this.statusValue;
    if (!isValidStatusTransition(from, to)) {
      this.metrics.rejectedStatusWrites++;
      return false;
    }
    const keepNeedsReset = from & STATUS_DEVICE_NEEDS_RESET;
    if (to & STATUS_FEATURES_OK && !(from & STATUS_FEATURES_OK)) {
      if (!this.negotiate()) {
        // 3.1.1 step 6: the driver re-reads status and finds FEATURES_OK unset.
        this.statusValue = (to & ~STATUS_FEATURES_OK) | keepNeedsReset;
        this.metrics.rejectedFeatures++;
        return false;
      }
    }
    this.statusValue = to | keepNeedsReset;
    if (to & STATUS_FAILED) {
      this.stop();
      return true;
    }
    if (to & STATUS_DRIVER_OK && !(from & STATUS_DRIVER_OK)) this.activate();
    return true;
  }

  private negotiate(): boolean {
    const features = this.driverFeaturesValue;
    if ((features & ~this.offeredFeatures) !== 0n) return false; // 2.2.1: only offered bits
    if (!hasFeature(features, VIRTIO_F_VERSION_1)) return false; // modern transports need VERSION_1
    if (this.device.acceptFeatures && !this.device.acceptFeatures(features)) return false;
    return true;
  }

  /** What the driver set up, for `restore` in another controller (a restarted backend). */
  snapshot(): ControllerSnapshot {
    return {
      status: this.statusValue,
      driverFeatures: this.driverFeaturesValue,
      generation: this.generation,
      queues: this.queueSetups.map((setup) => ({ ...setup })),
    };
  }

  /**
   * Takes over a driver that another controller served (the backend process was restarted)
   * from its `snapshot`. A device that was running (DRIVER_OK, no NEEDS_RESET) is activated
   * again, each split queue resuming at its used ring's `idx` in guest memory: what the
   * driver has seen completed. Chains the previous backend took but never completed are then
   * served again, as vhost-user backends resume without an inflight area; this is exact for
   * devices that complete each queue's chains in order. Every ready queue is then looked at
   * once, since the driver's kicks went to the previous backend, and signalled once. A ring that cannot be
   * resumed (packed: its wrap counters were lost with the process) sets NEEDS_RESET with a
   * configuration interrupt (2.1.2), so the driver resets the device and sets it up again.
   */
  restore(snapshot: ControllerSnapshot): void {
    this.stop();
    this.abort = undefined;
    this.queues = [];
    this.queueSetups = this.device.queueMaxSizes.map((max, index) => {
      const saved = snapshot.queues[index];
      return saved ? { ...saved } : emptySetup(max);
    });
    this.driverFeaturesValue = snapshot.driverFeatures;
    this.generation = snapshot.generation >>> 0;
    this.statusValue = snapshot.status & 0xff;
    const status = this.statusValue;
    if (!(status & STATUS_DRIVER_OK) || status & (STATUS_FAILED | STATUS_DEVICE_NEEDS_RESET)) return;
    this.activate(true);
    if (!this.running) return;
    for (let index = 0; index < this.queues.length; index++) {
      if (!this.queues[index]) continue;
      this.device.notify(index);
      // The previous backend may have died between publishing used elements and signalling
      // them: one used-buffer notification per queue, spurious at worst (drivers look at the
      // used ring and ignore an interrupt with nothing new), so no completion waits forever.
      this.options.hooks.interruptQueue(index);
    }
  }

  /** Starts the device with the ready queues; failures set NEEDS_RESET. */
  private activate(resume = false): void {
    const features = this.driverFeaturesValue;
    const abort = new AbortController();
    this.abort = abort;
    try {
      const packed = hasFeature(features, VIRTIO_F_RING_PACKED);
      if (resume && packed) {
        throw new DeviceError(
          'activation-failed',
          `${this.device.name} cannot resume packed rings: their positions and wrap counters were lost`,
        );
      }
      this.queues = this.queueSetups.map((setup, index) =>
        setup.ready
          ? createVirtqueue(
              this.memoryValue,
              {
                size: setup.size,
                maxSize: this.queueMaxSize(index),
                desc: setup.desc,
                driver: setup.driver,
                device: setup.device,
                eventIdx: hasFeature(features, VIRTIO_F_EVENT_IDX),
                indirect: hasFeature(features, VIRTIO_F_INDIRECT_DESC),
                packed,
              },
              resume ? this.usedPosition(setup.device) : undefined,
            )
          : undefined,
      );
      const context: DeviceContext = {
        memory: this.memoryValue,
        features,
        queues: this.queues,
        signal: abort.signal,
        interrupt: (queueIndex) => {
          if (!abort.signal.aborted) this.options.hooks.interruptQueue(queueIndex);
        },
        configChanged: () => {
          if (!abort.signal.aborted) this.configChanged();
        },
        fail: (error) => {
          if (!abort.signal.aborted) this.needsReset(error);
        },
      };
      this.metrics.activations++;
      this.device.activate(context);
    } catch (error) {
      this.needsReset(
        VirtioError.isInstance(error)
          ? error
          : new DeviceError('activation-failed', `${this.device.name} failed to activate`, { cause: error }),
      );
    }
  }

  /** Where a split queue resumes: its used ring's idx as the guest sees it. */
  private usedPosition(device: bigint): VirtqueueState {
    const bytes = new Uint8Array(2);
    this.memoryValue.read(device + BigInt(USED_IDX), bytes);
    const used = (bytes[0] as number) | ((bytes[1] as number) << 8);
    return { nextAvail: used, nextUsed: used };
  }

  /** The device is in an error state the driver must reset (spec 2.1.2). Counted, never thrown. */
  needsReset(error: unknown): void {
    this.metrics.faults++;
    this.lastFault = error;
    this.options.onFault?.(error);
    if (this.statusValue & STATUS_DEVICE_NEEDS_RESET) return;
    this.metrics.needsReset++;
    this.stop();
    this.statusValue |= STATUS_DEVICE_NEEDS_RESET;
    if (this.statusValue & STATUS_DRIVER_OK) this.configChanged();
  }

  /** Stops processing: aborts the device's work without forgetting its configuration. */
  private stop(): void {
    this.abort?.abort();
  }

  /** Device reset (status 0, or the transport's reset): everything back to initial state. */
  reset(): void {
    this.stop();
    this.abort = undefined;
    this.device.reset();
    this.memoryValue.unmapAll();
    this.statusValue = 0;
    this.driverFeaturesValue = 0n;
    this.queues = [];
    this.queueSetups = this.device.queueMaxSizes.map((max) => emptySetup(max));
    this.metrics.resets++;
  }

  /** Bumps the generation and notifies the driver (spec 2.5.1, 4.1.4.3, 4.2.2). */
  configChanged(): void {
    this.generation = (this.generation + 1) >>> 0;
    this.options.hooks.interruptConfig();
  }

  /** The driver kicked a queue. Ignored unless the device runs. */
  kick(queueIndex: number): void {
    if (!this.running || this.queues[queueIndex] === undefined) {
      this.metrics.ignoredKicks++;
      return;
    }
    this.device.notify(queueIndex);
  }

  /** Config space read: bytes beyond `configSize` read as zero (transports decide the access rules). */
  readConfig(offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    const size = this.device.configSize;
    if (offset >= 0 && length > 0 && offset < size) {
      const n = Math.min(length, size - offset);
      const part = new Uint8Array(n);
      this.device.readConfig(offset, part);
      out.set(part);
    }
    return out;
  }

  /** Config space write; out-of-range bytes are dropped. Returns false when nothing was in range. */
  writeConfig(offset: number, source: Uint8Array): boolean {
    const size = this.device.configSize;
    if (offset < 0 || offset >= size || source.length === 0) return false;
    this.device.writeConfig(offset, source.subarray(0, Math.min(source.length, size - offset)));
    return true;
  }

  describe(): string {
    return `${this.device.name}: ${describeStatus(this.statusValue)}`;
  }
}

function emptySetup(maxSize: number): QueueSetup {
  return { size: maxSize, desc: 0n, driver: 0n, device: 0n, ready: false };
}
