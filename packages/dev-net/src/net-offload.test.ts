import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  completeChecksum,
  foldChecksum,
  MAX_SEGMENTS,
  onesComplementSum,
  parseFrame,
  segmentFrame,
  verifyL4Checksum,
  writeUint16Scattered,
} from './net-offload.js';
import {
  emptyNetHeader,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VIRTIO_NET_HDR_GSO_UDP,
} from './net-wire.js';
import {
  arpRequestFrame,
  checksumsValid,
  internetChecksum,
  tcpFrame,
  udpFrame,
} from './testing/net-packets.js';

const v4 = {
  sourceMac: '52:54:00:00:00:01',
  destinationMac: '52:54:00:00:00:02',
  source: '192.168.7.1',
  destination: '192.168.7.2',
};
const v6 = { ...v4, version: 6 as const, source: 'fd00::1', destination: 'fd00:0:0:0:0:0:0:2' };

/** Splits a frame into views at the given cut points, like a scattered guest chain. */
function split(frame: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((cut) => cut % (frame.length + 1)))].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let start = 0;
  for (const point of [...points, frame.length]) {
    if (point > start) out.push(frame.subarray(start, point));
    start = Math.max(start, point);
  }
  return out;
}

function payload(length: number, seed = 1): Uint8Array {
  return new Uint8Array(length).map((_, i) => (i * 31 + seed) & 0xff);
}

describe('checksums', () => {
  for (const [name, build, l4, field] of [
    ['TCP/IPv4', (p: Uint8Array) => tcpFrame({ ...v4, checksum: 'partial' }, p), 34, 16],
    ['UDP/IPv4', (p: Uint8Array) => udpFrame({ ...v4, checksum: 'partial' }, p), 34, 6],
    ['TCP/IPv6', (p: Uint8Array) => tcpFrame({ ...v6, checksum: 'partial' }, p), 54, 16],
    ['UDP/IPv6', (p: Uint8Array) => udpFrame({ ...v6, checksum: 'partial' }, p), 54, 6],
  ] as const) {
    it(`fills a partial ${name} checksum across scattered buffers (checked independently)`, () => {
      fc.assert(
        fc.property(fc.integer({ min: 0, max: 3000 }), fc.array(fc.nat(), { maxLength: 6 }), (size, cuts) => {
          const frame = build(payload(size, size));
          const segments = split(frame, cuts);
          const value = completeChecksum(segments, frame.length, l4, field)!;
          writeUint16Scattered(segments, l4 + field, value);
          return checksumsValid(frame) && verifyL4Checksum(frame) === true;
        }),
        { numRuns: 150 },
      );
    });
  }

  it('matches the independent RFC 1071 sum on odd lengths and odd segment boundaries', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 0, maxLength: 500 }),
        fc.array(fc.nat(), { maxLength: 5 }),
        (bytes, cuts) => {
          const sum = foldChecksum(onesComplementSum(split(bytes, cuts), 0, bytes.length));
          return (~sum & 0xffff) === internetChecksum(bytes);
        },
      ),
    );
  });

  it('verifies good checksums and rejects a flipped bit', () => {
    const frame = tcpFrame(v4, payload(100));
    expect(verifyL4Checksum(frame)).toBe(true);
    frame[frame.length - 1]! ^= 1;
    expect(verifyL4Checksum(frame)).toBe(false);
    expect(verifyL4Checksum(arpRequestFrame('52:54:00:00:00:01', '10.0.0.1', '10.0.0.2'))).toBeUndefined();
  });

  it('refuses a checksum field past the end of the frame', () => {
    const frame = udpFrame(v4, payload(10));
    expect(completeChecksum([frame], frame.length, frame.length - 1, 0)).toBeUndefined();
    expect(completeChecksum([frame], frame.length, 0xffff, 0xffff)).toBeUndefined();
  });
});

