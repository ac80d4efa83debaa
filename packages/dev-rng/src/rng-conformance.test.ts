import { runConformanceSuite } from '@xvio/transport/testing';
import { expect } from 'vitest';
import { createRngDevice } from './rng-device.js';
import { RNG_REQUEST_QUEUE } from './rng-wire.js';

// The rules every virtio device follows (negotiation, status machine, malformed rings,
// reset in flight, notification suppression), for split and packed rings.
runConformanceSuite({
  name: 'dev-rng',
  create: () => createRngDevice({ source: 'seeded:1' }),
  exercise: {
    queue: RNG_REQUEST_QUEUE,
    request: () => [{ writable: true, length: 64 }],
    check: (used, buffers, harness) => {
      expect(used.length).toBe(64);
      const { offset } = buffers[0]!;
      // 64 bytes of the seeded stream are not all 0xee (the mock's fill) or all zero.
      expect(harness.memory.bytes.subarray(offset, offset + 64).some((b) => b !== 0xee && b !== 0)).toBe(
        true,
      );
    },
  },
});

// The same with a rate limit that never binds in the test, to run the limiter path.
runConformanceSuite({
  name: 'dev-rng rate-limited',
  create: () => createRngDevice({ source: 'seeded:2', maxBytes: 1 << 30, periodMs: 1000 }),
  exercise: {
    request: () => [{ writable: true, length: 32 }],
    check: (used) => expect(used.length).toBe(32),
  },
});
