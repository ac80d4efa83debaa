// Checksum and segmentation offloads in software, for the side of a link that cannot take
// them: a guest that did not negotiate GUEST_CSUM/GUEST_TSO*, or a host side (a socket)
// that carries plain Ethernet frames. Network headers are big-endian (RFC 791, 8200, 793, 768).
import {
  ETH_HEADER_SIZE,
  ETH_TYPE_OFFSET,
  type NetHeader,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VIRTIO_NET_HDR_GSO_UDP,
  VLAN_TAG_SIZE,
} from './net-wire.js';

export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_IPV6 = 0x86dd;
export const ETHERTYPE_ARP = 0x0806;
export const ETHERTYPE_VLAN = 0x8100;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_ICMP = 1;
export const IPPROTO_ICMPV6 = 58;
const IPPROTO_FRAGMENT = 44;
/** IPv6 extension headers we walk past: hop-by-hop, routing, destination options (RFC 8200 4.1). */
const IPV6_SKIPPABLE = new Set([0, 43, 60]);
const IPV6_MAX_EXTENSIONS = 8;

// IPv4 header fields (RFC 791 3.1).
const IPV4_TOTAL_LENGTH = 2;
const IPV4_ID = 4;
const IPV4_FRAGMENT = 6;
const IPV4_PROTOCOL = 9;
const IPV4_CHECKSUM = 10;
const IPV4_SOURCE = 12;
const IPV4_MORE_FRAGMENTS = 0x2000;
// IPv6 header fields (RFC 8200 3).
const IPV6_HEADER_SIZE = 40;
const IPV6_PAYLOAD_LENGTH = 4;
const IPV6_NEXT_HEADER = 6;
const IPV6_SOURCE = 8;
const IPV6_FRAGMENT_HEADER_SIZE = 8;
// TCP (RFC 793 3.1) and UDP (RFC 768).
const TCP_SEQUENCE = 4;
const TCP_DATA_OFFSET = 12;
const TCP_FLAGS = 13;
const TCP_CHECKSUM = 16;
const TCP_FIN = 0x01;
const TCP_PSH = 0x08;
const TCP_CWR = 0x80;
const TCP_MIN_HEADER = 20;
const UDP_HEADER_SIZE = 8;
const UDP_LENGTH = 4;
const UDP_CHECKSUM = 6;

/**
 * Smallest gso_size we segment with. Linux's TCP never goes below TCP_MIN_MSS (88) and the
 * smallest IPv4 MTU (68) leaves 48 bytes of fragment payload: anything smaller is a guest
 * asking us to amplify one request into thousands of frames.
 */
export const MIN_GSO_SIZE = 48;

/** Where the network and transport headers of a frame are. */
export interface ParsedFrame {
  /** 4 or 6. */
  ipVersion: 4 | 6;
  l3Offset: number;
  /** Offset of the TCP/UDP header. */
  l4Offset: number;
  /** IPPROTO_TCP, IPPROTO_UDP, ... */
  l4Protocol: number;
  /** Bytes of TCP/UDP header (TCP: data offset; UDP: 8). 0 for other protocols. */
  l4HeaderLength: number;
}

/**
 * Finds the IP and TCP/UDP headers of a contiguous Ethernet frame (one 802.1Q tag allowed).
 * Returns undefined when the frame is not IP or a header does not fit.
 */