describe('segmentation', () => {
  const gso = (gsoType: number, gsoSize: number) => ({
    ...emptyNetHeader(),
    flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
    gsoType,
    gsoSize,
  });

  for (const [name, options, gsoType, headers] of [
    ['TSO4', v4, VIRTIO_NET_HDR_GSO_TCPV4, 54],
    ['TSO6', v6, VIRTIO_NET_HDR_GSO_TCPV6, 74],
  ] as const) {
    it(`${name}: every segment has valid checksums, right sequence numbers and flags`, () => {
      const data = payload(20_000);
      const frame = tcpFrame({ ...options, checksum: 'partial', sequence: 0xffff_f000, flags: 0x19 }, data);
      const segments = segmentFrame(frame, gso(gsoType, 1448));
      if (typeof segments === 'string') throw new Error(segments);
      expect(segments).toHaveLength(Math.ceil(20_000 / 1448));
      const joined: number[] = [];
      segments.forEach((segment, i) => {
        expect(checksumsValid(segment)).toBe(true);
        const view = new DataView(segment.buffer);
        expect(view.getUint32(headers - 20 + 4)).toBe((0xffff_f000 + i * 1448) >>> 0);
        const flags = segment[headers - 20 + 13]!;
        expect(flags & 0x09).toBe(i === segments.length - 1 ? 0x09 : 0); // FIN and PSH on the last only
        joined.push(...segment.subarray(headers));
      });
      expect(joined).toEqual([...data]);
    });
  }

  it('UFO over IPv4: fragments reassemble into the datagram with a valid UDP checksum', () => {
    const data = payload(5000);
    const frame = udpFrame({ ...v4, checksum: 'partial' }, data);
    const fragments = segmentFrame(frame, gso(VIRTIO_NET_HDR_GSO_UDP, 1480));
    if (typeof fragments === 'string') throw new Error(fragments);
    expect(fragments.length).toBe(Math.ceil((5000 + 8) / 1480));
    const reassembled: number[] = [];
    fragments.forEach((fragment, i) => {
      const view = new DataView(fragment.buffer);
      expect(internetChecksum(fragment.subarray(14, 34))).toBe(0);
      const flagsOffset = view.getUint16(20);
      expect(flagsOffset & 0x1fff).toBe((i * 1480) / 8);
      expect((flagsOffset & 0x2000) !== 0).toBe(i < fragments.length - 1);
      reassembled.push(...fragment.subarray(34));
    });
    const whole = new Uint8Array(34 + reassembled.length);
    whole.set(frame.subarray(0, 34));
    whole.set(reassembled, 34);
    new DataView(whole.buffer).setUint16(16, whole.length - 14);
    new DataView(whole.buffer).setUint16(20, 0);
    new DataView(whole.buffer).setUint16(24, 0);
    new DataView(whole.buffer).setUint16(24, internetChecksum(whole.subarray(14, 34)));
    expect(checksumsValid(whole)).toBe(true);
    expect([...whole.subarray(42)]).toEqual([...data]);
  });

  it('UFO over IPv6 inserts fragment headers with one identification', () => {
    const frame = udpFrame({ ...v6, checksum: 'partial' }, payload(3000));
    const fragments = segmentFrame(frame, gso(VIRTIO_NET_HDR_GSO_UDP, 1280));
    if (typeof fragments === 'string') throw new Error(fragments);
    expect(fragments.length).toBe(3);
    const ids = new Set(fragments.map((fragment) => new DataView(fragment.buffer).getUint32(54 + 4)));
    expect(ids.size).toBe(1);
    for (const fragment of fragments) expect(fragment[20]).toBe(44);
  });

  it('fails cleanly on bogus requests', () => {
    const tcp = tcpFrame(v4, payload(3000));
    expect(
      segmentFrame(
        arpRequestFrame('52:54:00:00:00:01', '10.0.0.1', '10.0.0.2'),
        gso(VIRTIO_NET_HDR_GSO_TCPV4, 1448),
      ),
    ).toBe('not-ip');
    expect(segmentFrame(tcp, gso(VIRTIO_NET_HDR_GSO_TCPV4, 0))).toBe('bad-gso-size');
    expect(segmentFrame(tcp, gso(VIRTIO_NET_HDR_GSO_TCPV6, 1448))).toBe('protocol-mismatch');
    expect(segmentFrame(tcp, gso(VIRTIO_NET_HDR_GSO_UDP, 1448))).toBe('protocol-mismatch');
    expect(segmentFrame(tcp, gso(0x33, 1448))).toBe('unsupported');
    expect(MAX_SEGMENTS).toBeLessThan(2000);
  });

  it('parses VLAN-tagged frames and refuses truncated headers', () => {
    const frame = tcpFrame(v4, payload(10));
    const tagged = new Uint8Array(frame.length + 4);
    tagged.set(frame.subarray(0, 12));
    tagged.set([0x81, 0x00, 0x00, 0x05], 12);
    tagged.set(frame.subarray(12), 16);
    expect(parseFrame(tagged)).toMatchObject({
      ipVersion: 4,
      l3Offset: 18,
      l4Offset: 38,
      l4Protocol: 6,
      l4HeaderLength: 20,
    });
    expect(parseFrame(frame.subarray(0, 40))).toBeUndefined();
  });
});
