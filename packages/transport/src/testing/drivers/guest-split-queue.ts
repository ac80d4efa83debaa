import { PAGE_SIZE } from '@xvio/grant-pool';
import type { SimDomain } from '@xvio/xen';
import {
  AVAIL_IDX,
  AVAIL_RING,
  availRingSize,
  availUsedEventOffset,
  DESC_ADDR,
  DESC_FLAGS,
  DESC_LEN,
  DESC_NEXT,
  DESC_SIZE,
  USED_ELEM_SIZE,
  USED_FLAGS,
  USED_IDX,
  USED_RING,
  usedAvailEventOffset,
  usedRingSize,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
  vringNeedEvent,
} from '../../split-ring-wire.js';
import { type DmaMapping, DmaRevokeError, type GuestDma } from './guest-dma.js';

const fenceCell = new Int32Array(new SharedArrayBuffer(4));

/** A buffer the guest adds: readable bytes for the device, or room the device writes. */
export type GuestBuffer = { readonly data: Uint8Array } | { readonly writable: number };

/** A completed chain, as the guest driver reads it back. */
export interface GuestUsed {
  readonly head: number;
  /** The used element's length: bytes the device wrote. */
  readonly length: number;
  /** What the device wrote into each writable buffer (only the first `length` bytes in total). */
  readonly written: Uint8Array[];
}

interface InFlight {
  readonly descriptors: number[];
  readonly mappings: DmaMapping[];
  readonly pages: { first: number; count: number }[];
  readonly writable: { physical: number; length: number }[];
}

/**
 * The guest driver's end of a split virtqueue (Linux's virtio_ring.c, no indirect, no event
 * index): rings in guest pages mapped for the device once (dma_alloc_coherent), each buffer
 * in its own pages mapped per request and unmapped when the used element is read, as
 * grant-dma-ops does. A revocation that fails marks the queue broken, as Linux does.
 */
export class GuestSplitQueue {
  readonly descAddress: bigint;
  readonly driverAddress: bigint;
  readonly deviceAddress: bigint;
  private readonly ringFirstFrame: number;
  private readonly ringPages: number;
  private readonly ringMapping: DmaMapping;
  private readonly descOffset: number;
  private readonly availOffset: number;
  private readonly usedOffset: number;
  private readonly free: number[];
  private readonly inFlight = new Map<number, InFlight>();
  private availIdx = 0;
  private kickedIdx = 0;
  private lastUsed = 0;
  private bufferOffset = 0;
  /** Set when unmapping failed (the backend kept a grant): Linux stops using the device. */
  broken = false;
  brokenReason: unknown;

  constructor(
    private readonly domain: SimDomain,
    private readonly dma: GuestDma,
    readonly index: number,
    readonly size: number,
    /** VIRTIO_F_EVENT_IDX was negotiated: used_event / avail_event instead of the flags. */
    readonly eventIdx = false,
  ) {
    const availBytes = availRingSize(size);
    const descBytes = size * DESC_SIZE;
    const usedStart = alignUp(descBytes + availBytes, PAGE_SIZE);
    const total = usedStart + usedRingSize(size);
    this.ringPages = Math.ceil(total / PAGE_SIZE);
    this.ringFirstFrame = this.allocate(this.ringPages);
    const physical = this.ringFirstFrame * PAGE_SIZE;
    this.descOffset = physical;
    this.availOffset = physical + descBytes;
    this.usedOffset = physical + usedStart;
    domain.memory.fill(0, physical, physical + this.ringPages * PAGE_SIZE);
    this.ringMapping = dma.map(BigInt(physical), this.ringPages * PAGE_SIZE, 'bidirectional');
    this.descAddress = this.ringMapping.address;
    this.driverAddress = this.ringMapping.address + BigInt(descBytes);
    this.deviceAddress = this.ringMapping.address + BigInt(usedStart);
    this.free = Array.from({ length: size }, (_, i) => size - 1 - i);
  }

  /** Pages for rings and buffers: from the DMA pool when it has one with room, else guest RAM. */
  private allocate(count: number): number {
    return this.dma.allocatePages?.(count) ?? this.domain.allocatePages(count);
  }

  private freeBufferPages(first: number, count: number): void {
    if (!this.dma.freePages?.(first, count)) this.domain.freePages(first, count);
  }

  private get view(): DataView {
    return this.domain.memoryView;
  }

  get freeDescriptors(): number {
    return this.free.length;
  }

  get inFlightCount(): number {
    return this.inFlight.size;
  }

