import { describe, expect, it } from 'vitest';
import { ChainPool, DescriptorChain } from './descriptor-chain.js';

describe('DescriptorChain', () => {
  it('keeps 64-bit addresses whole, grant addresses (bit 63) included', () => {
    const chain = new DescriptorChain(
      3,
      [0x1000, 0, 16, 0, 0xffff_f000, 0x8000_0001, 32, 1, 0x10, 0x1f_ffff, 8, 1],
      16,
      40,
      3,
    );
    expect(chain.count).toBe(3);
    expect(chain.readableCount).toBe(1);
    expect(chain.address(0)).toBe(0x1000n);
    expect(chain.address(1)).toBe(0x8000_0001_ffff_f000n);
    expect(chain.address(2)).toBe(0x1f_ffff_0000_0010n);
    expect(chain.isWritable(0)).toBe(false);
    expect(chain.isWritable(1)).toBe(true);
    expect(chain.ranges()).toEqual([
      { address: 0x1000n, length: 16, access: 'read' },
      { address: 0x8000_0001_ffff_f000n, length: 32, access: 'write' },
      { address: 0x1f_ffff_0000_0010n, length: 8, access: 'write' },
    ]);
  });
});

describe('DescriptorChain.descriptorRanges', () => {
  it('gives the same ranges as ranges(), with the address halves as the ring held them', () => {
    const chain = new DescriptorChain(
      0,
      [0x1000, 0, 16, 0, 0xffff_f000, 0x8000_0001, 32, 1, 0x10, 0x1f_ffff, 8, 1, 7, 0x20_0000, 4, 1],
      16,
      44,
      4,
    );
    const ranges = chain.descriptorRanges();
    expect(ranges.map(({ address, length, access }) => ({ address, length, access }))).toEqual(
      chain.ranges(),
    );
    expect(ranges.map((range) => [range.addressLow, range.addressHigh])).toEqual([
      [0x1000, 0],
      [0xffff_f000, 0x8000_0001],
      [0x10, 0x1f_ffff],
      [7, 0x20_0000],
    ]);
    expect(ranges[3]?.address).toBe(0x20_0000_0000_0007n);
  });
});

describe('ChainPool', () => {
  it('reuses a chain given back, once, and ignores chains of other pools', () => {
    const pool = new ChainPool(4);
    const other = new ChainPool(4);
    const first = pool.take() as unknown as DescriptorChain;
    pool.give(first);
    pool.give(first); // a second give of the same chain must not make it appear twice
    const foreign = other.take() as unknown as DescriptorChain;
    pool.give(foreign);
    pool.give(new DescriptorChain(0, [], 0, 0, 0));
    expect(pool.take()).toBe(first);
    expect(pool.take()).not.toBe(first);
  });

  it('keeps at most its limit', () => {
    const pool = new ChainPool(1);
    const chains = [pool.take(), pool.take(), pool.take()] as unknown as DescriptorChain[];
    for (const chain of chains) pool.give(chain);
    const again = new Set([pool.take(), pool.take(), pool.take()]);
    // The spare slot plus one in the free list: two of the three come back.
    expect(chains.filter((chain) => again.has(chain as never)).length).toBe(2);
  });
});
