import type { TestMemory } from '@xvio/grant-pool';
import {
  EVENT_DESC,
  EVENT_FLAGS,
  EVENT_SUPPRESS_SIZE,
  encodeEventDesc,
  isUsed,
  PACKED_DESC_SIZE,
  packedRingSize,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_USED,
  VIRTQ_DESC_F_WRITE,
} from '../packed-ring-wire.js';
import type { VirtqueueConfig } from '../virtqueue.js';
import { BufferArena, type MockBuffer, type UsedElement } from './mock-buffers.js';
import type { ChainOptions, MockQueueOptions, PlacedBuffer } from './mock-split-queue.js';

/** A raw packed descriptor, for building corrupt rings by hand (spec 2.8.13). */
export interface RawPackedDescriptor {
  address: bigint;
  length: number;
  id: number;
  flags: number;
}

/** A chain written with `noPublish`: everything but the head's flags, which `publishPending` stores. */
interface PendingHead {
  offset: number;
  flags: number;
}

/**
 * The driver's side of a packed virtqueue, for tests (spec 2.8): lays out a real descriptor
 * ring and the two event suppression structures in test memory, places buffers at random
 * gaps, tracks both wrap counters like Linux's driver does, and can corrupt anything on
 * purpose. The same shape as `MockSplitQueue`.
 */
export class MockPackedQueue {
  readonly packed = true;
  readonly size: number;
  readonly descAddress: bigint;
  readonly driverEventAddress: bigint;
  readonly deviceEventAddress: bigint;
  readonly arena: BufferArena;
  readonly descOffset: number;
  readonly driverEventOffset: number;
  readonly deviceEventOffset: number;
  /** The driver's next ring position and wrap counter (2.8.1). */
  private nextAvail = 0;
  private availWrap = 1;
  /** Where the driver looks for the next used descriptor, and the wrap counter it expects. */
  private lastUsed = 0;
  private usedWrap = 1;
  private freeIds: number[];
  private freeSlots: number;
  /** Ring slots each in-flight buffer id took. */
  private readonly slotsOfId = new Map<number, number>();
  private pending: PendingHead[] = [];

  constructor(
    readonly memory: TestMemory,
    private readonly options: MockQueueOptions = {},
  ) {
    const size = options.size ?? 256;
    this.size = size;
    const start = options.offset ?? 0;
    this.descOffset = align(start, 16);
    this.driverEventOffset = align(this.descOffset + packedRingSize(size), 4);
    this.deviceEventOffset = this.driverEventOffset + EVENT_SUPPRESS_SIZE;
    const arenaStart = align(this.deviceEventOffset + EVENT_SUPPRESS_SIZE, 64);
    const arenaSize = options.arenaSize ?? (options.arenaEnd ?? memory.size) - arenaStart;
    this.arena = new BufferArena(memory, arenaStart, arenaSize, options.seed ?? 1);
    this.descAddress = memory.address(this.descOffset);
    this.driverEventAddress = memory.address(this.driverEventOffset);
    this.deviceEventAddress = memory.address(this.deviceEventOffset);
    this.freeIds = Array.from({ length: size }, (_, i) => size - 1 - i);
    this.freeSlots = size;
    memory.bytes.fill(0, this.descOffset, arenaStart);
  }

  /** The queue as a transport would hand it to the device. */
  get config(): VirtqueueConfig {
    return {
      size: this.size,
      maxSize: this.size,
      desc: this.descAddress,
      driver: this.driverEventAddress,
      device: this.deviceEventAddress,
      eventIdx: this.options.eventIdx ?? false,
      indirect: this.options.indirect ?? false,
    };
  }

  private get view(): DataView {
    return this.memory.dataView;
  }

  /** Ring slots not taken by in-flight buffers. */
  get freeCount(): number {
    return this.freeSlots;
  }

  /** The driver's next ring position and wrap counter. */
  get availPosition(): { offset: number; wrap: number } {
    return { offset: this.nextAvail, wrap: this.availWrap };
  }

  /** Flags marking a descriptor available for wrap counter `wrap` (2.8.1). */
  availFlags(wrap = this.availWrap): number {
    return wrap ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED;
  }

  /**
   * Adds a buffer (a chain of readable then writable buffers) the way Linux's driver does:
   * all descriptors first, the head's flags last. Returns the buffer id and placements.
   */
  addChain(
    buffers: readonly MockBuffer[],
    options: ChainOptions = {},
  ): { head: number; buffers: PlacedBuffer[] } {
    const placed = buffers.map((buffer) => this.arena.place(buffer));
    const id = this.freeIds.pop();
    if (id === undefined) throw new Error('mock queue: out of buffer ids');
    const descriptors: RawPackedDescriptor[] = [];
    if (options.indirect) {
      const tableOffset = this.arena.allocate(placed.length * PACKED_DESC_SIZE, 16);
      placed.forEach((buffer, i) => {
        this.writeDescriptorAt(tableOffset + i * PACKED_DESC_SIZE, {
          address: buffer.address,
          length: buffer.length,
          id: 0,
          flags: buffer.writable ? VIRTQ_DESC_F_WRITE : 0,
        });
      });
      descriptors.push({
        address: this.memory.address(tableOffset),
        length: placed.length * PACKED_DESC_SIZE,
        id,
        flags: VIRTQ_DESC_F_INDIRECT,
      });
    } else {
      placed.forEach((buffer, i) => {
        const last = i === placed.length - 1;
        descriptors.push({
          address: buffer.address,
          length: buffer.length,
          id,
          flags: (buffer.writable ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT),
        });
      });
    }
    if (descriptors.length > this.freeSlots) {
      this.freeIds.push(id);
      throw new Error('mock queue: out of ring slots');
    }
    this.slotsOfId.set(id, descriptors.length);
    this.freeSlots -= descriptors.length;
    this.writeChain(descriptors, options.noPublish ?? false);
    return { head: id, buffers: placed };
  }