  /**
   * Adds a chain (readable buffers first, 2.7.4.2) and publishes it. Returns the head, or
   * undefined when the ring has no room.
   */
  add(buffers: readonly GuestBuffer[]): number | undefined {
    if (buffers.length === 0 || buffers.length > this.free.length || this.broken) return undefined;
    const ordered = [...buffers.filter((b) => 'data' in b), ...buffers.filter((b) => !('data' in b))];
    const entry: InFlight = { descriptors: [], mappings: [], pages: [], writable: [] };
    for (const buffer of ordered) {
      const length = 'data' in buffer ? buffer.data.length : buffer.writable;
      // Buffers start at a varying offset so that offsets and page crossings get exercised.
      this.bufferOffset = (this.bufferOffset + 328) % 2048;
      const offset = this.bufferOffset;
      const count = Math.max(1, Math.ceil((offset + length) / PAGE_SIZE));
      const first = this.allocate(count);
      entry.pages.push({ first, count });
      const physical = first * PAGE_SIZE + offset;
      if ('data' in buffer) this.domain.memory.set(buffer.data, physical);
      else {
        this.domain.memory.fill(0xee, physical, physical + length);
        entry.writable.push({ physical, length });
      }
      const mapping = this.dma.map(BigInt(physical), length, 'data' in buffer ? 'to-device' : 'from-device');
      entry.mappings.push(mapping);
      const descriptor = this.free.pop() as number;
      entry.descriptors.push(descriptor);
      const at = this.descOffset + descriptor * DESC_SIZE;
      this.view.setBigUint64(at + DESC_ADDR, mapping.address, true);
      this.view.setUint32(at + DESC_LEN, length, true);
      this.view.setUint16(at + DESC_FLAGS, 'data' in buffer ? 0 : VIRTQ_DESC_F_WRITE, true);
      this.view.setUint16(at + DESC_NEXT, 0, true);
    }
    for (let i = 0; i < entry.descriptors.length - 1; i++) {
      const at = this.descOffset + (entry.descriptors[i] as number) * DESC_SIZE;
      this.view.setUint16(
        at + DESC_FLAGS,
        this.view.getUint16(at + DESC_FLAGS, true) | VIRTQ_DESC_F_NEXT,
        true,
      );
      this.view.setUint16(at + DESC_NEXT, entry.descriptors[i + 1] as number, true);
    }
    const head = entry.descriptors[0] as number;
    this.inFlight.set(head, entry);
    this.view.setUint16(this.availOffset + AVAIL_RING + 2 * (this.availIdx % this.size), head, true);
    // virtio_wmb: the ring entry is visible before the index that publishes it.
    Atomics.store(fenceCell, 0, 0);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.view.setUint16(this.availOffset + AVAIL_IDX, this.availIdx, true);
    return head;
  }

  /**
   * virtqueue_kick_prepare: whether the device wants a notification for what was added since
   * the last call (avail_event with VIRTIO_F_EVENT_IDX, else VIRTQ_USED_F_NO_NOTIFY).
   */
  kickPrepare(): boolean {
    // virtio_mb: the new avail idx is visible before we read the device's suppression state.
    Atomics.store(fenceCell, 0, 0);
    const old = this.kickedIdx;
    this.kickedIdx = this.availIdx;
    if (this.eventIdx) {
      const event = this.view.getUint16(this.usedOffset + usedAvailEventOffset(this.size), true);
      return vringNeedEvent(event, this.availIdx, old);
    }
    return (this.view.getUint16(this.usedOffset + USED_FLAGS, true) & VIRTQ_USED_F_NO_NOTIFY) === 0;
  }

  /** Used elements not yet collected. */
  get usedPending(): number {
    return (this.view.getUint16(this.usedOffset + USED_IDX, true) - this.lastUsed) & 0xffff;
  }

  /** Reads every new used element, unmaps (revokes) its buffers and frees its pages. */
  collect(): GuestUsed[] {
    const out: GuestUsed[] = [];
    const usedIdx = this.view.getUint16(this.usedOffset + USED_IDX, true);
    while (this.lastUsed !== usedIdx) {
      const at = this.usedOffset + USED_RING + USED_ELEM_SIZE * (this.lastUsed % this.size);
      const head = this.view.getUint32(at, true);
      const length = this.view.getUint32(at + 4, true);
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
      const entry = this.inFlight.get(head);
      if (!entry) {
        // Linux: "id %u is not a head!" -> BAD_RING, the queue is broken.
        this.broken = true;
        this.brokenReason = new Error(`used id ${head} is not a head in flight`);
        break;
      }
      this.inFlight.delete(head);
      out.push({ head, length, written: this.release(entry, length) });
    }
    // virtqueue_enable_cb: with event indexes, ask for an interrupt at the next used element.
    if (this.eventIdx)
      this.view.setUint16(this.availOffset + availUsedEventOffset(this.size), this.lastUsed, true);
    return out;
  }

  private release(entry: InFlight, length: number): Uint8Array[] {
    for (const mapping of entry.mappings) {
      try {
        mapping.unmap();
      } catch (error) {
        if (!DmaRevokeError.isInstance(error)) throw error;
        this.broken = true;
        this.brokenReason = error;
      }
    }
    let left = length;
    const written = entry.writable.map(({ physical, length: size }) => {
      const n = Math.max(0, Math.min(size, left));
      left -= n;
      return this.domain.memory.slice(physical, physical + n);
    });
    for (const descriptor of entry.descriptors) this.free.push(descriptor);
    for (const { first, count } of entry.pages) this.freeBufferPages(first, count);
    return written;
  }

  /** Driver removal or reset: drops every request in flight and unmaps the rings. */
  destroy(): void {
    for (const entry of this.inFlight.values()) this.release(entry, 0);
    this.inFlight.clear();
    try {
      this.ringMapping.unmap();
    } catch (error) {
      if (!DmaRevokeError.isInstance(error)) throw error;
      this.broken = true;
      this.brokenReason = error;
    }
    this.freeBufferPages(this.ringFirstFrame, this.ringPages);
  }
}

function alignUp(value: number, to: number): number {
  return Math.ceil(value / to) * to;
}
