import type { GuestMemory } from '@xvio/grant-pool';
import { SplitQueue } from './split-queue.js';
import { VirtqueueError } from './virtio-errors.js';
import type { Virtqueue, VirtqueueConfig, VirtqueueState } from './virtqueue.js';

/** Creates the right queue for the negotiated ring format. Throws `VirtqueueError` on a bad setup. */
export function createVirtqueue(
  memory: GuestMemory,
  config: VirtqueueConfig & { packed: boolean },
  state?: VirtqueueState,
): Virtqueue {
  if (config.packed) {
    throw new VirtqueueError('invalid-packed-descriptor', 'packed rings are not offered by this build');
  }
  return new SplitQueue(memory, config, state);
}
