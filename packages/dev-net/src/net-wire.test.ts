import { describe, expect, it } from 'vitest';
import {
  brokenFeatureDependency,
  decodeNetHeader,
  encodeNetHeader,
  formatMac,
  HDR_SIZE,
  HDR_SIZE_HASH,
  HDR_SIZE_LEGACY,
  isMulticastMac,
  macKey,
  netHeaderLength,
  parseMac,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_CTRL_VQ,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_ECN,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_HASH_REPORT,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_TCPV6,
} from './net-wire.js';

const VERSION_1 = 1n << 32n;

describe('virtio_net_hdr length (spec 5.1.6)', () => {
  it('is 10 bytes for a legacy driver without MRG_RXBUF', () => {
    expect(netHeaderLength(0n)).toBe(HDR_SIZE_LEGACY);
    expect(HDR_SIZE_LEGACY).toBe(10);
  });
  it('is 12 bytes with MRG_RXBUF or VERSION_1', () => {
    expect(netHeaderLength(VIRTIO_NET_F_MRG_RXBUF)).toBe(12);
    expect(netHeaderLength(VERSION_1)).toBe(12);
    expect(netHeaderLength(VERSION_1 | VIRTIO_NET_F_MRG_RXBUF)).toBe(HDR_SIZE);
  });
  it('is 20 bytes with HASH_REPORT', () => {
    expect(netHeaderLength(VERSION_1 | VIRTIO_NET_F_HASH_REPORT)).toBe(HDR_SIZE_HASH);
    expect(HDR_SIZE_HASH).toBe(20);
  });
});

describe('header encoding', () => {
  it('round-trips little-endian fields and writes num_buffers', () => {
    const header = {
      flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
      gsoType: VIRTIO_NET_HDR_GSO_TCPV6,
      hdrLen: 0x1234,
      gsoSize: 1440,
      csumStart: 54,
      csumOffset: 16,
    };
    const bytes = new Uint8Array(20).fill(0xaa);
    encodeNetHeader(header, bytes, 20, 3);
    expect(bytes[2]).toBe(0x34);
    expect(bytes[3]).toBe(0x12);
    expect(bytes[10]).toBe(3);
    expect([...bytes.subarray(12, 20)]).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    expect(decodeNetHeader(bytes)).toEqual(header);
    const legacy = new Uint8Array(12).fill(0xaa);
    encodeNetHeader(header, legacy, 10, 3);
    expect(legacy[10]).toBe(0xaa); // no num_buffers in a 10-byte header
  });
});

describe('feature dependencies (spec 5.1.3.1)', () => {
  it('names the broken rule', () => {
    expect(brokenFeatureDependency(VIRTIO_NET_F_GUEST_TSO4)?.[1]).toBe(VIRTIO_NET_F_GUEST_CSUM);
    expect(brokenFeatureDependency(VIRTIO_NET_F_HOST_TSO6)?.[1]).toBe(VIRTIO_NET_F_CSUM);
    expect(brokenFeatureDependency(VIRTIO_NET_F_MQ)?.[1]).toBe(VIRTIO_NET_F_CTRL_VQ);
    expect(brokenFeatureDependency(VIRTIO_NET_F_GUEST_ECN | VIRTIO_NET_F_GUEST_CSUM)).toBeDefined();
    expect(
      brokenFeatureDependency(VIRTIO_NET_F_GUEST_ECN | VIRTIO_NET_F_GUEST_TSO4 | VIRTIO_NET_F_GUEST_CSUM),
    ).toBeUndefined();
    expect(brokenFeatureDependency(VIRTIO_NET_F_MQ | VIRTIO_NET_F_CTRL_VQ)).toBeUndefined();
  });
});

describe('MAC addresses', () => {
  it('parses, formats and keys them', () => {
    const mac = parseMac('52:54:00:ab:cd:ef')!;
    expect(formatMac(mac)).toBe('52:54:00:ab:cd:ef');
    expect(macKey(mac)).toBe(0x525400abcdef);
    expect(macKey(parseMac('ff:ff:ff:ff:ff:ff')!)).toBe(0xffffffffffff);
    expect(parseMac('52:54:00:ab:cd')).toBeUndefined();
    expect(parseMac('52:54:00:ab:cd:zz')).toBeUndefined();
    expect(isMulticastMac(parseMac('01:00:5e:00:00:01')!)).toBe(true);
    expect(isMulticastMac(mac)).toBe(false);
  });
});