export function parseFrame(frame: Uint8Array): ParsedFrame | undefined {
  if (frame.length < ETH_HEADER_SIZE) return undefined;
  let l3Offset = ETH_HEADER_SIZE;
  let etherType = readUint16(frame, ETH_TYPE_OFFSET);
  if (etherType === ETHERTYPE_VLAN) {
    if (frame.length < ETH_HEADER_SIZE + VLAN_TAG_SIZE) return undefined;
    etherType = readUint16(frame, ETH_TYPE_OFFSET + VLAN_TAG_SIZE);
    l3Offset += VLAN_TAG_SIZE;
  }
  let ipVersion: 4 | 6;
  let l4Offset: number;
  let l4Protocol: number;
  if (etherType === ETHERTYPE_IPV4) {
    if (frame.length < l3Offset + 20) return undefined;
    const versionIhl = frame[l3Offset]!;
    const ihl = (versionIhl & 0x0f) * 4;
    if (versionIhl >> 4 !== 4 || ihl < 20 || frame.length < l3Offset + ihl) return undefined;
    ipVersion = 4;
    l4Offset = l3Offset + ihl;
    l4Protocol = frame[l3Offset + IPV4_PROTOCOL]!;
  } else if (etherType === ETHERTYPE_IPV6) {
    if (frame.length < l3Offset + IPV6_HEADER_SIZE || frame[l3Offset]! >> 4 !== 6) return undefined;
    ipVersion = 6;
    l4Protocol = frame[l3Offset + IPV6_NEXT_HEADER]!;
    l4Offset = l3Offset + IPV6_HEADER_SIZE;
    for (let i = 0; IPV6_SKIPPABLE.has(l4Protocol); i++) {
      if (i === IPV6_MAX_EXTENSIONS || frame.length < l4Offset + 8) return undefined;
      l4Protocol = frame[l4Offset]!;
      l4Offset += (frame[l4Offset + 1]! + 1) * 8;
    }
    if (frame.length < l4Offset) return undefined;
  } else {
    return undefined;
  }
  let l4HeaderLength = 0;
  if (l4Protocol === IPPROTO_TCP) {
    if (frame.length < l4Offset + TCP_MIN_HEADER) return undefined;
    l4HeaderLength = (frame[l4Offset + TCP_DATA_OFFSET]! >> 4) * 4;
    if (l4HeaderLength < TCP_MIN_HEADER || frame.length < l4Offset + l4HeaderLength) return undefined;
  } else if (l4Protocol === IPPROTO_UDP) {
    if (frame.length < l4Offset + UDP_HEADER_SIZE) return undefined;
    l4HeaderLength = UDP_HEADER_SIZE;
  }
  return { ipVersion, l3Offset, l4Offset, l4Protocol, l4HeaderLength };
}

/**
 * One's complement sum (RFC 1071) of bytes [start, end) of a frame held in segments, 16-bit
 * words aligned to `start`, not folded. Plus `initial` (an unfolded partial sum).
 */
export function onesComplementSum(
  segments: readonly Uint8Array[],
  start: number,
  end: number,
  initial = 0,
): number {
  let sum = initial;
  let position = 0;
  let odd = false;
  for (const segment of segments) {
    const segmentEnd = position + segment.length;
    if (segmentEnd <= start) {
      position = segmentEnd;
      continue;
    }
    if (position >= end) break;
    let i = Math.max(start - position, 0);
    const stop = Math.min(end, segmentEnd) - position;
    if (odd && i < stop) {
      sum += segment[i]!;
      i++;
      odd = false;
    }
    // Words accumulate in a double: 2^53 / 2^16 words is far beyond any frame, fold at the end.
    const pairs = stop - ((stop - i) & 1);
    for (; i < pairs; i += 2) sum += (segment[i]! << 8) | segment[i + 1]!;
    if (i < stop) {
      sum += segment[i]! << 8;
      odd = true;
    }
    position = segmentEnd;
  }
  return sum;
}

