// Builds real Ethernet frames for tests, and checks them with a checksum written independently
// of net-offload.ts (a plain RFC 1071 loop over a DataView), so tests do not grade the code
// with itself.

export interface Addresses {
  sourceMac: string;
  destinationMac: string;
}

function macBytes(text: string): number[] {
  return text.split(':').map((part) => Number.parseInt(part, 16));
}

/** RFC 1071 checksum of `bytes`, folded and complemented, computed the obvious way. */
export function internetChecksum(bytes: Uint8Array, initial = 0): number {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let sum = initial;
  for (let i = 0; i + 1 < bytes.length; i += 2) {
    sum += view.getUint16(i);
    sum = (sum & 0xffff) + (sum >>> 16);
  }
  if (bytes.length % 2 === 1) {
    sum += bytes[bytes.length - 1]! << 8;
    sum = (sum & 0xffff) + (sum >>> 16);
  }
  return ~sum & 0xffff;
}

function ethernet(addresses: Addresses, etherType: number, payload: Uint8Array): Uint8Array {
  const frame = new Uint8Array(14 + payload.length);
  frame.set(macBytes(addresses.destinationMac), 0);
  frame.set(macBytes(addresses.sourceMac), 6);
  frame[12] = etherType >> 8;
  frame[13] = etherType & 0xff;
  frame.set(payload, 14);
  return frame;
}

export function ipv4Bytes(text: string): number[] {
  return text.split('.').map(Number);
}

export function ipv6Bytes(text: string): number[] {
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const left = head ? head.split(':').filter(Boolean) : [];
  const right = tail ? tail.split(':').filter(Boolean) : [];
  const groups = [...left, ...new Array(8 - left.length - right.length).fill('0'), ...right];
  return groups.flatMap((group) => {
    const value = Number.parseInt(group, 16);
    return [value >> 8, value & 0xff];
  });
}

export interface IpOptions extends Addresses {
  source: string;
  destination: string;
  /** IPv4 identification. */
  id?: number;
}

function ipv4(options: IpOptions, protocol: number, payload: Uint8Array): Uint8Array {
  const packet = new Uint8Array(20 + payload.length);
  const view = new DataView(packet.buffer);
  packet[0] = 0x45;
  view.setUint16(2, packet.length);
  view.setUint16(4, options.id ?? 1);
  view.setUint16(6, 0x4000); // don't fragment
  packet[8] = 64;
  packet[9] = protocol;
  packet.set(ipv4Bytes(options.source), 12);
  packet.set(ipv4Bytes(options.destination), 16);
  view.setUint16(10, internetChecksum(packet.subarray(0, 20)));
  packet.set(payload, 20);
  return packet;
}

function ipv6(options: IpOptions, nextHeader: number, payload: Uint8Array): Uint8Array {
  const packet = new Uint8Array(40 + payload.length);
  const view = new DataView(packet.buffer);
  packet[0] = 0x60;
  view.setUint16(4, payload.length);
  packet[6] = nextHeader;
  packet[7] = 64;
  packet.set(ipv6Bytes(options.source), 8);
  packet.set(ipv6Bytes(options.destination), 24);
  packet.set(payload, 40);
  return packet;
}

/** Independent pseudo-header sum (RFC 793 / RFC 8200 8.1), unfolded. */
function pseudoSum(version: 4 | 6, options: IpOptions, protocol: number, length: number): number {
  const addresses =
    version === 4
      ? [...ipv4Bytes(options.source), ...ipv4Bytes(options.destination)]
      : [...ipv6Bytes(options.source), ...ipv6Bytes(options.destination)];
  let sum = 0;
  for (let i = 0; i < addresses.length; i += 2) sum += (addresses[i]! << 8) | addresses[i + 1]!;
  return sum + protocol + length;
}

