import { activateForTest } from '@xvio/transport/testing';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createRngDevice } from './rng-device.js';
import { SeededEntropySource } from './rng-host.js';
import { RNG_REQUEST_QUEUE } from './rng-wire.js';

const chainArbitrary = fc.record({
  lengths: fc.array(fc.integer({ min: 0, max: 3000 }), { minLength: 1, maxLength: 24 }),
  indirect: fc.boolean(),
});

describe('RngDevice properties', () => {
  it('fills every chain layout with exactly min(writable, cap) bytes of the source stream, in order', () => {
    fc.assert(
      fc.property(
        fc.array(chainArbitrary, { minLength: 1, maxLength: 6 }),
        fc.integer({ min: 1, max: 20_000 }),
        fc.integer(),
        fc.boolean(),
        (chains, cap, seed, packed) => {
          const device = createRngDevice({ source: { kind: 'seeded', seed }, maxBytesPerRequest: cap });
          const harness = activateForTest(device, { packed, memorySize: 4 << 20 });
          try {
            const queue = harness.queue(RNG_REQUEST_QUEUE);
            const placed = chains.map((chain) =>
              queue.addChain(
                chain.lengths.map((length) => ({ writable: true as const, length })),
                // More descriptors than the ring can hold go in an indirect table.
                { indirect: chain.indirect || chain.lengths.length > 8 },
              ),
            );
            harness.kick(RNG_REQUEST_QUEUE);
            const used = queue.takeUsed();
            expect(used.map((element) => element.id)).toEqual(placed.map((chain) => chain.head));
            const expected = new SeededEntropySource({ seed });
            used.forEach((element, i) => {
              const total = chains[i]!.lengths.reduce((a, b) => a + b, 0);
              expect(element.length).toBe(Math.min(total, cap));
              const got = new Uint8Array(element.length);
              let at = 0;
              for (const buffer of placed[i]!.buffers) {
                const n = Math.min(buffer.length, element.length - at);
                got.set(harness.memory.bytes.subarray(buffer.offset, buffer.offset + n), at);
                at += n;
              }
              const want = new Uint8Array(element.length);
              expected.read(want);
              expect(Buffer.from(got).equals(Buffer.from(want))).toBe(true);
            });
            expect(harness.needsReset).toBe(false);
          } finally {
            harness.dispose();
          }
        },
      ),
      { numRuns: 60 },
    );
  });
});
