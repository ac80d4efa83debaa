import type { GuestMemory } from '@xvio/grant-pool';
import { PackedQueue } from './packed-queue.js';
import { SplitQueue } from './split-queue.js';
import type { Virtqueue, VirtqueueConfig, VirtqueueState } from './virtqueue.js';

/**
 * Creates the right queue for the negotiated ring format: packed when VIRTIO_F_RING_PACKED
 * was negotiated (spec 2.8), split otherwise (2.7). Throws `VirtqueueError` on a bad setup.
 */
export function createVirtqueue(
  memory: GuestMemory,
  config: VirtqueueConfig & { packed: boolean },
  state?: VirtqueueState,
): Virtqueue {
  if (config.packed) return new PackedQueue(memory, config, state);
  return new SplitQueue(memory, config, state);
}
