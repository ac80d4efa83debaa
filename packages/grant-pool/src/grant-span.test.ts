import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { grantSpan, grantSpanOfHalves } from './grant-span.js';

/** The decoding spelled out on BigInts, as grant-dma-ops.c lays the address out. */
function reference(address: bigint, length: number) {
  if (!Number.isInteger(length) || length < 0 || length > 0xffff_ffff) return 'invalid-range';
  if (address < 0n || address >= 1n << 64n) return 'invalid-range';
  if ((address & (1n << 63n)) === 0n) return 'unmapped';
  const ref = (address >> 12n) & ((1n << 51n) - 1n);
  const offset = Number(address & 0xfffn);
  const pages = length === 0 ? 0 : Math.ceil((offset + length) / 4096);
  if (ref + BigInt(Math.max(pages, 1)) - 1n > 0xffff_ffffn) return 'grant-out-of-range';
  return { firstRef: Number(ref), offset, length, pages };
}

describe('grantSpan', () => {
  it('agrees with a BigInt reference decoding for any address and length', () => {
    const address = fc.oneof(
      fc.bigInt({ min: -(1n << 65n), max: 1n << 65n }),
      fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
      // Grant addresses near the u32 reference limit and the 64-bit edge.
      fc.bigInt({ min: 0n, max: (1n << 45n) - 1n }).map((low) => (1n << 63n) | low),
      // Where a double cannot hold the address: rounding near 2^64, and far beyond it.
      fc.bigInt({ min: (1n << 64n) - 4096n, max: (1n << 64n) + 4096n }),
      fc.constantFrom(
        0n,
        (1n << 63n) - 1n,
        1n << 63n,
        (1n << 64n) - 1n,
        1n << 64n,
        -1n,
        1n << 1100n,
        -(1n << 1100n),
      ),
    );
    const length = fc.oneof(
      fc.integer({ min: 0, max: 70_000 }),
      fc.constantFrom(0xffff_ffff, 2 ** 32, -1, 1.5),
    );
    fc.assert(
      fc.property(address, length, (a, n) => {
        expect(grantSpan(a, n)).toEqual(reference(a, n));
      }),
      { numRuns: 5000 },
    );
  });

  it('decodes u32 address halves exactly as the whole address', () => {
    const u32 = fc.oneof(
      fc.integer({ min: 0, max: 0xffff_ffff }),
      fc.constantFrom(0, 0xfff, 0x1000, 0x7fff_ffff, 0x8000_0000, 0x8000_0fff, 0x8000_1000, 0xffff_ffff),
    );
    const length = fc.oneof(fc.integer({ min: 0, max: 70_000 }), fc.constantFrom(0xffff_ffff, 2 ** 32, -1));
    fc.assert(
      fc.property(u32, u32, length, (low, high, n) => {
        const address = (BigInt(high) << 32n) | BigInt(low);
        expect(grantSpanOfHalves(low, high, n)).toEqual(reference(address, n));
      }),
      { numRuns: 5000 },
    );
  });

  it('refuses halves that are not u32 values', () => {
    for (const [low, high] of [
      [-1, 0x8000_0000],
      [0, -1],
      [2 ** 32, 0x8000_0000],
      [0, 2 ** 32],
      [0.5, 0x8000_0000],
      [0, Number.NaN],
    ] as const) {
      expect(grantSpanOfHalves(low, high, 16)).toBe('invalid-range');
    }
  });
});