/** Folds a sum to 16 bits (end-around carry). */
export function foldChecksum(sum: number): number {
  while (sum > 0xffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  return sum;
}

/**
 * The checksum a device stores for VIRTIO_NET_HDR_F_NEEDS_CSUM (spec 5.1.6.2): the one's
 * complement of the sum from csum_start to the end, with the pseudo-header partial sum the
 * driver left in the field included. 0 is sent as 0xffff (RFC 768: 0 means "no checksum" for
 * UDP; for TCP both encode the same value). Returns undefined when the field is past the end.
 */
export function completeChecksum(
  segments: readonly Uint8Array[],
  length: number,
  csumStart: number,
  csumOffset: number,
): number | undefined {
  if (csumStart + csumOffset + 2 > length) return undefined;
  const value = ~foldChecksum(onesComplementSum(segments, csumStart, length)) & 0xffff;
  return value === 0 ? 0xffff : value;
}

/** Writes a big-endian 16-bit value at `offset` of a frame held in segments (it may straddle two). */
export function writeUint16Scattered(segments: readonly Uint8Array[], offset: number, value: number): void {
  let position = 0;
  let remaining = 2;
  let byteIndex = 0;
  for (const segment of segments) {
    const segmentEnd = position + segment.length;
    while (remaining > 0 && offset + byteIndex < segmentEnd && offset + byteIndex >= position) {
      segment[offset + byteIndex - position] = byteIndex === 0 ? value >>> 8 : value & 0xff;
      byteIndex++;
      remaining--;
    }
    if (remaining === 0) return;
    position = segmentEnd;
  }
}

/** Sum of the pseudo-header (RFC 793 3.1 / RFC 8200 8.1) for an L4 segment of `l4Length` bytes. */
export function pseudoHeaderSum(frame: Uint8Array, parsed: ParsedFrame, l4Length: number): number {
  const addresses =
    parsed.ipVersion === 4
      ? frame.subarray(parsed.l3Offset + IPV4_SOURCE, parsed.l3Offset + IPV4_SOURCE + 8)
      : frame.subarray(parsed.l3Offset + IPV6_SOURCE, parsed.l3Offset + IPV6_SOURCE + 32);
  let sum = onesComplementSum([addresses], 0, addresses.length);
  sum += parsed.l4Protocol;
  sum += parsed.ipVersion === 4 ? l4Length : (l4Length >>> 16) + (l4Length & 0xffff);
  return sum;
}

function l4ChecksumOffset(parsed: ParsedFrame): number | undefined {
  if (parsed.l4Protocol === IPPROTO_TCP) return parsed.l4Offset + TCP_CHECKSUM;
  if (parsed.l4Protocol === IPPROTO_UDP) return parsed.l4Offset + UDP_CHECKSUM;
  return undefined;
}

/** Computes and stores the full TCP/UDP checksum of a contiguous frame (from scratch). */
export function fillL4Checksum(frame: Uint8Array, parsed: ParsedFrame, end = frame.length): boolean {
  const offset = l4ChecksumOffset(parsed);
  if (offset === undefined || offset + 2 > end) return false;
  frame[offset] = 0;
  frame[offset + 1] = 0;
  const sum = onesComplementSum(
    [frame],
    parsed.l4Offset,
    end,
    pseudoHeaderSum(frame, parsed, end - parsed.l4Offset),
  );
  let value = ~foldChecksum(sum) & 0xffff;
  if (value === 0 && parsed.l4Protocol === IPPROTO_UDP) value = 0xffff;
  frame[offset] = value >>> 8;
  frame[offset + 1] = value & 0xff;
  return true;
}

/**
 * Checks the TCP/UDP checksum of a contiguous frame. Returns undefined for frames that are
 * not TCP/UDP over IP, and true for UDP over IPv4 without a checksum (RFC 768).
 */
export function verifyL4Checksum(frame: Uint8Array): boolean | undefined {
  const parsed = parseFrame(frame);
  if (!parsed) return undefined;
  const offset = l4ChecksumOffset(parsed);
  if (offset === undefined) return undefined;
  const end = l3End(frame, parsed);
  if (parsed.l4Protocol === IPPROTO_UDP && parsed.ipVersion === 4 && readUint16(frame, offset) === 0)
    return true;
  const sum = onesComplementSum(
    [frame],
    parsed.l4Offset,
    end,
    pseudoHeaderSum(frame, parsed, end - parsed.l4Offset),
  );
  return foldChecksum(sum) === 0xffff;
}

/** IPv4 header checksum (RFC 791 3.1), stored in place. */
export function fillIpv4HeaderChecksum(frame: Uint8Array, l3Offset: number): void {
  const ihl = (frame[l3Offset]! & 0x0f) * 4;
  frame[l3Offset + IPV4_CHECKSUM] = 0;
  frame[l3Offset + IPV4_CHECKSUM + 1] = 0;
  const value = ~foldChecksum(onesComplementSum([frame], l3Offset, l3Offset + ihl)) & 0xffff;
  frame[l3Offset + IPV4_CHECKSUM] = value >>> 8;
  frame[l3Offset + IPV4_CHECKSUM + 1] = value & 0xff;
}

/** End of the IP datagram (the frame may carry Ethernet padding past it). */
function l3End(frame: Uint8Array, parsed: ParsedFrame): number {
  const end =
    parsed.ipVersion === 4
      ? parsed.l3Offset + readUint16(frame, parsed.l3Offset + IPV4_TOTAL_LENGTH)
      : parsed.l3Offset + IPV6_HEADER_SIZE + readUint16(frame, parsed.l3Offset + IPV6_PAYLOAD_LENGTH);
  return Math.min(end, frame.length);
}

export type SegmentFailure =
  | 'not-ip'
  | 'protocol-mismatch'
  | 'bad-gso-size'
  | 'too-many-segments'
  | 'unsupported';

/** Upper bound on frames one GSO request may turn into (64 KiB at the smallest gso_size). */
export const MAX_SEGMENTS = Math.ceil(65_535 / MIN_GSO_SIZE);

let ipv6FragmentId = 0x5856_494f;

/**
 * Splits a GSO frame (TSO4, TSO6 or UFO, spec 5.1.6.2) into frames that need no offload: each
 * with its own IP length/id and a complete TCP/UDP checksum. The input must be contiguous.
 * Never trusts hdr_len: headers are parsed from the frame.
 */
export function segmentFrame(frame: Uint8Array, header: NetHeader): Uint8Array[] | SegmentFailure {
  const parsed = parseFrame(frame);
  if (!parsed) return 'not-ip';
  const gsoType = header.gsoType & 0x7f;
  const mss = header.gsoSize;
  if (mss < MIN_GSO_SIZE) return 'bad-gso-size';
  if (gsoType === VIRTIO_NET_HDR_GSO_TCPV4 || gsoType === VIRTIO_NET_HDR_GSO_TCPV6) {
    const wantVersion = gsoType === VIRTIO_NET_HDR_GSO_TCPV4 ? 4 : 6;
    if (parsed.l4Protocol !== IPPROTO_TCP || parsed.ipVersion !== wantVersion) return 'protocol-mismatch';
    return segmentTcp(frame, parsed, mss);
  }
  if (gsoType === VIRTIO_NET_HDR_GSO_UDP) {
    if (parsed.l4Protocol !== IPPROTO_UDP) return 'protocol-mismatch';
    return fragmentUdp(frame, parsed, mss);
  }
  return 'unsupported';
}

function segmentTcp(frame: Uint8Array, parsed: ParsedFrame, mss: number): Uint8Array[] | SegmentFailure {
  const headersEnd = parsed.l4Offset + parsed.l4HeaderLength;
  // A GSO frame is never padded: its end is the frame's (Linux uses skb->len, not tot_len).
  const end = frame.length;
  const payload = end - headersEnd;
  const count = Math.max(1, Math.ceil(payload / mss));
  if (count > MAX_SEGMENTS) return 'too-many-segments';
  const sequence = readUint32(frame, parsed.l4Offset + TCP_SEQUENCE);
  const flags = frame[parsed.l4Offset + TCP_FLAGS]!;
  const ipId = parsed.ipVersion === 4 ? readUint16(frame, parsed.l3Offset + IPV4_ID) : 0;
  const out: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const start = headersEnd + i * mss;
    const size = Math.min(mss, end - start);
    const segment = new Uint8Array(headersEnd + size);
    segment.set(frame.subarray(0, headersEnd));
    segment.set(frame.subarray(start, start + size), headersEnd);
    const l3Length = segment.length - parsed.l3Offset;
    if (parsed.ipVersion === 4) {
      writeUint16(segment, parsed.l3Offset + IPV4_TOTAL_LENGTH, l3Length);
      writeUint16(segment, parsed.l3Offset + IPV4_ID, (ipId + i) & 0xffff);
      fillIpv4HeaderChecksum(segment, parsed.l3Offset);
    } else {
      writeUint16(segment, parsed.l3Offset + IPV6_PAYLOAD_LENGTH, l3Length - IPV6_HEADER_SIZE);
    }
    writeUint32(segment, parsed.l4Offset + TCP_SEQUENCE, (sequence + i * mss) >>> 0);
    let segmentFlags = flags;
    if (i < count - 1) segmentFlags &= ~(TCP_FIN | TCP_PSH);
    if (i > 0) segmentFlags &= ~TCP_CWR;
    segment[parsed.l4Offset + TCP_FLAGS] = segmentFlags;
    fillL4Checksum(segment, parsed);
    out.push(segment);
  }
  return out;
}

