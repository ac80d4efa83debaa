import { describe, expect, it } from 'vitest';
import {
  decodeInflight,
  decodeRegion,
  decodeVringAddress,
  encodeInflight,
  encodeMemTable,
  encodeMessage,
  encodeSingleRegion,
  encodeVringAddress,
  INFLIGHT_SIZE,
  inflightRegionSize,
  MEM_TABLE_REGIONS,
  payloadView,
  REGION_SIZE,
  REGION_SIZE_XEN,
  Request,
  requestName,
  VRING_ADDR_SIZE,
  XEN_MMAP_FOREIGN,
  XEN_MMAP_GRANT,
  XEN_MMAP_NO_ADVANCE_MAP,
} from './vhost-user-wire.js';

const region = {
  guestAddress: 0x1_0000_0000n,
  size: 0x4000_0000n,
  userAddress: 0x7f12_3456_0000n,
  mmapOffset: 0x8000_0000n,
  xenFlags: 0,
  domid: 0,
};

describe('vhost-user wire format', () => {
  it('lays out a header as request, flags, size, little-endian', () => {
    const bytes = encodeMessage(Request.SET_VRING_NUM, 0x9, Uint8Array.of(1, 2));
    expect([...bytes]).toEqual([8, 0, 0, 0, 9, 0, 0, 0, 2, 0, 0, 0, 1, 2]);
    expect(requestName(Request.GET_VRING_BASE)).toBe('GET_VRING_BASE');
    expect(requestName(200)).toBe('REQUEST_200');
  });

  it('encodes memory tables with 32-byte regions, and 40-byte ones with the Xen fields', () => {
    const plain = encodeMemTable([region, region]);
    expect(plain.length).toBe(MEM_TABLE_REGIONS + 2 * REGION_SIZE);
    expect(payloadView(plain).getUint32(0, true)).toBe(2);
    expect(decodeRegion(payloadView(plain), MEM_TABLE_REGIONS + REGION_SIZE, false)).toEqual(region);
    const xen = { ...region, xenFlags: XEN_MMAP_GRANT | XEN_MMAP_NO_ADVANCE_MAP, domid: 5 };
    const table = encodeMemTable([xen], true);
    expect(table.length).toBe(MEM_TABLE_REGIONS + REGION_SIZE_XEN);
    const view = payloadView(table);
    // xen mmap flags u32 @32, domid u32 @36 of the region (vhost-user.rst).
    expect(view.getUint32(MEM_TABLE_REGIONS + 32, true)).toBe(0x102);
    expect(view.getUint32(MEM_TABLE_REGIONS + 36, true)).toBe(5);
    expect(decodeRegion(view, MEM_TABLE_REGIONS, true)).toEqual(xen);
  });

  it('puts a single region after 8 bytes of padding (ADD/REM_MEM_REG)', () => {
    const single = encodeSingleRegion({ ...region, xenFlags: XEN_MMAP_FOREIGN, domid: 1 }, true);
    expect(single.length).toBe(8 + REGION_SIZE_XEN);
    expect(payloadView(single).getBigUint64(8, true)).toBe(region.guestAddress);
    expect(decodeRegion(payloadView(single), 8, true).domid).toBe(1);
  });

  it('round-trips vring addresses and inflight descriptions', () => {
    const address = { index: 1, flags: 1, desc: 0x7f00n, used: 0x7f10n, avail: 0x7f20n, log: 0n };
    const encoded = encodeVringAddress(address);
    expect(encoded.length).toBe(VRING_ADDR_SIZE);
    expect(decodeVringAddress(encoded)).toEqual(address);
    const inflight = { mmapSize: 4096n, mmapOffset: 0n, numQueues: 2, queueSize: 256 };
    const bytes = encodeInflight(inflight);
    expect(bytes.length).toBe(INFLIGHT_SIZE);
    expect(decodeInflight(bytes)).toEqual(inflight);
    // Header 16 bytes + 16 per descriptor state, rounded up to 64.
    expect(inflightRegionSize(256)).toBe(16 + 16 * 256 + 48);
  });
});
