import type { TestMemory } from '@xvio/grant-pool';
import type { MockBuffer, PlacedBuffer, UsedElement } from '@xvio/transport/testing';
import type { QueueWorkload } from './demo-guest-driver.js';

/** What a guest's driver counted for one device (the guest's view, next to the device's own metrics). */
export interface GuestCounters {
  requests: number;
  bytes: number;
  /** Completions the guest found wrong (e.g. a used length beyond its buffer). */
  errors: number;
}

export function newGuestCounters(): GuestCounters {
  return { requests: 0, bytes: 0, errors: 0 };
}

function writableLength(buffers: readonly PlacedBuffer[]): number {
  return buffers.reduce((sum, buffer) => sum + (buffer.writable ? buffer.length : 0), 0);
}

/**
 * virtio-rng's driver (Linux drivers/char/hw_random/virtio-rng.c): one queue, a writable
 * buffer per request, the device fills it with entropy. Sizes vary like `dd bs=`.
 */
export function rngWorkloads(counters: GuestCounters, random: () => number): QueueWorkload[] {
  const sizes = [64, 256, 1024, 4096];
  return [
    {
      depth: 16,
      next: (): MockBuffer[] => [{ writable: true, length: sizes[Math.floor(random() * sizes.length)]! }],
      complete: (used: UsedElement, buffers: readonly PlacedBuffer[], _memory: TestMemory) => {
        counters.requests++;
        if (used.length > writableLength(buffers)) counters.errors++;
        else counters.bytes += used.length;
      },
    },
  ];
}