/** UFO: IP fragmentation of one UDP datagram (RFC 791 2.3, RFC 8200 4.5). */
function fragmentUdp(frame: Uint8Array, parsed: ParsedFrame, gsoSize: number): Uint8Array[] | SegmentFailure {
  const end = frame.length;
  if (end < parsed.l4Offset + UDP_HEADER_SIZE) return 'not-ip';
  const datagram = frame.slice(0, end);
  writeUint16(datagram, parsed.l4Offset + UDP_LENGTH, end - parsed.l4Offset);
  fillL4Checksum(datagram, parsed);
  // Fragment payloads are multiples of 8 bytes except the last.
  const chunk = gsoSize & ~7;
  const payload = datagram.subarray(parsed.l4Offset);
  const count = Math.max(1, Math.ceil(payload.length / chunk));
  if (count > MAX_SEGMENTS) return 'too-many-segments';
  if (count === 1) return [datagram];
  const out: Uint8Array[] = [];
  if (parsed.ipVersion === 4) {
    for (let i = 0; i < count; i++) {
      const part = payload.subarray(i * chunk, Math.min((i + 1) * chunk, payload.length));
      const fragment = new Uint8Array(parsed.l4Offset + part.length);
      fragment.set(datagram.subarray(0, parsed.l4Offset));
      fragment.set(part, parsed.l4Offset);
      writeUint16(fragment, parsed.l3Offset + IPV4_TOTAL_LENGTH, fragment.length - parsed.l3Offset);
      const more = i < count - 1 ? IPV4_MORE_FRAGMENTS : 0;
      writeUint16(fragment, parsed.l3Offset + IPV4_FRAGMENT, more | ((i * chunk) >>> 3));
      fillIpv4HeaderChecksum(fragment, parsed.l3Offset);
      out.push(fragment);
    }
    return out;
  }
  // IPv6: a fragment header goes after the unfragmentable part; we only handle UDP right after
  // the fixed header (extension headers before a fragmented UDP datagram are not generated by
  // Linux's UFO path).
  if (parsed.l4Offset !== parsed.l3Offset + IPV6_HEADER_SIZE) return 'unsupported';
  ipv6FragmentId = (ipv6FragmentId + 1) >>> 0;
  for (let i = 0; i < count; i++) {
    const part = payload.subarray(i * chunk, Math.min((i + 1) * chunk, payload.length));
    const fragmentStart = parsed.l4Offset + IPV6_FRAGMENT_HEADER_SIZE;
    const fragment = new Uint8Array(fragmentStart + part.length);
    fragment.set(datagram.subarray(0, parsed.l4Offset));
    fragment[parsed.l3Offset + IPV6_NEXT_HEADER] = IPPROTO_FRAGMENT;
    writeUint16(
      fragment,
      parsed.l3Offset + IPV6_PAYLOAD_LENGTH,
      fragment.length - parsed.l3Offset - IPV6_HEADER_SIZE,
    );
    fragment[parsed.l4Offset] = IPPROTO_UDP;
    fragment[parsed.l4Offset + 1] = 0;
    writeUint16(fragment, parsed.l4Offset + 2, ((i * chunk) & ~7) | (i < count - 1 ? 1 : 0));
    writeUint32(fragment, parsed.l4Offset + 4, ipv6FragmentId);
    fragment.set(part, fragmentStart);
    out.push(fragment);
  }
  return out;
}

