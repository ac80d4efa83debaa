import { createTestMemory, type TestMemory } from '@xvio/grant-pool';
import {
  DeviceController,
  STATUS_ACKNOWLEDGE,
  STATUS_DRIVER,
  STATUS_DRIVER_OK,
  STATUS_FEATURES_OK,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  type VirtioDevice,
} from '@xvio/transport';
import { type MockBuffer, MockSplitQueue, type PlacedBuffer } from '@xvio/transport/testing';
import type { DemoBuffer, QueueWorkload } from './demo-workloads.js';

export interface MockGuestOptions {
  /** Guest entries per queue (a power of two). */
  queueSize?: number;
  /** Guest memory reserved per queue, rings and buffers. */
  bytesPerQueue?: number;
  /** Features the driver refuses even if offered. */
  refuse?: bigint;
  seed?: number;
}

const RING_BYTES = 8192;

/**
 * A Linux-like driver for one device, in process: it negotiates features and brings the
 * device up through a DeviceController exactly as a transport would (status sequence of
 * spec 3.1.1, queue setup, DRIVER_OK), then keeps buffers posted in split rings laid out in
 * test memory and reaps completions on each used-buffer interrupt. No hypervisor and no
 * transport: this is what the demo runs over until the simulator's transports exist.
 */
export class MockGuestDevice {
  readonly controller: DeviceController;
  readonly memory: TestMemory;
  readonly queues: (MockSplitQueue | undefined)[] = [];
  readonly completions: number[];
  private readonly inFlight: Map<number, { request: DemoBuffer[]; placed: PlacedBuffer[] }>[];
  private readonly scheduled = new Set<number>();
  private stopped = false;
  private timer: ReturnType<typeof setInterval> | undefined;

  constructor(
    readonly device: VirtioDevice,
    private readonly workloads: readonly (QueueWorkload | undefined)[],
    private readonly options: MockGuestOptions = {},
  ) {
    const bytesPerQueue = options.bytesPerQueue ?? 512 * 1024;
    this.memory = createTestMemory(bytesPerQueue * Math.max(1, device.queueMaxSizes.length));
    this.controller = new DeviceController(device, {
      memory: this.memory,
      hooks: {
        interruptQueue: (queueIndex) => this.schedule(queueIndex),
        interruptConfig: () => undefined,
      },
    });
    this.completions = device.queueMaxSizes.map(() => 0);
    this.inFlight = device.queueMaxSizes.map(() => new Map());
  }

  /** Brings the device up (spec 3.1.1); false when the device refused the features or failed to start. */
  start(): boolean {
    const controller = this.controller;
    controller.setStatus(STATUS_ACKNOWLEDGE);
    controller.setStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    const refuse =
      (this.options.refuse ?? 0n) | VIRTIO_F_EVENT_IDX | VIRTIO_F_INDIRECT_DESC | VIRTIO_F_RING_PACKED;
    controller.setDriverFeatures((controller.offeredFeatures & ~refuse) | VIRTIO_F_VERSION_1);
    if (!controller.setStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK)) return false;
    const bytesPerQueue = this.options.bytesPerQueue ?? 512 * 1024;
    for (let index = 0; index < controller.queueCount; index++) {
      const setup = controller.queue(index);
      if (!setup || !this.workloads[index]) {
        this.queues.push(undefined);
        continue;
      }
      const size = Math.min(this.options.queueSize ?? 64, controller.queueMaxSize(index));
      const mock = new MockSplitQueue(this.memory, {
        size,
        offset: index * bytesPerQueue,
        arenaSize: bytesPerQueue - RING_BYTES,
        seed: (this.options.seed ?? 1) + index,
      });
      this.queues.push(mock);
      setup.size = size;
      setup.desc = mock.descAddress;
      setup.driver = mock.availAddress;
      setup.device = mock.usedAddress;
      setup.ready = true;
    }
    controller.setStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    if (!controller.running) return false;
    for (let index = 0; index < this.queues.length; index++) this.refill(index);
    // Devices that complete later (entropy waits, rate limits, host input) interrupt; the
    // timer only tops up queues whose workload had nothing to post a moment ago.
    this.timer = setInterval(() => {
      for (let index = 0; index < this.queues.length; index++) this.refill(index);
    }, 20);
    this.timer.unref?.();
    return true;
  }

  private schedule(queueIndex: number): void {
    if (this.scheduled.has(queueIndex) || this.stopped) return;
    this.scheduled.add(queueIndex);
    // Reaping on a later turn keeps interrupt -> reap -> kick -> device from recursing.
    setImmediate(() => {
      this.scheduled.delete(queueIndex);
      this.reap(queueIndex);
    });
  }

  /** Takes completions, hands them to the workload, and posts new chains. */
  reap(queueIndex: number): void {
    const queue = this.queues[queueIndex];
    const workload = this.workloads[queueIndex];
    if (!queue || !workload || this.stopped) return;
    for (const used of queue.takeUsed()) {
      const entry = this.inFlight[queueIndex]!.get(used.id);
      this.inFlight[queueIndex]!.delete(used.id);
      this.completions[queueIndex]!++;
      if (!entry) continue;
      // The driver reads what the device wrote: the used length, across the writable buffers.
      let remaining = used.length;
      const written: Uint8Array[] = [];
      for (const buffer of entry.placed) {
        if (!buffer.writable) continue;
        const length = Math.min(remaining, buffer.length);
        written.push(this.memory.bytes.subarray(buffer.offset, buffer.offset + length));
        remaining -= length;
      }
      workload.complete({ length: used.length, written }, entry.request);
    }
    this.refill(queueIndex);
  }

  private refill(queueIndex: number): void {
    const queue = this.queues[queueIndex];
    const workload = this.workloads[queueIndex];
    if (!queue || !workload || this.stopped || !this.controller.running) return;
    const inFlight = this.inFlight[queueIndex]!;
    let posted = 0;
    while (inFlight.size < Math.min(workload.depth, queue.size) && queue.freeCount > 0) {
      const request = workload.next();
      if (!request) break;
      const buffers: MockBuffer[] = request.map((buffer) =>
        'data' in buffer ? { data: buffer.data } : { writable: true, length: buffer.writable },
      );
      const { head, buffers: placed } = queue.addChain(buffers);
      inFlight.set(head, { request, placed });
      posted++;
    }
    if (posted > 0) this.controller.kick(queueIndex);
  }

  /** Kicks a queue now (a workload that got something to send). */
  poke(queueIndex: number): void {
    this.refill(queueIndex);
  }

  /** The driver goes away: reset the device (which unmaps everything). */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.controller.reset();
  }
}
