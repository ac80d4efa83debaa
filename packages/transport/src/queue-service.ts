import { GuestMemoryError } from '@xvio/grant-pool';
import type { DescriptorChain } from './descriptor-chain.js';
import type { DeviceContext } from './virtio-device.js';
import { VirtioError } from './virtio-errors.js';

/**
 * What a chain handler returns: the bytes written into the chain's writable buffers (the
 * chain completes), or `'defer'` when the device cannot serve it now (the chain is given
 * back and served on the next call, e.g. when a host buffer is full or a rate limit holds).
 */
export type ChainResult = number | 'defer';

export interface ServiceResult {
  completed: number;
  /** Chains that faulted on guest memory and were completed with length 0. */
  faulted: number;
  deferred: boolean;
}

/**
 * Serves every available chain of one queue: pop, handle, stage the used element, then one
 * publish and at most one interrupt for the whole batch (Firecracker's pattern). A guest
 * fault on a buffer (read-only grant, revoked grant) completes that chain with length 0;
 * a corrupted ring is reported through `context.fail` (NEEDS_RESET), never thrown.
 * Notifications are re-enabled and re-checked before returning, so no kick is lost.
 * Once the handler returns, the chain belongs to the queue again (it may be reused by a later
 * `pop`): a handler that needs the chain later returns `'defer'` or serves it itself.
 */
export function serviceQueue(
  context: DeviceContext,
  queueIndex: number,
  handler: (chain: DescriptorChain) => ChainResult,
  budget = Number.POSITIVE_INFINITY,
): ServiceResult {
  const result: ServiceResult = { completed: 0, faulted: 0, deferred: false };
  const queue = context.queues[queueIndex];
  if (!queue || queue.broken || context.signal.aborted) return result;
  try {
    for (;;) {
      queue.disableNotification();
      let chain = queue.pop();
      while (chain !== undefined) {
        let length: ChainResult;
        try {
          length = handler(chain);
        } catch (error) {
          if (!GuestMemoryError.isInstance(error) || !error.isGuestFault) throw error;
          if (error.code === 'unmapped' || error.code === 'invalid-range') {
            // A descriptor pointing outside guest memory is ring corruption (spec 2.7.5).
            throw error;
          }
          result.faulted++;
          length = 0;
        }
        if (length === 'defer') {
          queue.undoPop();
          queue.recycle?.(chain);
          result.deferred = true;
          break;
        }
        queue.addUsed(chain, length);
        // The handler returned: the chain is complete and the queue may reuse the object.
        queue.recycle?.(chain);
        result.completed++;
        if (result.completed >= budget) break;
        chain = queue.pop();
      }
      if (queue.publishUsed() > 0 && queue.needsNotification()) context.interrupt(queueIndex);
      if (result.deferred || result.completed >= budget) {
        queue.enableNotification();
        return result;
      }
      if (!queue.enableNotification()) return result;
    }
  } catch (error) {
    if (VirtioError.isInstance(error) || GuestMemoryError.isInstance(error)) {
      context.fail(error);
      return result;
    }
    throw error;
  }
}