  /**
   * Writes raw descriptors at the driver's next positions, adding the AVAIL/USED bits for
   * each slot's wrap counter, the head's flags last. Advances the driver's position. For
   * corrupt chains: nothing here checks the descriptors.
   */
  writeChain(descriptors: readonly RawPackedDescriptor[], noPublish = false): void {
    let head: PendingHead | undefined;
    for (const descriptor of descriptors) {
      const offset = this.descOffset + this.nextAvail * PACKED_DESC_SIZE;
      const flags = (descriptor.flags & ~(VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED)) | this.availFlags();
      if (head === undefined) {
        head = { offset, flags };
        this.writeDescriptorAt(offset, { ...descriptor, flags: this.availFlags(this.availWrap ^ 1) });
      } else {
        this.writeDescriptorAt(offset, { ...descriptor, flags });
      }
      if (++this.nextAvail === this.size) {
        this.nextAvail = 0;
        this.availWrap ^= 1;
      }
    }
    if (head === undefined) return;
    if (noPublish) this.pending.push(head);
    else this.view.setUint16(head.offset + 14, head.flags, true);
  }

  /** Makes chains added with `noPublish` available (stores their heads' flags), in order. */
  publishPending(): void {
    for (const head of this.pending) this.view.setUint16(head.offset + 14, head.flags, true);
    this.pending = [];
  }

  /** Writes a raw descriptor into ring slot `slot`, flags exactly as given. */
  writeDescriptor(slot: number, descriptor: RawPackedDescriptor): void {
    this.writeDescriptorAt(this.descOffset + slot * PACKED_DESC_SIZE, descriptor);
  }

  /** Writes a raw descriptor anywhere in memory (e.g. into an indirect table). */
  writeDescriptorAt(offset: number, descriptor: RawPackedDescriptor): void {
    const view = this.view;
    view.setBigUint64(offset, descriptor.address, true);
    view.setUint32(offset + 8, descriptor.length >>> 0, true);
    view.setUint16(offset + 12, descriptor.id, true);
    view.setUint16(offset + 14, descriptor.flags, true);
  }

  /** The driver event suppression structure: whether and when the device should interrupt (2.8.10). */
  setDriverEvent(flags: number, offset = 0, wrap = this.usedWrap): void {
    this.view.setUint16(this.driverEventOffset + EVENT_DESC, encodeEventDesc(offset, wrap), true);
    this.view.setUint16(this.driverEventOffset + EVENT_FLAGS, flags, true);
  }

  /** Turns used-buffer notifications off or on (RING_EVENT_FLAGS_DISABLE / ENABLE). */
  setInterruptSuppression(suppress: boolean): void {
    this.setDriverEvent(suppress ? RING_EVENT_FLAGS_DISABLE : RING_EVENT_FLAGS_ENABLE);
  }

  /** The driver's next used position and wrap counter (where it polls). */
  get usedPosition(): { offset: number; wrap: number } {
    return { offset: this.lastUsed, wrap: this.usedWrap };
  }

  /** The device event suppression structure the device writes (2.8.10). */
  get deviceEvent(): { flags: number; offset: number; wrap: number } {
    const desc = this.view.getUint16(this.deviceEventOffset + EVENT_DESC, true);
    return {
      flags: this.view.getUint16(this.deviceEventOffset + EVENT_FLAGS, true),
      offset: desc & 0x7fff,
      wrap: desc >> 15,
    };
  }

  /** Used descriptors published since the last call; their ids and slots return to the free lists. */
  takeUsed(): UsedElement[] {
    const out: UsedElement[] = [];
    for (let guard = 0; guard < this.size; guard++) {
      const offset = this.descOffset + this.lastUsed * PACKED_DESC_SIZE;
      const flags = this.view.getUint16(offset + 14, true);
      if (!isUsed(flags, this.usedWrap)) break;
      const id = this.view.getUint16(offset + 12, true);
      const length = this.view.getUint32(offset + 8, true);
      out.push({ id, length });
      const slots = this.slotsOfId.get(id) ?? 1;
      if (this.slotsOfId.delete(id)) {
        this.freeIds.push(id);
        this.freeSlots += slots;
      }
      this.lastUsed += slots;
      if (this.lastUsed >= this.size) {
        this.lastUsed -= this.size;
        this.usedWrap ^= 1;
      }
    }
    return out;
  }
}

function align(value: number, to: number): number {
  return Math.ceil(value / to) * to;
}
