import type { DescriptorChain } from './descriptor-chain.js';
import type { VirtqueueError } from './virtio-errors.js';

/** Where the driver placed a queue and what was negotiated for it. */
export interface VirtqueueConfig {
  /** Queue size the driver chose (split: a power of two; packed: any value 1..32768). */
  readonly size: number;
  /** Largest size the device accepts for this queue. */
  readonly maxSize: number;
  /** Descriptor area (split: descriptor table; packed: descriptor ring). */
  readonly desc: bigint;
  /** Driver area (split: avail ring; packed: driver event suppression). */
  readonly driver: bigint;
  /** Device area (split: used ring; packed: device event suppression). */
  readonly device: bigint;
  /** VIRTIO_F_EVENT_IDX (split) / VIRTIO_F_RING_EVENT_IDX negotiated. */
  readonly eventIdx: boolean;
  /** VIRTIO_F_INDIRECT_DESC negotiated. */
  readonly indirect: boolean;
}

/** Position of a queue, as vhost-user's GET/SET_VRING_BASE carry it (packed: with wrap counters). */
export interface VirtqueueState {
  nextAvail: number;
  nextUsed: number;
  availWrap?: boolean;
  usedWrap?: boolean;
}

/**
 * The device side of one virtqueue, split or packed. The queue never owns guest memory; it
 * was given the memory when created and reaches the rings only through it.
 */
export interface Virtqueue {
  readonly size: number;
  readonly packed: boolean;
  /** Set once the driver corrupted the queue; every later call is a no-op. */
  readonly broken: VirtqueueError | undefined;
  /** Takes the next available chain, or undefined when there is none. Throws `VirtqueueError` and breaks the queue. */
  pop(): DescriptorChain | undefined;
  /** Gives back the last popped chain so the next `pop` returns it again (device could not serve it yet). */
  undoPop(): void;
  /** Whether the driver has made chains available that were not popped yet. */
  hasAvailable(): boolean;
  /** Stages a used element; nothing is visible to the driver until `publishUsed`. */
  addUsed(chain: DescriptorChain, length: number): void;
  /**
   * Optional: gives a chain the device is done with (completed with `addUsed`, or given back
   * with `undoPop`) to the queue to reuse for a later `pop`, sparing an allocation per chain.
   * The device must not touch the chain afterwards. `serviceQueue` calls it.
   */
  recycle?(chain: DescriptorChain): void;
  /** Makes staged used elements visible: one release fence, one index store. Returns how many. */
  publishUsed(): number;
  /** Whether the driver wants an interrupt for what was published since the last notification. */
  needsNotification(): boolean;
  /** Asks the driver for kicks again; returns true if chains arrived meanwhile (process them). */
  enableNotification(): boolean;
  /** Tells the driver kicks are not needed while the device is polling. */
  disableNotification(): void;
  getState(): VirtqueueState;
  /** Counters for metrics. */
  readonly stats: VirtqueueStats;
}

export interface VirtqueueStats {
  popped: number;
  used: number;
  published: number;
  notificationsNeeded: number;
  notificationsSuppressed: number;
}

export function newVirtqueueStats(): VirtqueueStats {
  return { popped: 0, used: 0, published: 0, notificationsNeeded: 0, notificationsSuppressed: 0 };
}
