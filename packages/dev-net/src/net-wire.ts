// virtio-net wire format, virtio spec 1.2 section 5.1. All multi-byte fields little-endian
// unless the field is a network header (those are big-endian, as on the wire).

/** Device ID of a network card (spec 5.1.1). */
export const VIRTIO_ID_NET = 1;

// Feature bits (spec 5.1.3). Features are bigint: the ones above 31 matter.
export const VIRTIO_NET_F_CSUM = 1n << 0n;
export const VIRTIO_NET_F_GUEST_CSUM = 1n << 1n;
export const VIRTIO_NET_F_CTRL_GUEST_OFFLOADS = 1n << 2n;
export const VIRTIO_NET_F_MTU = 1n << 3n;
export const VIRTIO_NET_F_MAC = 1n << 5n;
export const VIRTIO_NET_F_GUEST_TSO4 = 1n << 7n;
export const VIRTIO_NET_F_GUEST_TSO6 = 1n << 8n;
export const VIRTIO_NET_F_GUEST_ECN = 1n << 9n;
export const VIRTIO_NET_F_GUEST_UFO = 1n << 10n;
export const VIRTIO_NET_F_HOST_TSO4 = 1n << 11n;
export const VIRTIO_NET_F_HOST_TSO6 = 1n << 12n;
export const VIRTIO_NET_F_HOST_ECN = 1n << 13n;
export const VIRTIO_NET_F_HOST_UFO = 1n << 14n;
export const VIRTIO_NET_F_MRG_RXBUF = 1n << 15n;
export const VIRTIO_NET_F_STATUS = 1n << 16n;
export const VIRTIO_NET_F_CTRL_VQ = 1n << 17n;
export const VIRTIO_NET_F_CTRL_RX = 1n << 18n;
export const VIRTIO_NET_F_CTRL_VLAN = 1n << 19n;
export const VIRTIO_NET_F_CTRL_RX_EXTRA = 1n << 20n;
export const VIRTIO_NET_F_GUEST_ANNOUNCE = 1n << 21n;
export const VIRTIO_NET_F_MQ = 1n << 22n;
export const VIRTIO_NET_F_CTRL_MAC_ADDR = 1n << 23n;
export const VIRTIO_NET_F_HASH_REPORT = 1n << 57n;
export const VIRTIO_NET_F_RSS = 1n << 60n;

/**
 * Feature dependencies the driver must respect (spec 5.1.3.1): a key may only be negotiated
 * together with every bit of its value.
 */
export const VIRTIO_NET_FEATURE_REQUIRES: readonly (readonly [bigint, bigint])[] = [
  [VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_CSUM],
  [VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_CSUM],
  [VIRTIO_NET_F_GUEST_UFO, VIRTIO_NET_F_GUEST_CSUM],
  [VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4 | VIRTIO_NET_F_GUEST_TSO6],
  [VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_CSUM],
  [VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_CSUM],
  [VIRTIO_NET_F_HOST_UFO, VIRTIO_NET_F_CSUM],
  [VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4 | VIRTIO_NET_F_HOST_TSO6],
  [VIRTIO_NET_F_CTRL_RX, VIRTIO_NET_F_CTRL_VQ],
  [VIRTIO_NET_F_CTRL_VLAN, VIRTIO_NET_F_CTRL_VQ],
  [VIRTIO_NET_F_GUEST_ANNOUNCE, VIRTIO_NET_F_CTRL_VQ],
  [VIRTIO_NET_F_MQ, VIRTIO_NET_F_CTRL_VQ],
  [VIRTIO_NET_F_CTRL_MAC_ADDR, VIRTIO_NET_F_CTRL_VQ],
  [VIRTIO_NET_F_CTRL_GUEST_OFFLOADS, VIRTIO_NET_F_CTRL_VQ],
];

/** Returns the first dependency `features` breaks, or undefined when the set is consistent. */
export function brokenFeatureDependency(features: bigint): readonly [bigint, bigint] | undefined {
  for (const rule of VIRTIO_NET_FEATURE_REQUIRES) {
    const [feature, requires] = rule;
    // ECN rules need any one of the TSO bits, the others all of their bits.
    const any = feature === VIRTIO_NET_F_GUEST_ECN || feature === VIRTIO_NET_F_HOST_ECN;
    if ((features & feature) === 0n) continue;
    if (any ? (features & requires) === 0n : (features & requires) !== requires) return rule;
  }
  return undefined;
}

/*
 * struct virtio_net_config (spec 5.1.4):
 *   u8 mac[6]; le16 status; le16 max_virtqueue_pairs; le16 mtu; le32 speed; u8 duplex;
 *   u8 rss_max_key_size; le16 rss_max_indirection_table_length; le32 supported_hash_types;
 */