export function readUint16(bytes: Uint8Array, offset: number): number {
  return (bytes[offset]! << 8) | bytes[offset + 1]!;
}

export function readUint32(bytes: Uint8Array, offset: number): number {
  return (
    ((bytes[offset]! << 24) | (bytes[offset + 1]! << 16) | (bytes[offset + 2]! << 8) | bytes[offset + 3]!) >>>
    0
  );
}

export function writeUint16(bytes: Uint8Array, offset: number, value: number): void {
  bytes[offset] = (value >>> 8) & 0xff;
  bytes[offset + 1] = value & 0xff;
}

export function writeUint32(bytes: Uint8Array, offset: number, value: number): void {
  bytes[offset] = (value >>> 24) & 0xff;
  bytes[offset + 1] = (value >>> 16) & 0xff;
  bytes[offset + 2] = (value >>> 8) & 0xff;
  bytes[offset + 3] = value & 0xff;
}

/** Copies a frame held in segments into one buffer. */
export function gather(
  segments: readonly Uint8Array[],
  length: number,
  target: Uint8Array = new Uint8Array(length),
): Uint8Array {
  let offset = 0;
  for (const segment of segments) {
    if (offset >= length) break;
    const n = Math.min(segment.length, length - offset);
    target.set(n === segment.length ? segment : segment.subarray(0, n), offset);
    offset += n;
  }
  return target;
}
