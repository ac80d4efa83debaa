import { createTestMemory, type TestMemory } from '@xvio/grant-pool';
import { DeviceController, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1 } from '@xvio/transport';
import { MockSplitQueue } from '@xvio/transport/testing';
import type { NetDevice } from '../net-device.js';
import {
  decodeNetHeader,
  emptyNetHeader,
  encodeNetHeader,
  HDR_NUM_BUFFERS,
  type NetHeader,
  netHeaderLength,
} from '../net-wire.js';

const STATUS_ACKNOWLEDGE = 1;
const STATUS_DRIVER = 2;
const STATUS_DRIVER_OK = 4;
const STATUS_FEATURES_OK = 8;

export interface TestGuestOptions {
  /** Features the simulated driver accepts (intersected with the offer). Default: all offered. */
  features?: bigint;
  queueSize?: number;
  /** Bytes of buffer arena per queue. Default 4 MiB. */
  arenaSize?: number;
  seed?: number;
  eventIdx?: boolean;
}

export interface ReceivedFrame {
  header: NetHeader;
  numBuffers: number;
  data: Uint8Array;
}

/**
 * A simulated virtio-net driver over test memory: it negotiates, lays out real split rings
 * (MockSplitQueue, buffers at random gaps), posts receive buffers, sends frames with a
 * virtio_net_hdr, and reassembles what the device returns (num_buffers with MRG_RXBUF).
 */
export class NetTestGuest {
  readonly memory: TestMemory;
  readonly controller: DeviceController;
  readonly queues: MockSplitQueue[] = [];
  readonly interrupts: number[] = [];
  configInterrupts = 0;
  private readonly rxBuffers = new Map<number, Map<number, { offset: number; length: number }>>();

  constructor(
    readonly device: NetDevice,
    options: TestGuestOptions = {},
  ) {
    const queueCount = device.queueMaxSizes.length;
    const queueSize = options.queueSize ?? 256;
    const arenaSize = options.arenaSize ?? 4 << 20;
    const ringBytes = 64 << 10;
    const perQueue = ringBytes + arenaSize;
    this.memory = createTestMemory(perQueue * queueCount);
    this.controller = new DeviceController(device, {
      memory: this.memory,
      hooks: {
        interruptQueue: (index) => this.interrupts.push(index),
        interruptConfig: () => this.configInterrupts++,
      },
    });
    // Split rings only: this driver lays out MockSplitQueues (packed rings are covered by the
    // conformance suite).
    const wanted =
      ((options.features ?? this.controller.offeredFeatures) | VIRTIO_F_VERSION_1) & ~VIRTIO_F_RING_PACKED;
    this.controller.setStatus(STATUS_ACKNOWLEDGE);
    this.controller.setStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    this.controller.setDriverFeatures(wanted & this.controller.offeredFeatures);
    if (!this.controller.setStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK)) {
      throw new Error('features rejected');
    }
    for (let i = 0; i < queueCount; i++) {
      const queue = new MockSplitQueue(this.memory, {
        size: queueSize,
        offset: i * perQueue,
        arenaSize: arenaSize - 4096,
        eventIdx: options.eventIdx ?? false,
        seed: (options.seed ?? 1) + i,
      });
      this.queues.push(queue);
      const setup = this.controller.queue(i)!;
      setup.size = queueSize;
      setup.desc = queue.descAddress;
      setup.driver = queue.availAddress;
      setup.device = queue.usedAddress;
      setup.ready = true;
      this.rxBuffers.set(i, new Map());
    }
    this.controller.setStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
  }

  get features(): bigint {
    return this.controller.driverFeatures;
  }

  get headerLength(): number {
    return netHeaderLength(this.features);
  }

  /** Posts `count` receive buffers of `size` bytes on a receive queue and kicks. */
  postReceive(count: number, size: number, pair = 0): void {
    const index = pair * 2;
    const queue = this.queues[index]!;
    const buffers = this.rxBuffers.get(index)!;
    for (let i = 0; i < count; i++) {
      const { head, buffers: placed } = queue.addChain([{ writable: true, length: size }]);
      buffers.set(head, { offset: placed[0]!.offset, length: size });
    }
    this.controller.kick(index);
  }

  /** Sends one frame (header + data in one buffer, or split in two when `split`). */
  send(
    data: Uint8Array,
    header: NetHeader = emptyNetHeader(),
    options: { split?: boolean; pair?: number; kick?: boolean } = {},
  ): void {
    const index = (options.pair ?? 0) * 2 + 1;
    const headerBytes = new Uint8Array(this.headerLength);
    encodeNetHeader(header, headerBytes, headerBytes.length, 0);
    const queue = this.queues[index]!;
    if (options.split) queue.addChain([{ data: headerBytes }, { data }]);
    else {
      const both = new Uint8Array(headerBytes.length + data.length);
      both.set(headerBytes);
      both.set(data, headerBytes.length);
      queue.addChain([{ data: both }]);
    }
    if (options.kick ?? true) this.controller.kick(index);
  }

  /** Returns completed transmit chains to the free list; how many. */
  reclaimTransmit(pair = 0): number {
    return this.queues[pair * 2 + 1]!.takeUsed().length;
  }

  /** Frames the device delivered since the last call, reassembled across merged buffers. */
  receive(pair = 0): ReceivedFrame[] {
    const index = pair * 2;
    const used = this.queues[index]!.takeUsed();
    const buffers = this.rxBuffers.get(index)!;
    const out: ReceivedFrame[] = [];
    const headerLength = this.headerLength;
    let i = 0;
    while (i < used.length) {
      const first = used[i]!;
      const buffer = buffers.get(first.id)!;
      const bytes = this.memory.bytes.slice(buffer.offset, buffer.offset + first.length);
      const header = decodeNetHeader(bytes);
      const numBuffers =
        headerLength >= 12 ? bytes[HDR_NUM_BUFFERS]! | (bytes[HDR_NUM_BUFFERS + 1]! << 8) : 1;
      const parts = [bytes.subarray(headerLength)];
      buffers.delete(first.id);
      for (let k = 1; k < numBuffers && i + k < used.length; k++) {
        const element = used[i + k]!;
        const more = buffers.get(element.id)!;
        parts.push(this.memory.bytes.slice(more.offset, more.offset + element.length));
        buffers.delete(element.id);
      }
      i += Math.max(1, numBuffers);
      const total = parts.reduce((sum, part) => sum + part.length, 0);
      const data = new Uint8Array(total);
      let offset = 0;
      for (const part of parts) {
        data.set(part, offset);
        offset += part.length;
      }
      out.push({ header, numBuffers, data });
    }
    return out;
  }

  /** Sends a control command; returns the ack byte (or undefined when the device did not answer). */
  control(
    commandClass: number,
    command: number,
    data: Uint8Array = new Uint8Array(0),
    ackLength = 1,
  ): number | undefined {
    const index = this.controlIndex;
    const queue = this.queues[index]!;
    const message = new Uint8Array(2 + data.length);
    message[0] = commandClass;
    message[1] = command;
    message.set(data, 2);
    const { head, buffers } = queue.addChain(
      ackLength > 0 ? [{ data: message }, { writable: true, length: ackLength }] : [{ data: message }],
    );
    this.controller.kick(index);
    const used = queue.takeUsed().find((element) => element.id === head);
    if (!used || used.length === 0 || ackLength === 0) return undefined;
    return this.memory.bytes[buffers[1]!.offset];
  }

  get controlIndex(): number {
    const mq = (this.features & (1n << 22n)) !== 0n;
    return mq ? this.device.queuePairs * 2 : 2;
  }
}