export const CONFIG_MAC = 0;
export const CONFIG_STATUS = 6;
export const CONFIG_MAX_VIRTQUEUE_PAIRS = 8;
export const CONFIG_MTU = 10;
export const CONFIG_SPEED = 12;
export const CONFIG_DUPLEX = 16;
/** We stop after `duplex` (RSS is not offered): 17 bytes, rounded to the 4-byte field grid. */
export const CONFIG_SIZE = 20;

export const VIRTIO_NET_S_LINK_UP = 1;
export const VIRTIO_NET_S_ANNOUNCE = 2;
/** speed in Mbit/s; 0xffffffff means unknown (spec 5.1.4). */
export const SPEED_UNKNOWN = 0xffff_ffff;
export const DUPLEX_FULL = 1;
/** Spec 5.1.4: max_virtqueue_pairs ranges over 1..0x8000. */
export const MAX_VIRTQUEUE_PAIRS = 0x8000;

/*
 * struct virtio_net_hdr (spec 5.1.6):
 *   u8 flags; u8 gso_type; le16 hdr_len; le16 gso_size; le16 csum_start; le16 csum_offset;
 *   le16 num_buffers;                                   (VERSION_1 or MRG_RXBUF)
 *   le32 hash_value; le16 hash_report; le16 padding;    (HASH_REPORT)
 */
export const HDR_FLAGS = 0;
export const HDR_GSO_TYPE = 1;
export const HDR_HDR_LEN = 2;
export const HDR_GSO_SIZE = 4;
export const HDR_CSUM_START = 6;
export const HDR_CSUM_OFFSET = 8;
export const HDR_NUM_BUFFERS = 10;
export const HDR_HASH_VALUE = 12;
export const HDR_HASH_REPORT = 16;

/** Legacy header without num_buffers (neither VERSION_1 nor MRG_RXBUF). */
export const HDR_SIZE_LEGACY = 10;
/** With num_buffers: VERSION_1 devices always use it (spec 5.1.6, "num_buffers ... always present"). */
export const HDR_SIZE = 12;
/** With the hash report fields. */
export const HDR_SIZE_HASH = 20;

export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
export const VIRTIO_NET_HDR_F_RSC_INFO = 4;

export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_UDP = 3;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
export const VIRTIO_NET_HDR_GSO_UDP_L4 = 5;
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;

/** The header length every buffer starts with, for a negotiated feature set (spec 5.1.6). */
export function netHeaderLength(features: bigint): number {
  if (features & VIRTIO_NET_F_HASH_REPORT) return HDR_SIZE_HASH;
  const version1 = (features & (1n << 32n)) !== 0n;
  if (version1 || features & VIRTIO_NET_F_MRG_RXBUF) return HDR_SIZE;
  return HDR_SIZE_LEGACY;
}

/** A virtio_net_hdr, decoded (host order). */
export interface NetHeader {
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
}

export function emptyNetHeader(): NetHeader {
  return { flags: 0, gsoType: VIRTIO_NET_HDR_GSO_NONE, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0 };
}

/** Decodes the first 10 bytes of a header (the fields every header variant has). */
export function decodeNetHeader(bytes: Uint8Array, into: NetHeader = emptyNetHeader()): NetHeader {
  into.flags = bytes[HDR_FLAGS]!;
  into.gsoType = bytes[HDR_GSO_TYPE]!;
  into.hdrLen = bytes[HDR_HDR_LEN]! | (bytes[HDR_HDR_LEN + 1]! << 8);
  into.gsoSize = bytes[HDR_GSO_SIZE]! | (bytes[HDR_GSO_SIZE + 1]! << 8);
  into.csumStart = bytes[HDR_CSUM_START]! | (bytes[HDR_CSUM_START + 1]! << 8);
  into.csumOffset = bytes[HDR_CSUM_OFFSET]! | (bytes[HDR_CSUM_OFFSET + 1]! << 8);
  return into;
}

/**
 * Encodes a header of `length` bytes (10, 12 or 20) into `target`; num_buffers and the hash
 * fields (where present) are written as given, the hash report as VIRTIO_NET_HASH_REPORT_NONE.
 */
export function encodeNetHeader(header: NetHeader, target: Uint8Array, length: number, numBuffers = 1): void {
  target[HDR_FLAGS] = header.flags;
  target[HDR_GSO_TYPE] = header.gsoType;
  putUint16(target, HDR_HDR_LEN, header.hdrLen);
  putUint16(target, HDR_GSO_SIZE, header.gsoSize);
  putUint16(target, HDR_CSUM_START, header.csumStart);
  putUint16(target, HDR_CSUM_OFFSET, header.csumOffset);
  if (length >= HDR_SIZE) putUint16(target, HDR_NUM_BUFFERS, numBuffers);
  if (length >= HDR_SIZE_HASH) target.fill(0, HDR_HASH_VALUE, HDR_SIZE_HASH);
}

