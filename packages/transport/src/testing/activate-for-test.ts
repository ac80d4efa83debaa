import { createTestMemory, type TestMemory } from '@xvio/grant-pool';
import { type ControllerOptions, DeviceController } from '../device-controller.js';
import type { VirtioDevice } from '../virtio-device.js';
import {
  hasFeature,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
} from '../virtio-features.js';
import {
  STATUS_ACKNOWLEDGE,
  STATUS_DEVICE_NEEDS_RESET,
  STATUS_DRIVER,
  STATUS_DRIVER_OK,
  STATUS_FEATURES_OK,
} from '../virtio-status.js';
import type { MockBuffer, UsedElement } from './mock-buffers.js';
import { MockPackedQueue } from './mock-packed-queue.js';
import { type ChainOptions, MockSplitQueue, type PlacedBuffer } from './mock-split-queue.js';

/** The driver side of one queue, split or packed (check `packed` to narrow). */
export type MockQueue = MockSplitQueue | MockPackedQueue;

export interface ActivateForTestOptions {
  /** Use packed rings (VIRTIO_F_RING_PACKED); the device must offer it. Default false. */
  packed?: boolean;
  /**
   * Features the driver accepts. Default: everything offered, with VIRTIO_F_RING_PACKED
   * only when `packed` is set.
   */
  features?: bigint;
  /** Features removed from the default set (e.g. VIRTIO_F_EVENT_IDX to test plain flags). */
  withoutFeatures?: bigint;
  /** Queue sizes the driver picks; default min(max size, 64) for each queue. */
  queueSizes?: readonly number[];
  /** Queues the driver leaves disabled. */
  disabledQueues?: readonly number[];
  /** Bytes of guest memory; default 256 KiB per queue (at least 1 MiB). */
  memorySize?: number;
  /** Seed for the random gaps between buffers. */
  seed?: number;
  /** Transport-level controller options (transport mask, platform features, fault hook). */
  controller?: Partial<Omit<ControllerOptions, 'memory' | 'hooks'>>;
}

/** Interrupts the device raised, as the driver saw them. */
export interface InterruptLog {
  /** Used-buffer notifications per queue index. */
  readonly queues: number[];
  /** Configuration change notifications (NEEDS_RESET raises one). */
  config: number;
}

/** A device running behind a `DeviceController`, driven by mock driver queues in test memory. */
export interface TestHarness {
  readonly device: VirtioDevice;
  readonly controller: DeviceController;
  readonly memory: TestMemory;
  /** The driver side of each queue; `undefined` for a disabled queue. */
  readonly queues: readonly (MockQueue | undefined)[];
  readonly interrupts: InterruptLog;
  /** Every fault the controller reported (the errors that set NEEDS_RESET). */
  readonly faults: unknown[];
  /** The driver-accepted features. */
  readonly features: bigint;
  readonly packed: boolean;
  /** Whether the device set DEVICE_NEEDS_RESET. */
  readonly needsReset: boolean;
  /** The driver side of queue `index`; throws if it is disabled. */
  queue(index: number): MockQueue;
  /** A kick (available-buffer notification) on a queue. */
  kick(index: number): void;
  /** Adds a chain to a queue and kicks it. */
  request(
    index: number,
    buffers: readonly MockBuffer[],
    options?: ChainOptions,
  ): { head: number; buffers: PlacedBuffer[] };
  /** Waits (yielding to the event loop) until `count` used elements arrived on a queue, and returns them. */
  waitForUsed(index: number, count?: number, timeoutMs?: number): Promise<UsedElement[]>;
  /** Waits until `predicate` holds or the timeout passes; returns whether it held. */
  waitFor(predicate: () => boolean, timeoutMs?: number): Promise<boolean>;
  /** Driver reset (status 0), then the whole initialization again with fresh rings. */
  restart(): void;
  /** Resets the device (status 0): stops all its work. Call at the end of a test. */
  dispose(): void;
}

const REGION_GUARD = 4096;

/**
 * Runs the driver's initialization (spec 3.1.1) against `device` through a
 * `DeviceController`: ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queue setup, DRIVER_OK.
 * Each queue gets its own region of test memory, separated by unmapped guard pages so a
 * stray access faults. Interrupts are counted. Throws when the device refuses the
 * features or fails to activate.
 */
