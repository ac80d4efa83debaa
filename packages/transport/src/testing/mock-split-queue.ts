import type { TestMemory } from '@xvio/grant-pool';
import {
  AVAIL_FLAGS,
  AVAIL_IDX,
  AVAIL_RING,
  availRingSize,
  availUsedEventOffset,
  DESC_SIZE,
  USED_ELEM_SIZE,
  USED_FLAGS,
  USED_IDX,
  USED_RING,
  usedAvailEventOffset,
  usedRingSize,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from '../split-ring-wire.js';
import type { VirtqueueConfig } from '../virtqueue.js';
import { BufferArena, type MockBuffer, type UsedElement } from './mock-buffers.js';

export interface MockQueueOptions {
  size?: number;
  /** Byte offset in the memory where the rings start (default 0); buffers follow. */
  offset?: number;
  /** Bytes reserved for buffers after the rings. Default: up to `arenaEnd`. */
  arenaSize?: number;
  /** Offset in memory where the buffer arena ends (e.g. a guard hole). Default: the memory's end. */
  arenaEnd?: number;
  eventIdx?: boolean;
  indirect?: boolean;
  /** Seed for the random gaps placed between buffers. */
  seed?: number;
}

export interface ChainOptions {
  /** Put the chain in an indirect table (one ring descriptor). */
  indirect?: boolean;
  /** Do not make it available yet (build corrupt chains by hand first). */
  noPublish?: boolean;
}

/**
 * The driver's side of a split virtqueue, for tests: lays out real rings in test memory,
 * places buffers at random gaps (so nothing blindly reads contiguous memory), and can
 * corrupt anything on purpose. Modelled on rust-vmm's MockSplitQueue.
 */
export class MockSplitQueue {
  readonly packed = false;
  readonly size: number;
  readonly descAddress: bigint;
  readonly availAddress: bigint;
  readonly usedAddress: bigint;
  readonly arena: BufferArena;
  private readonly descOffset: number;
  private readonly availOffset: number;
  private readonly usedOffset: number;
  private freeDescriptors: number[];
  private readonly chainDescriptors = new Map<number, number[]>();
  private availIdx = 0;
  private lastUsedIdx = 0;

  constructor(
    readonly memory: TestMemory,
    private readonly options: MockQueueOptions = {},
  ) {
    const size = options.size ?? 256;
    this.size = size;
    const start = options.offset ?? 0;
    this.descOffset = align(start, 16);
    this.availOffset = align(this.descOffset + size * DESC_SIZE, 2);
    this.usedOffset = align(this.availOffset + availRingSize(size), 4096);
    const arenaStart = align(this.usedOffset + usedRingSize(size), 64);
    const arenaSize = options.arenaSize ?? (options.arenaEnd ?? memory.size) - arenaStart;
    this.arena = new BufferArena(memory, arenaStart, arenaSize, options.seed ?? 1);
    this.descAddress = memory.address(this.descOffset);
    this.availAddress = memory.address(this.availOffset);
    this.usedAddress = memory.address(this.usedOffset);
    this.freeDescriptors = Array.from({ length: size }, (_, i) => size - 1 - i);
    memory.bytes.fill(0, this.descOffset, arenaStart);
  }

  /** The queue as a transport would hand it to the device. */
  get config(): VirtqueueConfig {
    return {
      size: this.size,
      maxSize: this.size,
      desc: this.descAddress,
      driver: this.availAddress,
      device: this.usedAddress,
      eventIdx: this.options.eventIdx ?? false,
      indirect: this.options.indirect ?? false,
    };
  }

  private get view(): DataView {
    return this.memory.dataView;
  }

  /** Free descriptors left in the table. */
  get freeCount(): number {
    return this.freeDescriptors.length;
  }

  /**
   * Adds a chain of buffers (readable ones first, as the spec requires) and makes it
   * available. Returns the head and the buffers' guest placement.
   */
  addChain(
    buffers: readonly MockBuffer[],
    options: ChainOptions = {},
  ): { head: number; buffers: PlacedBuffer[] } {
    const placed = buffers.map((buffer) => this.arena.place(buffer));
    let head: number;
    if (options.indirect) {
      const tableOffset = this.arena.allocate(placed.length * DESC_SIZE, 16);
      placed.forEach((buffer, i) => {
        const last = i === placed.length - 1;
        this.writeDescriptorAt(tableOffset + i * DESC_SIZE, {
          address: buffer.address,
          length: buffer.length,
          flags: (buffer.writable ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT),
          next: last ? 0 : i + 1,
        });
      });
      const index = this.takeDescriptor();
      this.writeDescriptor(index, {
        address: this.memory.address(tableOffset),
        length: placed.length * DESC_SIZE,
        flags: VIRTQ_DESC_F_INDIRECT,
        next: 0,
      });
      head = index;
      this.chainDescriptors.set(head, [index]);
    } else {
      if (placed.length > this.freeDescriptors.length) throw new Error('mock queue: out of descriptors');
      const indices = placed.map(() => this.takeDescriptor());
      placed.forEach((buffer, i) => {
        const last = i === placed.length - 1;
        this.writeDescriptor(indices[i]!, {
          address: buffer.address,
          length: buffer.length,
          flags: (buffer.writable ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT),
          next: last ? 0 : indices[i + 1]!,
        });
      });
      head = indices[0]!;
      this.chainDescriptors.set(head, indices);
    }
    if (!options.noPublish) this.publish(head);
    return { head, buffers: placed };
  }

  /** Puts a head in the avail ring and moves avail.idx (the driver's publish). */
  publish(head: number): void {
    this.view.setUint16(this.availOffset + AVAIL_RING + 2 * (this.availIdx % this.size), head, true);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.view.setUint16(this.availOffset + AVAIL_IDX, this.availIdx, true);
  }

  private takeDescriptor(): number {
    const index = this.freeDescriptors.pop();
    if (index === undefined) throw new Error('mock queue: out of descriptors');
    return index;
  }

  /** Writes a raw descriptor into the table (for corrupt chains). */
  writeDescriptor(index: number, descriptor: RawDescriptor): void {
    this.writeDescriptorAt(this.descOffset + index * DESC_SIZE, descriptor);
  }

  /** Writes a raw descriptor anywhere in memory (e.g. into an indirect table). */
  writeDescriptorAt(offset: number, descriptor: RawDescriptor): void {
    const view = this.view;
    view.setBigUint64(offset, descriptor.address, true);
    view.setUint32(offset + 8, descriptor.length >>> 0, true);
    view.setUint16(offset + 12, descriptor.flags, true);
    view.setUint16(offset + 14, descriptor.next, true);
  }

  /** Sets avail.idx to any value, valid or not. */
  setAvailIdx(value: number): void {
    this.availIdx = value & 0xffff;
    this.view.setUint16(this.availOffset + AVAIL_IDX, this.availIdx, true);
  }

  /** Writes a raw head into avail ring slot `slot` (for out-of-range heads). */
  setAvailEntry(slot: number, head: number): void {
    this.view.setUint16(this.availOffset + AVAIL_RING + 2 * (slot % this.size), head, true);
  }

  get availIndex(): number {
    return this.availIdx;
  }

  setAvailFlags(flags: number): void {
    this.view.setUint16(this.availOffset + AVAIL_FLAGS, flags, true);
  }

  /** Turns used-buffer notifications off or on with VIRTQ_AVAIL_F_NO_INTERRUPT (spec 2.7.7). */
  setInterruptSuppression(suppress: boolean): void {
    this.setAvailFlags(suppress ? VIRTQ_AVAIL_F_NO_INTERRUPT : 0);
  }

  /** used_event, the driver's interrupt threshold (EVENT_IDX). */
  setUsedEvent(value: number): void {
    this.view.setUint16(this.availOffset + availUsedEventOffset(this.size), value, true);
  }

  get usedIdx(): number {
    return this.view.getUint16(this.usedOffset + USED_IDX, true);
  }

  get usedFlags(): number {
    return this.view.getUint16(this.usedOffset + USED_FLAGS, true);
  }

  /** avail_event, the device's kick threshold (EVENT_IDX). */
  get availEvent(): number {
    return this.view.getUint16(this.usedOffset + usedAvailEventOffset(this.size), true);
  }

  /** Used elements published since the last call; their descriptors return to the free list. */
  takeUsed(): UsedElement[] {
    const out: UsedElement[] = [];
    const idx = this.usedIdx;
    while (this.lastUsedIdx !== idx) {
      const slot = this.usedOffset + USED_RING + (this.lastUsedIdx % this.size) * USED_ELEM_SIZE;
      const id = this.view.getUint32(slot, true);
      const length = this.view.getUint32(slot + 4, true);
      out.push({ id, length });
      const descriptors = this.chainDescriptors.get(id);
      if (descriptors) {
        this.chainDescriptors.delete(id);
        this.freeDescriptors.push(...descriptors);
      }
      this.lastUsedIdx = (this.lastUsedIdx + 1) & 0xffff;
    }
    return out;
  }
}

export interface RawDescriptor {
  address: bigint;
  length: number;
  flags: number;
  next: number;
}

export interface PlacedBuffer {
  address: bigint;
  length: number;
  writable: boolean;
  /** Offset of the buffer in the memory's `bytes`. */
  offset: number;
}

function align(value: number, to: number): number {
  return Math.ceil(value / to) * to;
}