function putUint16(target: Uint8Array, offset: number, value: number): void {
  target[offset] = value & 0xff;
  target[offset + 1] = (value >>> 8) & 0xff;
}

// Control virtqueue (spec 5.1.6.5): struct virtio_net_ctrl { u8 class; u8 command; u8 data[]; u8 ack; }
export const CTRL_HDR_SIZE = 2;
export const CTRL_ACK_SIZE = 1;
export const VIRTIO_NET_OK = 0;
export const VIRTIO_NET_ERR = 1;

export const VIRTIO_NET_CTRL_RX = 0;
export const VIRTIO_NET_CTRL_RX_PROMISC = 0;
export const VIRTIO_NET_CTRL_RX_ALLMULTI = 1;
export const VIRTIO_NET_CTRL_RX_ALLUNI = 2;
export const VIRTIO_NET_CTRL_RX_NOMULTI = 3;
export const VIRTIO_NET_CTRL_RX_NOUNI = 4;
export const VIRTIO_NET_CTRL_RX_NOBCAST = 5;

export const VIRTIO_NET_CTRL_MAC = 1;
export const VIRTIO_NET_CTRL_MAC_TABLE_SET = 0;
export const VIRTIO_NET_CTRL_MAC_ADDR_SET = 1;
/** struct virtio_net_ctrl_mac { le32 entries; u8 macs[entries][6]; } twice (unicast, multicast). */
export const CTRL_MAC_ENTRIES_SIZE = 4;
export const MAC_SIZE = 6;

export const VIRTIO_NET_CTRL_VLAN = 2;
export const VIRTIO_NET_CTRL_VLAN_ADD = 0;
export const VIRTIO_NET_CTRL_VLAN_DEL = 1;
/** VLAN ids are 12 bits (IEEE 802.1Q). */
export const MAX_VLAN_ID = 4095;

export const VIRTIO_NET_CTRL_ANNOUNCE = 3;
export const VIRTIO_NET_CTRL_ANNOUNCE_ACK = 0;

export const VIRTIO_NET_CTRL_MQ = 4;
export const VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET = 0;
export const VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN = 1;
export const VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX = 0x8000;

export const VIRTIO_NET_CTRL_GUEST_OFFLOADS = 5;
export const VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET = 0;

/** Ethernet framing (IEEE 802.3). */
export const ETH_HEADER_SIZE = 14;
export const ETH_ADDRESS_SIZE = 6;
export const ETH_TYPE_OFFSET = 12;
export const VLAN_TAG_SIZE = 4;
/** Smallest frame a device may be asked to send: an Ethernet header (the pad is optional on virtio). */
export const MIN_FRAME_SIZE = ETH_HEADER_SIZE;
/** Largest GSO frame: 64 KiB of IP payload plus link and network headers. */
export const MAX_GSO_FRAME_SIZE = 65_535 + ETH_HEADER_SIZE + VLAN_TAG_SIZE + 40;
export const DEFAULT_MTU = 1500;
/** Spec 5.1.4.1: the device must offer an mtu of at least 68 (the IPv4 minimum). */
export const MIN_MTU = 68;

/** Parses `aa:bb:cc:dd:ee:ff` into 6 bytes, or undefined when malformed. */
export function parseMac(text: string): Uint8Array | undefined {
  const parts = text.split(/[:-]/);
  if (parts.length !== 6) return undefined;
  const out = new Uint8Array(6);
  for (let i = 0; i < 6; i++) {
    const part = parts[i]!;
    if (!/^[0-9a-fA-F]{2}$/.test(part)) return undefined;
    out[i] = Number.parseInt(part, 16);
  }
  return out;
}

export function formatMac(bytes: Uint8Array, offset = 0): string {
  const parts: string[] = [];
  for (let i = 0; i < 6; i++) parts.push(bytes[offset + i]!.toString(16).padStart(2, '0'));
  return parts.join(':');
}

/** A MAC address as one number (48 bits fit a double exactly), for fast table keys. */
export function macKey(bytes: Uint8Array, offset = 0): number {
  return (
    (bytes[offset]! * 0x10000 + ((bytes[offset + 1]! << 8) | bytes[offset + 2]!)) * 0x1000000 +
    ((bytes[offset + 3]! << 16) | (bytes[offset + 4]! << 8) | bytes[offset + 5]!)
  );
}

/** Group bit of the first octet: multicast and broadcast destinations (IEEE 802). */
export function isMulticastMac(bytes: Uint8Array, offset = 0): boolean {
  return (bytes[offset]! & 1) === 1;
}

export const BROADCAST_MAC_KEY = 0xffff_ffff_ffff;