export function activateForTest(device: VirtioDevice, options: ActivateForTestOptions = {}): TestHarness {
  const queueCount = device.queueMaxSizes.length;
  const memorySize = options.memorySize ?? Math.max(1 << 20, queueCount * (256 << 10));
  const regionSize = Math.floor(memorySize / Math.max(queueCount, 1) / 4096) * 4096;
  if (regionSize <= 2 * REGION_GUARD) throw new Error('activateForTest: memory too small for the queues');
  const holes = Array.from({ length: queueCount }, (_, i) => ({
    offset: (i + 1) * regionSize - REGION_GUARD,
    length: REGION_GUARD,
  }));
  const memory = createTestMemory(memorySize, { holes });
  const interrupts: InterruptLog = { queues: device.queueMaxSizes.map(() => 0), config: 0 };
  const faults: unknown[] = [];
  const controllerOptions = options.controller ?? {};
  const controller = new DeviceController(device, {
    ...controllerOptions,
    memory,
    hooks: {
      interruptQueue: (index) => {
        interrupts.queues[index] = (interrupts.queues[index] ?? 0) + 1;
      },
      interruptConfig: () => {
        interrupts.config++;
      },
    },
    onFault: (error) => {
      faults.push(error);
      controllerOptions.onFault?.(error);
    },
  });
  const packed = options.packed ?? false;
  const offered = controller.offeredFeatures;
  if (packed && !hasFeature(offered, VIRTIO_F_RING_PACKED)) {
    throw new Error(`activateForTest: ${device.name} does not offer VIRTIO_F_RING_PACKED`);
  }
  const features =
    options.features ??
    ((offered & ~VIRTIO_F_RING_PACKED) | (packed ? VIRTIO_F_RING_PACKED : 0n)) &
      ~(options.withoutFeatures ?? 0n);
  let queues: (MockQueue | undefined)[] = [];
  let seed = options.seed ?? 1;

  const initialize = () => {
    const base = STATUS_ACKNOWLEDGE | STATUS_DRIVER;
    controller.setStatus(STATUS_ACKNOWLEDGE);
    controller.setStatus(base);
    controller.setDriverFeatures(features);
    if (!controller.setStatus(base | STATUS_FEATURES_OK) || !(controller.status & STATUS_FEATURES_OK)) {
      throw new Error(`activateForTest: ${device.name} refused features 0x${features.toString(16)}`);
    }
    queues = device.queueMaxSizes.map((maxSize, index) => {
      if (options.disabledQueues?.includes(index)) return undefined;
      // Split rings need a power of two (2.7); take the largest one within the device's maximum.
      const size = options.queueSizes?.[index] ?? largestPowerOfTwo(Math.min(maxSize, 64));
      const queueOptions = {
        size,
        offset: index * regionSize,
        arenaEnd: (index + 1) * regionSize - REGION_GUARD,
        eventIdx: hasFeature(features, VIRTIO_F_EVENT_IDX),
        indirect: hasFeature(features, VIRTIO_F_INDIRECT_DESC),
        seed: seed++,
      };
      const queue: MockQueue = packed
        ? new MockPackedQueue(memory, queueOptions)
        : new MockSplitQueue(memory, queueOptions);
      const setup = controller.queue(index)!;
      const config = queue.config;
      setup.size = size;
      setup.desc = config.desc;
      setup.driver = config.driver;
      setup.device = config.device;
      setup.ready = true;
      return queue;
    });
    controller.setStatus(base | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    if (controller.status & STATUS_DEVICE_NEEDS_RESET) {
      throw new Error(`activateForTest: ${device.name} failed to activate`, { cause: controller.lastFault });
    }
  };
  initialize();

  const waitFor = async (predicate: () => boolean, timeoutMs = 2000): Promise<boolean> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (predicate()) return true;
      if (Date.now() > deadline) return false;
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  };

  const harness: TestHarness = {
    device,
    controller,
    memory,
    get queues() {
      return queues;
    },
    interrupts,
    faults,
    features,
    packed,
    get needsReset() {
      return (controller.status & STATUS_DEVICE_NEEDS_RESET) !== 0;
    },
    queue(index) {
      const queue = queues[index];
      if (!queue) throw new Error(`activateForTest: queue ${index} is not enabled`);
      return queue;
    },
    kick(index) {
      controller.kick(index);
    },
    request(index, buffers, chainOptions) {
      const placed = harness.queue(index).addChain(buffers, chainOptions);
      controller.kick(index);
      return placed;
    },
    async waitForUsed(index, count = 1, timeoutMs = 2000) {
      const queue = harness.queue(index);
      const used: UsedElement[] = [];
      await waitFor(() => {
        used.push(...queue.takeUsed());
        return used.length >= count || harness.needsReset;
      }, timeoutMs);
      if (used.length < count) {
        throw new Error(
          `activateForTest: ${used.length} of ${count} used elements on queue ${index} within ${timeoutMs} ms` +
            (harness.needsReset ? ' (the device needs reset)' : ''),
          { cause: controller.lastFault },
        );
      }
      return used;
    },
    waitFor,
    restart() {
      controller.setStatus(0);
      initialize();
    },
    dispose() {
      controller.setStatus(0);
    },
  };
  return harness;
}

function largestPowerOfTwo(value: number): number {
  let size = 1;
  while (size * 2 <= value) size *= 2;
  return size;
}
