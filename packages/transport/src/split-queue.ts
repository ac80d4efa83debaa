import { type GuestMemory, GuestMemoryError } from '@xvio/grant-pool';
import { ChainPool, type DescriptorChain } from './descriptor-chain.js';
import {
  AVAIL_ALIGN,
  AVAIL_FLAGS,
  AVAIL_IDX,
  AVAIL_RING,
  availRingSize,
  availUsedEventOffset,
  DESC_SIZE,
  DESC_TABLE_ALIGN,
  MAX_QUEUE_SIZE,
  USED_ALIGN,
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
  VIRTQ_USED_F_NO_NOTIFY,
  vringNeedEvent,
} from './split-ring-wire.js';
import { VirtqueueError, type VirtqueueErrorCode } from './virtio-errors.js';
import {
  newVirtqueueStats,
  type Virtqueue,
  type VirtqueueConfig,
  type VirtqueueState,
  type VirtqueueStats,
} from './virtqueue.js';

const MAX_CHAIN_BYTES = 0xffff_ffff;

function dataView(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * Validates where the driver put a queue (spec 2.7 "Virtqueue Part Alignment" and 4.x
 * "queue size"). Throws `VirtqueueError`.
 */
export function checkSplitQueueConfig(config: VirtqueueConfig): void {
  const { size, maxSize } = config;
  if (
    !Number.isInteger(size) ||
    size < 1 ||
    size > Math.min(maxSize, MAX_QUEUE_SIZE) ||
    (size & (size - 1)) !== 0
  ) {
    throw new VirtqueueError(
      'invalid-queue-size',
      `queue size ${size} must be a power of two between 1 and ${Math.min(maxSize, MAX_QUEUE_SIZE)} (spec 2.7)`,
    );
  }
  const misaligned = (address: bigint, align: number) => address % BigInt(align) !== 0n;
  if (
    misaligned(config.desc, DESC_TABLE_ALIGN) ||
    misaligned(config.driver, AVAIL_ALIGN) ||
    misaligned(config.device, USED_ALIGN)
  ) {
    throw new VirtqueueError(
      'misaligned-ring',
      `desc 0x${config.desc.toString(16)}, avail 0x${config.driver.toString(16)}, used 0x${config.device.toString(16)} must be aligned to 16, 2 and 4 (spec 2.7)`,
    );
  }
}

/** The device side of a split virtqueue (spec 2.7). */
export class SplitQueue implements Virtqueue {
  readonly packed = false;
  readonly size: number;
  readonly stats: VirtqueueStats = newVirtqueueStats();
  private brokenError: VirtqueueError | undefined;
  private readonly desc: DataView;
  private readonly avail: DataView;
  private readonly used: DataView;
  private readonly mask: number;
  private readonly eventIdx: boolean;
  private readonly indirect: boolean;
  private readonly usedEventOffset: number;
  private readonly availEventOffset: number;
  /** Next avail ring index to consume, modulo 2^16. */
  private nextAvail: number;
  /** Last avail.idx read from the guest (already validated). */
  private availIdx: number;
  /** Used index including staged elements, modulo 2^16. */
  private nextUsed: number;
  private staged = 0;
  private readonly pool: ChainPool;
  private indirectCopy: Uint8Array | undefined;
  private indirectView: DataView | undefined;
  private lastIndirectTarget: Uint8Array | undefined;
  /** Used index when the driver was last considered for an interrupt. */
  private signalledUsed: number | undefined;

  constructor(
    private readonly memory: GuestMemory,
    config: VirtqueueConfig,
    state?: VirtqueueState,
  ) {
    checkSplitQueueConfig(config);
    const size = config.size;
    this.size = size;
    this.mask = size - 1;
    this.pool = new ChainPool(size);
    this.eventIdx = config.eventIdx;
    this.indirect = config.indirect;
    this.usedEventOffset = availUsedEventOffset(size);
    this.availEventOffset = usedAvailEventOffset(size);
    try {
      this.desc = dataView(memory.view(config.desc, size * DESC_SIZE, 'read'));
      this.avail = dataView(memory.view(config.driver, availRingSize(size), 'read'));
      this.used = dataView(memory.view(config.device, usedRingSize(size), 'write'));
    } catch (error) {
      if (!GuestMemoryError.isInstance(error)) throw error;
      throw new VirtqueueError(
        'ring-unreachable',
        `the rings are not accessible guest memory (${error.code})`,
        {
          cause: error,
        },
      );
    }
    this.nextAvail = (state?.nextAvail ?? 0) & 0xffff;
    this.availIdx = this.nextAvail;
    this.nextUsed = (state?.nextUsed ?? this.nextAvail) & 0xffff;
  }

  get broken(): VirtqueueError | undefined {
    return this.brokenError;
  }

  private fail(code: VirtqueueErrorCode, message: string, cause?: unknown): never {
    this.brokenError = new VirtqueueError(code, message, cause === undefined ? undefined : { cause });
    throw this.brokenError;
  }

  /** Reads avail.idx and checks it (2.7.13.3: the driver moves it by at most the queue size). */
  private refreshAvailIdx(): number {
    const idx = this.avail.getUint16(AVAIL_IDX, true);
    if (((idx - this.nextAvail) & 0xffff) > this.size) {
      this.fail(
        'invalid-avail-idx',
        `avail.idx ${idx} is more than queue size ${this.size} ahead of ${this.nextAvail} (spec 2.7.13.3)`,
      );
    }
    // Ring entries must be read after the index that covers them.
    this.memory.fence('acquire');
    this.availIdx = idx;
    return idx;
  }

  hasAvailable(): boolean {
    if (this.brokenError) return false;
    if (this.availIdx !== this.nextAvail) return true;
    return this.refreshAvailIdx() !== this.nextAvail;
  }

  pop(): DescriptorChain | undefined {
    if (this.brokenError) return undefined;
    if (this.availIdx === this.nextAvail && this.refreshAvailIdx() === this.nextAvail) return undefined;
    const head = this.avail.getUint16(AVAIL_RING + 2 * (this.nextAvail & this.mask), true);
    this.nextAvail = (this.nextAvail + 1) & 0xffff;
    const chain = (head < this.size ? this.readSingle(head) : undefined) ?? this.readChain(head);
    this.stats.popped++;
    return chain;
  }

  /**
   * The common case, a chain of one direct descriptor, without the general walk. It reads
   * each field once; when the flags say NEXT or INDIRECT it returns undefined and
   * `readChain` walks the chain from scratch (its own reads are what it validates and uses).
   * One descriptor trivially satisfies 2.7.5: length < 2^32, no loop, no order to break.
   */
  private readSingle(head: number): DescriptorChain | undefined {
    const desc = this.desc;
    const offset = head * DESC_SIZE;
    const flags = desc.getUint16(offset + 12, true);
    if ((flags & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT)) !== 0) return undefined;
    const chain = this.pool.take();
    const fields = chain.fields;
    const length = desc.getUint32(offset + 8, true);
    const writable = flags & VIRTQ_DESC_F_WRITE ? 1 : 0;
    fields[0] = desc.getUint32(offset, true);
    fields[1] = desc.getUint32(offset + 4, true);
    fields[2] = length;
    fields[3] = writable;
    chain.head = head;
    chain.count = 1;
    chain.readableLength = writable ? 0 : length;
    chain.writableLength = writable ? length : 0;
    chain.ringSlots = 1;
    return chain as unknown as DescriptorChain;
  }

  undoPop(): void {
    this.nextAvail = (this.nextAvail - 1) & 0xffff;
    this.stats.popped--;
  }

  /**
   * Walks a chain once, copying each descriptor into the chain (no double fetch), and checks
   * every rule of spec 2.7.5 on the way.
   */
  private readChain(head: number): DescriptorChain {
    const size = this.size;
    if (head >= size) this.fail('descriptor-out-of-range', `head ${head} >= queue size ${size} (spec 2.7.5)`);
    const chain = this.pool.take();
    const fields = chain.fields;
    let n = 0;
    let table = this.desc;
    let tableSize = size;
    let index = head;
    let inIndirect = false;
    let count = 0;
    let readable = 0;
    let writable = 0;
    for (;;) {
      const offset = index * DESC_SIZE;
      const addressLow = table.getUint32(offset, true);
      const addressHigh = table.getUint32(offset + 4, true);
      const length = table.getUint32(offset + 8, true);
      // flags (@12) and next (@14) in one little-endian load.
      const flagsAndNext = table.getUint32(offset + 12, true);
      const flags = flagsAndNext & 0xffff;
      const next = flagsAndNext >>> 16;
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (!this.indirect)
          this.fail(
            'indirect-not-negotiated',
            'VIRTQ_DESC_F_INDIRECT without VIRTIO_F_INDIRECT_DESC (spec 2.7.5.3.1)',
          );
        if (inIndirect)
          this.fail('nested-indirect', 'VIRTQ_DESC_F_INDIRECT inside an indirect table (spec 2.7.5.3.1)');
        if (flags & VIRTQ_DESC_F_NEXT)
          this.fail(
            'indirect-with-next',
            'VIRTQ_DESC_F_INDIRECT together with VIRTQ_DESC_F_NEXT (spec 2.7.5.3.1)',
          );
        if (length === 0 || length % DESC_SIZE !== 0) {
          this.fail(
            'invalid-indirect-length',
            `indirect table length ${length} is not a non-zero multiple of 16 (spec 2.7.5.3.1)`,
          );
        }
        tableSize = length / DESC_SIZE;
        if (count + tableSize > size) {
          this.fail(
            'chain-too-long',
            `indirect table of ${tableSize} descriptors makes the chain longer than queue size ${size} (spec 2.7.5.3.1)`,
          );
        }
        table = this.readIndirectTable(addressHigh, addressLow, length);
        inIndirect = true;
        index = 0;
        continue;
      }
      if (++count > size)
        this.fail(
          'chain-too-long',
          `chain from head ${head} is longer than queue size ${size}: a loop? (spec 2.7.5.3.1)`,
        );
      if (flags & VIRTQ_DESC_F_WRITE) {
        writable += length;
        fields[n] = addressLow;
        fields[n + 1] = addressHigh;
        fields[n + 2] = length;
        fields[n + 3] = 1;
        n += 4;
      } else {
        if (writable !== 0 || (n > 0 && fields[n - 1] === 1)) {
          this.fail(
            'readable-after-writable',
            `descriptor ${index} is device-readable after a device-writable one (spec 2.7.4.2)`,
          );
        }
        readable += length;
        fields[n] = addressLow;
        fields[n + 1] = addressHigh;
        fields[n + 2] = length;
        fields[n + 3] = 0;
        n += 4;
      }
      if (readable + writable > MAX_CHAIN_BYTES) {
        this.fail('chain-length-overflow', `chain from head ${head} holds 2^32 bytes or more (spec 2.7.5)`);
      }
      if (!(flags & VIRTQ_DESC_F_NEXT)) break;
      if (next >= tableSize)
        this.fail('descriptor-out-of-range', `next ${next} >= table size ${tableSize} (spec 2.7.5)`);
      index = next;
    }
    chain.head = head;
    chain.count = n >> 2;
    chain.readableLength = readable;
    chain.writableLength = writable;
    chain.ringSlots = 1;
    return chain as unknown as DescriptorChain;
  }

  /**
   * Copies an indirect table out of guest memory once (into a buffer the queue reuses: the
   * walk that follows copies every descriptor into the chain), then walks the copy.
   */
  private readIndirectTable(high: number, low: number, length: number): DataView {
    const address =
      high < 0x20_0000 ? BigInt(high * 0x1_0000_0000 + low) : (BigInt(high) << 32n) | BigInt(low);
    if (this.indirectCopy === undefined) {
      // The chain-too-long check bounds any table by the queue size.
      this.indirectCopy = new Uint8Array(this.size * DESC_SIZE);
      this.indirectView = new DataView(this.indirectCopy.buffer);
    }
    try {
      this.memory.read(address, this.indirectTarget(length));
    } catch (error) {
      if (!GuestMemoryError.isInstance(error)) throw error;
      this.fail(
        'descriptor-address-invalid',
        `indirect table at 0x${address.toString(16)}+${length} is not readable (${error.code})`,
        error,
      );
    }
    return this.indirectView!;
  }

  /** The first `length` bytes of the reusable indirect copy (the last view is kept: tables tend to repeat their size). */
  private indirectTarget(length: number): Uint8Array {
    if (this.lastIndirectTarget?.length !== length)
      this.lastIndirectTarget = this.indirectCopy!.subarray(0, length);
    return this.lastIndirectTarget;
  }

  /** Gives a completed (or given-back) chain object to the queue to reuse; see `DescriptorChain`. */
  recycle(chain: DescriptorChain): void {
    this.pool.give(chain);
  }

  addUsed(chain: DescriptorChain, length: number): void {
    if (this.brokenError) return;
    const written = Math.min(length >>> 0, chain.writableLength);
    const slot = USED_RING + (this.nextUsed & this.mask) * USED_ELEM_SIZE;
    this.used.setUint32(slot, chain.head, true);
    this.used.setUint32(slot + 4, written, true);
    this.nextUsed = (this.nextUsed + 1) & 0xffff;
    this.staged++;
    this.stats.used++;
  }

  publishUsed(): number {
    const count = this.staged;
    if (count === 0 || this.brokenError) return 0;
    // Used elements must be visible before the index that publishes them (2.7.8).
    this.memory.fence('release');
    this.used.setUint16(USED_IDX, this.nextUsed, true);
    this.staged = 0;
    this.stats.published += count;
    return count;
  }

  needsNotification(): boolean {
    if (this.brokenError) return false;
    const now = (this.nextUsed - this.staged) & 0xffff;
    const old = this.signalledUsed;
    if (old === now) return false;
    this.signalledUsed = now;
    // Our used.idx store must be visible before we read the driver's suppression (2.7.10).
    this.memory.fence('seq-cst');
    let needed: boolean;
    if (this.eventIdx) {
      const usedEvent = this.avail.getUint16(this.usedEventOffset, true);
      needed = old === undefined || vringNeedEvent(usedEvent, now, old);
    } else {
      needed = (this.avail.getUint16(AVAIL_FLAGS, true) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
    }
    if (needed) this.stats.notificationsNeeded++;
    else this.stats.notificationsSuppressed++;
    return needed;
  }

  enableNotification(): boolean {
    if (this.brokenError) return false;
    if (this.eventIdx) {
      this.used.setUint16(this.availEventOffset, this.nextAvail, true);
    } else {
      this.used.setUint16(USED_FLAGS, this.used.getUint16(USED_FLAGS, true) & ~VIRTQ_USED_F_NO_NOTIFY, true);
    }
    // The driver must see the request for kicks before we look for new chains (2.7.10).
    this.memory.fence('seq-cst');
    return this.refreshAvailIdx() !== this.nextAvail;
  }

  disableNotification(): void {
    if (this.brokenError) return;
    if (this.eventIdx) {
      // avail_event one behind what we have taken: the driver's next publish starts at or
      // after nextAvail, so vring_need_event never asks it to kick (2.7.10) until we enable.
      this.used.setUint16(this.availEventOffset, (this.nextAvail - 1) & 0xffff, true);
      return;
    }
    this.used.setUint16(USED_FLAGS, this.used.getUint16(USED_FLAGS, true) | VIRTQ_USED_F_NO_NOTIFY, true);
  }

  getState(): VirtqueueState {
    return { nextAvail: this.nextAvail, nextUsed: this.nextUsed };
  }
}
