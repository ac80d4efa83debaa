import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from './grant-address.js';
import { grantSpan } from './grant-span.js';
import {
  decodePoolTable,
  encodePoolTable,
  POOL_TABLE_MAGIC,
  POOL_TABLE_MAX_REFS,
} from './pool-table-wire.js';

describe('pool table wire format', () => {
  it('round-trips references, little-endian after the magic and count', () => {
    const page = encodePoolTable([8, 9, 0xffff_ffff]);
    const view = new DataView(page.buffer);
    expect(view.getUint32(0, true)).toBe(POOL_TABLE_MAGIC);
    expect(new TextDecoder().decode(page.subarray(0, 4))).toBe('XVPT');
    expect(view.getUint32(4, true)).toBe(3);
    expect(view.getUint32(8 + 2 * 4, true)).toBe(0xffff_ffff);
    expect(decodePoolTable(page)).toEqual([8, 9, 0xffff_ffff]);
  });

  it('rejects a wrong magic, a count beyond one page and a short page', () => {
    const page = encodePoolTable([1]);
    page[0] = 0;
    expect(decodePoolTable(page)).toBeUndefined();
    const big = encodePoolTable([]);
    new DataView(big.buffer).setUint32(4, POOL_TABLE_MAX_REFS + 1, true);
    expect(decodePoolTable(big)).toBeUndefined();
    expect(decodePoolTable(new Uint8Array(4))).toBeUndefined();
    expect(POOL_TABLE_MAX_REFS).toBe((PAGE_SIZE - 8) / 4);
    expect(() => encodePoolTable(new Array(POOL_TABLE_MAX_REFS + 1).fill(0))).toThrow(RangeError);
  });
});

describe('grant address spans', () => {
  const flag = 1n << 63n;

  it('counts the pages a range touches, from its offset', () => {
    expect(grantSpan(flag | (10n << 12n) | 4000n, 200)).toEqual({
      firstRef: 10,
      offset: 4000,
      length: 200,
      pages: 2,
    });
    expect(grantSpan(flag | (10n << 12n), 0)).toEqual({ firstRef: 10, offset: 0, length: 0, pages: 0 });
    expect(grantSpan(flag | (10n << 12n), 4096)).toMatchObject({ pages: 1 });
  });

  it('bounds references to a u32 and lengths to 32 bits', () => {
    expect(grantSpan(flag | (0xffff_ffffn << 12n), 4096)).toMatchObject({ firstRef: 0xffff_ffff, pages: 1 });
    expect(grantSpan(flag | (0xffff_ffffn << 12n), 4097)).toBe('grant-out-of-range');
    expect(grantSpan(flag | (0x1_0000_0000n << 12n), 0)).toBe('grant-out-of-range');
    expect(grantSpan(flag, 2 ** 32)).toBe('invalid-range');
    expect(grantSpan(0x1000n, 16)).toBe('unmapped');
    expect(grantSpan(-1n, 16)).toBe('invalid-range');
    expect(grantSpan(1n << 64n, 0)).toBe('invalid-range');
  });
});