function foldPartial(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

export interface L4Options extends IpOptions {
  version?: 4 | 6;
  sourcePort?: number;
  destinationPort?: number;
  /**
   * 'full': a correct checksum; 'partial': the pseudo-header sum only (what a driver leaves
   * with NEEDS_CSUM); 'zero'.
   */
  checksum?: 'full' | 'partial' | 'zero';
}

export interface TcpOptions extends L4Options {
  sequence?: number;
  flags?: number;
}

function finishL4(
  version: 4 | 6,
  options: L4Options,
  protocol: number,
  segment: Uint8Array,
  offset: number,
): Uint8Array {
  const view = new DataView(segment.buffer, segment.byteOffset);
  const mode = options.checksum ?? 'full';
  const pseudo = pseudoSum(version, options, protocol, segment.length);
  if (mode === 'partial') view.setUint16(offset, foldPartial(pseudo));
  else if (mode === 'full') {
    let value = internetChecksum(segment, foldPartial(pseudo));
    if (value === 0 && protocol === 17) value = 0xffff;
    view.setUint16(offset, value);
  }
  const ip = version === 4 ? ipv4(options, protocol, segment) : ipv6(options, protocol, segment);
  return ethernet(options, version === 4 ? 0x0800 : 0x86dd, ip);
}

/** An Ethernet frame with a TCP segment (20-byte header, ACK|PSH by default). */
export function tcpFrame(options: TcpOptions, payload: Uint8Array): Uint8Array {
  const segment = new Uint8Array(20 + payload.length);
  const view = new DataView(segment.buffer);
  view.setUint16(0, options.sourcePort ?? 40000);
  view.setUint16(2, options.destinationPort ?? 5201);
  view.setUint32(4, options.sequence ?? 1000);
  view.setUint32(8, 1);
  segment[12] = 5 << 4;
  segment[13] = options.flags ?? 0x18;
  view.setUint16(14, 65535);
  segment.set(payload, 20);
  return finishL4(options.version ?? 4, options, 6, segment, 16);
}

/** An Ethernet frame with a UDP datagram. */
export function udpFrame(options: L4Options, payload: Uint8Array): Uint8Array {
  const segment = new Uint8Array(8 + payload.length);
  const view = new DataView(segment.buffer);
  view.setUint16(0, options.sourcePort ?? 40000);
  view.setUint16(2, options.destinationPort ?? 5201);
  view.setUint16(4, segment.length);
  segment.set(payload, 8);
  return finishL4(options.version ?? 4, options, 17, segment, 6);
}

/** ICMP echo request (type 8) over IPv4. */
export function icmpEchoFrame(
  options: IpOptions,
  identifier: number,
  sequence: number,
  payload: Uint8Array,
): Uint8Array {
  const message = new Uint8Array(8 + payload.length);
  const view = new DataView(message.buffer);
  message[0] = 8;
  view.setUint16(4, identifier);
  view.setUint16(6, sequence);
  message.set(payload, 8);
  view.setUint16(2, internetChecksum(message));
  return ethernet(options, 0x0800, ipv4(options, 1, message));
}

/** ARP request "who has `target`, tell `source`" (RFC 826), broadcast. */
export function arpRequestFrame(sourceMac: string, source: string, target: string): Uint8Array {
  const arp = new Uint8Array(28);
  const view = new DataView(arp.buffer);
  view.setUint16(0, 1); // Ethernet
  view.setUint16(2, 0x0800);
  arp[4] = 6;
  arp[5] = 4;
  view.setUint16(6, 1); // request
  arp.set(macBytes(sourceMac), 8);
  arp.set(ipv4Bytes(source), 14);
  arp.set(ipv4Bytes(target), 24);
  return ethernet({ sourceMac, destinationMac: 'ff:ff:ff:ff:ff:ff' }, 0x0806, arp);
}

export interface ParsedTestFrame {
  etherType: number;
  /** IP protocol number, or undefined for non-IP. */
  protocol?: number;
  version?: 4 | 6;
  l3Offset: number;
  l4Offset?: number;
}

/** Minimal independent parser: Ethernet, IPv4 (any IHL), IPv6 (no extension headers). */
export function parseTestFrame(frame: Uint8Array): ParsedTestFrame {
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const etherType = view.getUint16(12);
  if (etherType === 0x0800) {
    const ihl = (frame[14]! & 0x0f) * 4;
    return { etherType, protocol: frame[23], version: 4, l3Offset: 14, l4Offset: 14 + ihl };
  }
  if (etherType === 0x86dd) return { etherType, protocol: frame[20], version: 6, l3Offset: 14, l4Offset: 54 };
  return { etherType, l3Offset: 14 };
}

/** Whether the IPv4 header checksum and the TCP/UDP checksum of a frame are correct. */
export function checksumsValid(frame: Uint8Array): boolean {
  const parsed = parseTestFrame(frame);
  if (parsed.version === undefined || parsed.l4Offset === undefined) return true;
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  let end: number;
  let sum = 0;
  if (parsed.version === 4) {
    if (internetChecksum(frame.subarray(14, parsed.l4Offset)) !== 0) return false;
    end = 14 + view.getUint16(16);
    for (let i = 26; i < 34; i += 2) sum += view.getUint16(i);
  } else {
    end = 54 + view.getUint16(18);
    for (let i = 22; i < 54; i += 2) sum += view.getUint16(i);
  }
  if (parsed.protocol !== 6 && parsed.protocol !== 17) return true;
  sum += parsed.protocol + (end - parsed.l4Offset);
  return internetChecksum(frame.subarray(parsed.l4Offset, end), foldPartial(sum)) === 0;
}
