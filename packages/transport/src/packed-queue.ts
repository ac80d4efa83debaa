import { type GuestMemory, GuestMemoryError } from '@xvio/grant-pool';
import { type ChainFields, ChainPool, type DescriptorChain } from './descriptor-chain.js';
import {
  EVENT_DESC,
  EVENT_FLAGS,
  EVENT_SUPPRESS_SIZE,
  encodeEventDesc,
  PACKED_DESC_ALIGN,
  PACKED_DESC_SIZE,
  PACKED_EVENT_ALIGN,
  packedNeedEvent,
  packedRingSize,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  USED_FLAGS_WRAP_0,
  USED_FLAGS_WRAP_1,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from './packed-ring-wire.js';
import { MAX_QUEUE_SIZE } from './split-ring-wire.js';
import { VirtqueueError, type VirtqueueErrorCode } from './virtio-errors.js';
import {
  newVirtqueueStats,
  type Virtqueue,
  type VirtqueueConfig,
  type VirtqueueState,
  type VirtqueueStats,
} from './virtqueue.js';

const MAX_CHAIN_BYTES = 0xffff_ffff;
/** Descriptors whose flags one `readAhead` keeps (one acquire fence for all of them). */
const AHEAD_LIMIT = 64;

function dataView(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * Validates where the driver put a packed queue. Throws `VirtqueueError`.
 * Packed rings need not be a power of two (2.8.10.1: "Queue Size ... any value up to 32768").
 */
export function checkPackedQueueConfig(config: VirtqueueConfig): void {
  const { size, maxSize } = config;
  const limit = Math.min(maxSize, MAX_QUEUE_SIZE);
  if (!Number.isInteger(size) || size < 1 || size > limit) {
    throw new VirtqueueError(
      'invalid-queue-size',
      `queue size ${size} must be between 1 and ${limit} (spec 2.8.10.1)`,
    );
  }
  const misaligned = (address: bigint, align: number) => address % BigInt(align) !== 0n;
  if (
    misaligned(config.desc, PACKED_DESC_ALIGN) ||
    misaligned(config.driver, PACKED_EVENT_ALIGN) ||
    misaligned(config.device, PACKED_EVENT_ALIGN)
  ) {
    throw new VirtqueueError(
      'misaligned-ring',
      `desc 0x${config.desc.toString(16)}, driver 0x${config.driver.toString(16)}, device 0x${config.device.toString(16)} must be aligned to 16, 4 and 4 (spec 2.8.10.1)`,
    );
  }
}

/**
 * The device side of a packed virtqueue (spec 2.8). One descriptor ring carries both
 * directions: the driver marks descriptors available with its wrap counter, the device
 * overwrites them in place with used descriptors carrying its own wrap counter.
 */
export class PackedQueue implements Virtqueue {
  readonly packed = true;
  readonly size: number;
  readonly stats: VirtqueueStats = newVirtqueueStats();
  private brokenError: VirtqueueError | undefined;
  private readonly ring: DataView;
  /** Written by the driver: whether it wants used-buffer notifications (2.8.10). */
  private readonly driverEvent: DataView;
  /** Written by us: whether we want available-buffer notifications (2.8.10). */
  private readonly deviceEvent: DataView;
  private readonly eventIdx: boolean;
  private readonly indirect: boolean;
  /** Ring offset of the next descriptor to consume, and the driver's wrap counter there (2.8.1). */
  private nextAvail: number;
  private availWrap: number;
  /** Ring offset where the next used descriptor goes, and our wrap counter there (2.8.1). */
  private nextUsed: number;
  private usedWrap: number;
  /** AVAIL and USED bits of a used descriptor for `usedWrap` (2.8.1). */
  private usedFlags: number;
  /** Where the last pop started, for `undoPop`; -1 when there is nothing to undo. */
  private lastPopAvail = -1;
  private lastPopWrap = 1;
  private staged = 0;
  /** The first staged used descriptor: its flags are stored last, in `publishUsed`. */
  private firstStagedOffset = 0;
  private firstStagedFlags = 0;
  /** Ring slots published since the driver was last considered for an interrupt. */
  private slotsSinceSignal = 0;
  private signalledBefore = false;
  private readonly pool: ChainPool;
  /** Flags read ahead by ring offset, and how many slots from `nextAvail` on they cover. */
  private readonly aheadFlags: Uint16Array;
  private ahead = 0;
  private indirectCopy: Uint8Array | undefined;
  private indirectView: DataView | undefined;
  private lastIndirectTarget: Uint8Array | undefined;
  /** Our last write to the device event flags, to skip redundant stores. */
  private deviceEventFlags = -1;

  constructor(
    private readonly memory: GuestMemory,
    config: VirtqueueConfig,
    state?: VirtqueueState,
  ) {
    checkPackedQueueConfig(config);
    const size = config.size;
    this.size = size;
    this.pool = new ChainPool(size);
    this.aheadFlags = new Uint16Array(size);
    this.eventIdx = config.eventIdx;
    this.indirect = config.indirect;
    try {
      // We write used descriptors into the same ring the driver fills (2.8.22).
      this.ring = dataView(memory.view(config.desc, packedRingSize(size), 'write'));
      this.driverEvent = dataView(memory.view(config.driver, EVENT_SUPPRESS_SIZE, 'read'));
      this.deviceEvent = dataView(memory.view(config.device, EVENT_SUPPRESS_SIZE, 'write'));
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
    const nextAvail = state?.nextAvail ?? 0;
    const nextUsed = state?.nextUsed ?? nextAvail;
    if (
      !Number.isInteger(nextAvail) ||
      nextAvail < 0 ||
      nextAvail >= size ||
      !Number.isInteger(nextUsed) ||
      nextUsed < 0 ||
      nextUsed >= size
    ) {
      throw new VirtqueueError(
        'invalid-avail-idx',
        `ring positions ${nextAvail}/${nextUsed} outside a ring of ${size} (spec 2.8.1)`,
      );
    }
    // Both wrap counters start at 1 (2.8.1).
    this.nextAvail = nextAvail;
    this.availWrap = (state?.availWrap ?? true) ? 1 : 0;
    this.nextUsed = nextUsed;
    this.usedWrap = (state?.usedWrap ?? state?.availWrap ?? true) ? 1 : 0;
    this.usedFlags = this.usedWrap ? USED_FLAGS_WRAP_1 : USED_FLAGS_WRAP_0;
  }

  get broken(): VirtqueueError | undefined {
    return this.brokenError;
  }

  private fail(code: VirtqueueErrorCode, message: string, cause?: unknown): never {
    this.brokenError = new VirtqueueError(code, message, cause === undefined ? undefined : { cause });
    throw this.brokenError;
  }

  private availableAt(offset: number, wrap: number): boolean {
    const flags = this.ring.getUint16(offset * PACKED_DESC_SIZE + 14, true);
    return ((flags >> 7) & 1) === wrap && ((flags >> 15) & 1) !== wrap;
  }

  hasAvailable(): boolean {
    if (this.brokenError) return false;
    return this.ahead > 0 || this.availableAt(this.nextAvail, this.availWrap);
  }

  pop(): DescriptorChain | undefined {
    if (this.brokenError) return undefined;
    if (this.ahead === 0 && !this.readAhead()) return undefined;
    const start = this.nextAvail;
    const startWrap = this.availWrap;
    const headFlags = this.aheadFlags[start]!;
    const chain =
      (headFlags & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT)) === 0
        ? this.readSingle(start, startWrap, headFlags)
        : this.readChain(start, startWrap, headFlags);
    this.lastPopAvail = start;
    this.lastPopWrap = startWrap;
    this.stats.popped++;
    return chain;
  }

  /**
   * Reads the flags of the descriptors the driver has made available from `nextAvail` on
   * (at most AHEAD_LIMIT), keeps them, then issues one acquire fence: the driver stores each
   * chain's head flags last, after a write barrier (2.8.21.2), so every field read after this
   * fence is at least as new as the flags seen. Each pop of the window then uses the kept
   * flags (read once) and needs no fence of its own. Returns false when none is available.
   */
  private readAhead(): boolean {
    const ring = this.ring;
    const size = this.size;
    const limit = Math.min(size, AHEAD_LIMIT);
    let index = this.nextAvail;
    let wrap = this.availWrap;
    let count = 0;
    while (count < limit) {
      const flags = ring.getUint16(index * PACKED_DESC_SIZE + 14, true);
      if (((flags >> 7) & 1) !== wrap || ((flags >> 15) & 1) === wrap) break;
      this.aheadFlags[index] = flags;
      count++;
      if (++index === size) {
        index = 0;
        wrap ^= 1;
      }
    }
    if (count === 0) return false;
    this.memory.fence('acquire');
    this.ahead = count;
    return true;
  }

  undoPop(): void {
    if (this.lastPopAvail < 0) return;
    this.ahead = 0;
    this.nextAvail = this.lastPopAvail;
    this.availWrap = this.lastPopWrap;
    this.lastPopAvail = -1;
    this.stats.popped--;
  }

  /**
   * The common case, a buffer of one direct descriptor, without the general walk: each field
   * read once; one descriptor trivially satisfies 2.8.17 (no list, no order). Advances
   * `nextAvail`.
   */
  private readSingle(start: number, startWrap: number, flags: number): DescriptorChain {
    const ring = this.ring;
    const offset = start * PACKED_DESC_SIZE;
    const id = ring.getUint16(offset + 12, true);
    // See readChain for why buffer ids are bounded by the queue size (2.8.13).
    if (id >= this.size)
      this.fail('descriptor-out-of-range', `buffer id ${id} >= queue size ${this.size} (spec 2.8.13)`);
    const chain = this.pool.take();
    const fields = chain.fields;
    const length = ring.getUint32(offset + 8, true);
    const writable = flags & VIRTQ_DESC_F_WRITE ? 1 : 0;
    fields[0] = ring.getUint32(offset, true);
    fields[1] = ring.getUint32(offset + 4, true);
    fields[2] = length;
    fields[3] = writable;
    chain.head = id;
    chain.count = 1;
    chain.readableLength = writable ? 0 : length;
    chain.writableLength = writable ? length : 0;
    chain.ringSlots = 1;
    let next = start + 1;
    if (next === this.size) {
      next = 0;
      this.availWrap = startWrap ^ 1;
    }
    this.nextAvail = next;
    this.ahead--;
    return chain as unknown as DescriptorChain;
  }

  /**
   * Walks one buffer's descriptors once, copying them into the chain (no double fetch), and
   * checks every rule of spec 2.8.17 / 2.8.19 on the way. Advances `nextAvail` on success.
   */
  private readChain(start: number, startWrap: number, headFlags: number): DescriptorChain {
    const size = this.size;
    const ring = this.ring;
    const chain = this.pool.take();
    const fields = chain.fields;
    let n = 0;
    let index = start;
    let wrap = startWrap;
    let flags = headFlags;
    let slots = 0;
    let readable = 0;
    let writable = 0;
    let id: number;
    for (;;) {
      const offset = index * PACKED_DESC_SIZE;
      if (slots > 0) {
        if (slots < this.ahead) {
          flags = this.aheadFlags[index]!; // seen available before the last fence
        } else {
          flags = ring.getUint16(offset + 14, true);
          // 2.8.17: the driver makes every descriptor of a list available before the first.
          if (((flags >> 7) & 1) !== wrap || ((flags >> 15) & 1) === wrap) {
            this.fail(
              'invalid-packed-descriptor',
              `descriptor ${index} continues a chain but is not available (spec 2.8.17)`,
            );
          }
          this.memory.fence('acquire');
        }
      }
      const addressLow = ring.getUint32(offset, true);
      const addressHigh = ring.getUint32(offset + 4, true);
      const length = ring.getUint32(offset + 8, true);
      id = ring.getUint16(offset + 12, true);
      slots++;
      if (++index === size) {
        index = 0;
        wrap ^= 1;
      }
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (!this.indirect) {
          this.fail(
            'indirect-not-negotiated',
            'VIRTQ_DESC_F_INDIRECT without VIRTIO_F_INDIRECT_DESC (spec 2.8.19)',
          );
        }
        if (flags & VIRTQ_DESC_F_NEXT) {
          this.fail(
            'indirect-with-next',
            'VIRTQ_DESC_F_INDIRECT together with VIRTQ_DESC_F_NEXT (spec 2.8.19)',
          );
        }
        if (slots > 1) {
          this.fail(
            'invalid-packed-descriptor',
            'an indirect descriptor inside a list linked by VIRTQ_DESC_F_NEXT (spec 2.8.19)',
          );
        }
        this.readIndirect(addressHigh, addressLow, length, chain);
        readable = chain.readableLength;
        writable = chain.writableLength;
        n = chain.count << 2;
        break;
      }
      if (flags & VIRTQ_DESC_F_WRITE) {
        writable += length;
        fields[n] = addressLow;
        fields[n + 1] = addressHigh;
        fields[n + 2] = length;
        fields[n + 3] = 1;
        n += 4;
      } else {
        // 2.8.17: device-writable elements come after all device-readable ones.
        if (writable !== 0 || (n > 0 && fields[n - 1] === 1)) {
          this.fail(
            'readable-after-writable',
            `descriptor ${index} is device-readable after a device-writable one (spec 2.8.17)`,
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
        this.fail('chain-length-overflow', `chain from ${start} holds 2^32 bytes or more (spec 2.8.4)`);
      }
      // 2.8.6: the buffer id is in the last descriptor of the list.
      if (!(flags & VIRTQ_DESC_F_NEXT)) break;
      // 2.8.17: a list is never longer than the queue size; this also ends a walk around the ring.
      if (slots === size)
        this.fail('chain-too-long', `chain from ${start} is longer than queue size ${size} (spec 2.8.17)`);
    }
    // The spec leaves buffer ids to the driver, but no more than `size` buffers are ever in
    // flight and every driver (Linux, DPDK) numbers them below the queue size; bounding the
    // id lets devices index per-buffer state by it (2.8.13).
    if (id >= size)
      this.fail('descriptor-out-of-range', `buffer id ${id} >= queue size ${size} (spec 2.8.13)`);
    this.nextAvail = index;
    this.availWrap = wrap;
    this.ahead = slots >= this.ahead ? 0 : this.ahead - slots;
    chain.head = id;
    chain.count = n >> 2;
    chain.readableLength = readable;
    chain.writableLength = writable;
    chain.ringSlots = slots;
    return chain as unknown as DescriptorChain;
  }

  /**
   * Copies an indirect table out of guest memory once (into a buffer the queue reuses) and
   * walks the copy into `chain`: its descriptors are used in order, only VIRTQ_DESC_F_WRITE
   * counts (2.8.19). Sets the chain's count and lengths.
   */
  private readIndirect(high: number, low: number, length: number, chain: ChainFields): void {
    if (length === 0 || length % PACKED_DESC_SIZE !== 0) {
      this.fail(
        'invalid-indirect-length',
        `indirect table length ${length} is not a non-zero multiple of 16 (spec 2.8.19)`,
      );
    }
    const count = length / PACKED_DESC_SIZE;
    if (count > this.size) {
      this.fail(
        'chain-too-long',
        `indirect table of ${count} descriptors is longer than queue size ${this.size} (spec 2.8.19)`,
      );
    }
    const address =
      high < 0x20_0000 ? BigInt(high * 0x1_0000_0000 + low) : (BigInt(high) << 32n) | BigInt(low);
    if (this.indirectCopy === undefined) {
      this.indirectCopy = new Uint8Array(this.size * PACKED_DESC_SIZE);
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
    const table = this.indirectView!;
    const fields = chain.fields;
    let n = 0;
    let readable = 0;
    let writable = 0;
    for (let i = 0; i < count; i++) {
      const offset = i * PACKED_DESC_SIZE;
      const flags = table.getUint16(offset + 14, true);
      const size = table.getUint32(offset + 8, true);
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        this.fail('nested-indirect', 'VIRTQ_DESC_F_INDIRECT inside an indirect table (spec 2.8.19)');
      }
      const writableDescriptor = flags & VIRTQ_DESC_F_WRITE ? 1 : 0;
      if (writableDescriptor) {
        writable += size;
      } else {
        if (writable !== 0 || (n > 0 && fields[n - 1] === 1)) {
          this.fail(
            'readable-after-writable',
            `indirect descriptor ${i} is device-readable after a device-writable one (spec 2.8.17)`,
          );
        }
        readable += size;
      }
      fields[n] = table.getUint32(offset, true);
      fields[n + 1] = table.getUint32(offset + 4, true);
      fields[n + 2] = size;
      fields[n + 3] = writableDescriptor;
      n += 4;
      if (readable + writable > MAX_CHAIN_BYTES) {
        this.fail('chain-length-overflow', 'indirect table holds 2^32 bytes or more (spec 2.8.4)');
      }
    }
    chain.count = n >> 2;
    chain.readableLength = readable;
    chain.writableLength = writable;
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
    const writableLength = chain.writableLength;
    const written = Math.min(length >>> 0, writableLength);
    const offset = this.nextUsed * PACKED_DESC_SIZE;
    const ring = this.ring;
    // 2.8.4: in a used descriptor only len (bytes written) and id matter; WRITE says len is valid.
    ring.setUint32(offset + 8, written, true);
    const flags = this.usedFlags | (writableLength > 0 ? VIRTQ_DESC_F_WRITE : 0);
    if (this.staged === 0) {
      // The driver polls the first one (2.8.22): its flags go last, so the batch appears at once.
      ring.setUint16(offset + 12, chain.head, true);
      this.firstStagedOffset = offset;
      this.firstStagedFlags = flags;
    } else {
      // id (@12) and flags (@14) in one little-endian store.
      ring.setUint32(offset + 12, (chain.head | (flags << 16)) >>> 0, true);
    }
    // 2.8.22: the next used descriptor follows all the ring slots this buffer took.
    const slots = chain.ringSlots;
    let next = this.nextUsed + slots;
    if (next >= this.size) {
      next -= this.size;
      this.usedWrap ^= 1;
      this.usedFlags = this.usedWrap ? USED_FLAGS_WRAP_1 : USED_FLAGS_WRAP_0;
    }
    this.nextUsed = next;
    this.staged++;
    this.slotsSinceSignal += slots;
    this.lastPopAvail = -1;
    this.stats.used++;
  }

  publishUsed(): number {
    const count = this.staged;
    if (count === 0 || this.brokenError) return 0;
    // Every staged id/len (and the later flags) must be visible before the first flags (2.8.21.2).
    this.memory.fence('release');
    this.ring.setUint16(this.firstStagedOffset + 14, this.firstStagedFlags, true);
    this.staged = 0;
    this.stats.published += count;
    return count;
  }

  needsNotification(): boolean {
    if (this.brokenError || this.staged !== 0) return false;
    const advanced = this.slotsSinceSignal;
    if (advanced === 0) return false;
    this.slotsSinceSignal = 0;
    const signalledBefore = this.signalledBefore;
    this.signalledBefore = true;
    // Our used descriptors must be visible before we read the driver's suppression (2.8.21.3).
    this.memory.fence('seq-cst');
    const flags = this.driverEvent.getUint16(EVENT_FLAGS, true);
    let needed: boolean;
    if (flags === RING_EVENT_FLAGS_DISABLE) {
      needed = false;
    } else if (flags === RING_EVENT_FLAGS_DESC && this.eventIdx) {
      const offWrap = this.driverEvent.getUint16(EVENT_DESC, true);
      const now = this.nextUsed;
      needed =
        !signalledBefore ||
        advanced >= this.size ||
        packedNeedEvent(this.size, this.usedWrap, offWrap, now, (now - advanced) & 0xffff);
    } else {
      // ENABLE, or a value the driver may not write (DESC without RING_EVENT_IDX, reserved 3):
      // notifying is always safe.
      needed = true;
    }
    if (needed) this.stats.notificationsNeeded++;
    else this.stats.notificationsSuppressed++;
    return needed;
  }

  private setDeviceEventFlags(flags: number): void {
    if (this.deviceEventFlags === flags) return;
    this.deviceEventFlags = flags;
    this.deviceEvent.setUint16(EVENT_FLAGS, flags, true);
  }

  enableNotification(): boolean {
    if (this.brokenError) return false;
    if (this.eventIdx) {
      // 2.8.10: with RING_EVENT_IDX, ask for a kick when the driver reaches our next descriptor.
      this.deviceEvent.setUint16(EVENT_DESC, encodeEventDesc(this.nextAvail, this.availWrap), true);
      this.setDeviceEventFlags(RING_EVENT_FLAGS_DESC);
    } else {
      this.setDeviceEventFlags(RING_EVENT_FLAGS_ENABLE);
    }
    // The driver must see the request for kicks before we look for new buffers (2.8.21.3).
    this.memory.fence('seq-cst');
    return this.availableAt(this.nextAvail, this.availWrap);
  }

  disableNotification(): void {
    if (this.brokenError) return;
    this.setDeviceEventFlags(RING_EVENT_FLAGS_DISABLE);
  }

  getState(): VirtqueueState {
    return {
      nextAvail: this.nextAvail,
      nextUsed: this.nextUsed,
      availWrap: this.availWrap === 1,
      usedWrap: this.usedWrap === 1,
    };
  }
}
