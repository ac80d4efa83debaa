// vhost-user wire format, QEMU docs/interop/vhost-user.rst ("Message Specification",
// "Front-end message types", "Protocol features"). The spec says native byte order; every
// vhost-user host xvio runs on is little-endian, so fields are read little-endian explicitly.

/** Header: request u32 @0, flags u32 @4, size u32 @8. */
export const HEADER_SIZE = 12;
export const HEADER_REQUEST = 0;
export const HEADER_FLAGS = 4;
export const HEADER_SIZE_FIELD = 8;

/** Lower 2 bits of flags: the protocol version, currently 1. */
export const FLAG_VERSION_MASK = 0x3;
export const FLAG_VERSION = 0x1;
/** Set on every reply from the back-end. */
export const FLAG_REPLY = 0x4;
/** The front-end wants an acknowledgement (REPLY_ACK protocol feature). */
export const FLAG_NEED_REPLY = 0x8;

/**
 * Largest payload xvio accepts. The largest legitimate one is a config space access
 * (12 + 256 bytes) or a memory table of 8 regions with Xen fields (8 + 8 * 40 bytes); a
 * larger size is a broken or hostile frontend and the stream cannot be resynchronised.
 */
export const MAX_PAYLOAD_SIZE = 4096;
/** At most this many fds ride one message (VHOST_MEMORY_BASELINE_NREGIONS). */
export const MAX_FDS = 8;

/** Front-end message types ("Front-end message types"). */
export const Request = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  /** vhost-user-gpu only: the back-end's end of the display socket (docs/interop/vhost-user-gpu.rst). */
  GPU_SET_SOCKET: 33,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
} as const;

const requestNames = new Map<number, string>(Object.entries(Request).map(([name, id]) => [id, name]));

/** The spec name of a request, or `REQUEST_<n>` for one xvio does not know. */
export function requestName(request: number): string {
  return requestNames.get(request) ?? `REQUEST_${request}`;
}

/** Feature bit 30 (a reserved virtio bit): the back-end speaks GET/SET_PROTOCOL_FEATURES. */
export const VHOST_USER_F_PROTOCOL_FEATURES = 1n << 30n;
/** VHOST_F_LOG_ALL (bit 26): dirty logging for migration; xvio does not offer it. */
export const VHOST_F_LOG_ALL = 1n << 26n;

/** Protocol feature bits ("Protocol features"). */
export const ProtocolFeature = {
  MQ: 1n << 0n,
  LOG_SHMFD: 1n << 1n,
  RARP: 1n << 2n,
  REPLY_ACK: 1n << 3n,
  MTU: 1n << 4n,
  BACKEND_REQ: 1n << 5n,
  CROSS_ENDIAN: 1n << 6n,
  CRYPTO_SESSION: 1n << 7n,
  PAGEFAULT: 1n << 8n,
  CONFIG: 1n << 9n,
  BACKEND_SEND_FD: 1n << 10n,
  HOST_NOTIFIER: 1n << 11n,
  INFLIGHT_SHMFD: 1n << 12n,
  RESET_DEVICE: 1n << 13n,
  INBAND_NOTIFICATIONS: 1n << 14n,
  CONFIGURE_MEM_SLOTS: 1n << 15n,
  STATUS: 1n << 16n,
  XEN_MMAP: 1n << 17n,
} as const;

/** A single 64-bit integer payload. */
export const U64_SIZE = 8;

/** Vring state description: index u32 @0, num u32 @4. */
export const VRING_STATE_SIZE = 8;
export const VRING_STATE_INDEX = 0;
export const VRING_STATE_NUM = 4;

/** Vring address description: index u32, flags u32, desc u64, used u64, avail u64, log u64. */
export const VRING_ADDR_SIZE = 40;
export const VRING_ADDR_INDEX = 0;
export const VRING_ADDR_FLAGS = 4;
export const VRING_ADDR_DESC = 8;
export const VRING_ADDR_USED = 16;
export const VRING_ADDR_AVAIL = 24;
export const VRING_ADDR_LOG = 32;
/** VHOST_VRING_F_LOG: log writes to the used ring (migration only). */
export const VHOST_VRING_F_LOG = 1;

/** Kick/call/err payload (u64): bits 0-7 the vring index, bit 8 "no fd in ancillary data". */
export const VRING_FD_INDEX_MASK = 0xffn;
export const VRING_FD_NOFD = 0x100n;

/** Memory regions description: num regions u32 @0, padding u32 @4, regions from @8. */
export const MEM_TABLE_REGIONS = 8;
/** Memory region description: guest address, size, user address, mmap offset (u64 each). */
export const REGION_SIZE = 32;
/** With XEN_MMAP negotiated each region has two more fields: xen mmap flags u32, domid u32. */
export const REGION_SIZE_XEN = 40;
export const REGION_GUEST_ADDRESS = 0;
export const REGION_MEMORY_SIZE = 8;
export const REGION_USER_ADDRESS = 16;
export const REGION_MMAP_OFFSET = 24;
export const REGION_XEN_FLAGS = 32;
export const REGION_XEN_DOMID = 36;
/** Single memory region description (ADD/REM_MEM_REG): u64 padding, then one region. */
export const SINGLE_REGION_OFFSET = 8;

/** Xen mmap flags (vhost-user.rst "Memory region description"). */
export const XEN_MMAP_FOREIGN = 0x1;
export const XEN_MMAP_GRANT = 0x2;
/** Bit 8: map only what is used, when it is used (rust-vmm's vm-memory spells it 0x8). */
export const XEN_MMAP_NO_ADVANCE_MAP = 0x100;
/**
 * The same meaning as rust-vmm's vm-memory and vhost crates send it (`MmapXenFlags::
 * NO_ADVANCE_MAP = 0x8`, what xen-vhost-frontend puts on its grant regions): accepted too.
 */
export const XEN_MMAP_NO_ADVANCE_MAP_RUST_VMM = 0x8;
export const XEN_MMAP_KNOWN_FLAGS =
  XEN_MMAP_FOREIGN | XEN_MMAP_GRANT | XEN_MMAP_NO_ADVANCE_MAP | XEN_MMAP_NO_ADVANCE_MAP_RUST_VMM;

/** Virtio device config space: offset u32, size u32, flags u32, then `size` bytes. */
export const CONFIG_HEADER_SIZE = 12;
export const CONFIG_OFFSET = 0;
export const CONFIG_SIZE = 4;
export const CONFIG_FLAGS = 8;
export const CONFIG_PAYLOAD = 12;
/** VHOST_USER_MAX_CONFIG_SIZE in QEMU. */
export const MAX_CONFIG_SIZE = 256;
/** Config flag: the write comes from live migration (may touch read-only fields). */
export const CONFIG_FLAG_MIGRATION = 1;

/**
 * Inflight description: mmap size u64, mmap offset u64, num queues u16, queue size u16.
 * QEMU sends and expects `sizeof(VhostUserInflight)`, 24 with the struct's tail padding.
 */
export const INFLIGHT_SIZE = 24;
/** The fields end at byte 20; a frontend that sends no padding is accepted. */
export const INFLIGHT_MIN_SIZE = 20;
export const INFLIGHT_MMAP_SIZE = 0;
export const INFLIGHT_MMAP_OFFSET = 8;
export const INFLIGHT_NUM_QUEUES = 16;
export const INFLIGHT_QUEUE_SIZE = 18;

/**
 * Split-ring inflight region ("Inflight I/O tracking"): features u64 @0, version u16 @8,
 * desc_num u16 @10, last_batch_head u16 @12, used_idx u16 @14, then `DescStateSplit`
 * entries of 16 bytes: inflight u8 @0, padding, next u16 @6, counter u64 @8.
 */
export const INFLIGHT_REGION_HEADER = 16;
export const INFLIGHT_REGION_VERSION = 8;
export const INFLIGHT_REGION_DESC_NUM = 10;
export const INFLIGHT_REGION_LAST_BATCH_HEAD = 12;
export const INFLIGHT_REGION_USED_IDX = 14;
export const INFLIGHT_DESC_SIZE = 16;
export const INFLIGHT_DESC_INFLIGHT = 0;
export const INFLIGHT_DESC_NEXT = 6;
export const INFLIGHT_DESC_COUNTER = 8;
export const INFLIGHT_VERSION = 1;
/** Bytes of one queue's split inflight region, rounded up as libvhost-user does (to 64). */
export const inflightRegionSize = (queueSize: number): number =>
  Math.ceil((INFLIGHT_REGION_HEADER + INFLIGHT_DESC_SIZE * queueSize) / 64) * 64;

/** One message as read from the socket: the fds arrived with it and are owned by its handler. */
export interface VhostUserMessage {
  readonly request: number;
  readonly flags: number;
  readonly payload: Uint8Array;
  readonly fds: number[];
}

/** A little-endian reader over a payload that was already checked to be long enough. */
export function payloadView(payload: Uint8Array): DataView {
  return new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
}

/** Encodes a header plus payload. */
export function encodeMessage(
  request: number,
  flags: number,
  payload: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + payload.length);
  const view = new DataView(out.buffer);
  view.setUint32(HEADER_REQUEST, request, true);
  view.setUint32(HEADER_FLAGS, flags, true);
  view.setUint32(HEADER_SIZE_FIELD, payload.length, true);
  out.set(payload, HEADER_SIZE);
  return out;
}

export function encodeU64(value: bigint): Uint8Array {
  const out = new Uint8Array(U64_SIZE);
  new DataView(out.buffer).setBigUint64(0, BigInt.asUintN(64, value), true);
  return out;
}

export function encodeVringState(index: number, num: number): Uint8Array {
  const out = new Uint8Array(VRING_STATE_SIZE);
  const view = new DataView(out.buffer);
  view.setUint32(VRING_STATE_INDEX, index, true);
  view.setUint32(VRING_STATE_NUM, num, true);
  return out;
}

/** One memory region as it travels in SET_MEM_TABLE / ADD_MEM_REG / REM_MEM_REG. */
export interface RegionDescription {
  guestAddress: bigint;
  size: bigint;
  userAddress: bigint;
  mmapOffset: bigint;
  /** Only with XEN_MMAP: foreign/grant/no-advance-map bits (0 otherwise). */
  xenFlags: number;
  /** Only with XEN_MMAP: the domain the region belongs to. */
  domid: number;
}

export function decodeRegion(view: DataView, offset: number, xen: boolean): RegionDescription {
  return {
    guestAddress: view.getBigUint64(offset + REGION_GUEST_ADDRESS, true),
    size: view.getBigUint64(offset + REGION_MEMORY_SIZE, true),
    userAddress: view.getBigUint64(offset + REGION_USER_ADDRESS, true),
    mmapOffset: view.getBigUint64(offset + REGION_MMAP_OFFSET, true),
    xenFlags: xen ? view.getUint32(offset + REGION_XEN_FLAGS, true) : 0,
    domid: xen ? view.getUint32(offset + REGION_XEN_DOMID, true) : 0,
  };
}

export function encodeRegion(view: DataView, offset: number, region: RegionDescription, xen: boolean): void {
  view.setBigUint64(offset + REGION_GUEST_ADDRESS, region.guestAddress, true);
  view.setBigUint64(offset + REGION_MEMORY_SIZE, region.size, true);
  view.setBigUint64(offset + REGION_USER_ADDRESS, region.userAddress, true);
  view.setBigUint64(offset + REGION_MMAP_OFFSET, region.mmapOffset, true);
  if (xen) {
    view.setUint32(offset + REGION_XEN_FLAGS, region.xenFlags, true);
    view.setUint32(offset + REGION_XEN_DOMID, region.domid, true);
  }
}

/** Encodes a SET_MEM_TABLE payload. */
export function encodeMemTable(regions: readonly RegionDescription[], xen = false): Uint8Array {
  const stride = xen ? REGION_SIZE_XEN : REGION_SIZE;
  const out = new Uint8Array(MEM_TABLE_REGIONS + stride * regions.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, regions.length, true);
  regions.forEach((region, i) => {
    encodeRegion(view, MEM_TABLE_REGIONS + i * stride, region, xen);
  });
  return out;
}

/** Encodes an ADD_MEM_REG / REM_MEM_REG payload. */
export function encodeSingleRegion(region: RegionDescription, xen = false): Uint8Array {
  const out = new Uint8Array(SINGLE_REGION_OFFSET + (xen ? REGION_SIZE_XEN : REGION_SIZE));
  encodeRegion(new DataView(out.buffer), SINGLE_REGION_OFFSET, region, xen);
  return out;
}

export interface VringAddress {
  index: number;
  flags: number;
  desc: bigint;
  used: bigint;
  avail: bigint;
  log: bigint;
}

export function decodeVringAddress(payload: Uint8Array): VringAddress {
  const view = payloadView(payload);
  return {
    index: view.getUint32(VRING_ADDR_INDEX, true),
    flags: view.getUint32(VRING_ADDR_FLAGS, true),
    desc: view.getBigUint64(VRING_ADDR_DESC, true),
    used: view.getBigUint64(VRING_ADDR_USED, true),
    avail: view.getBigUint64(VRING_ADDR_AVAIL, true),
    log: view.getBigUint64(VRING_ADDR_LOG, true),
  };
}

export function encodeVringAddress(address: VringAddress): Uint8Array {
  const out = new Uint8Array(VRING_ADDR_SIZE);
  const view = new DataView(out.buffer);
  view.setUint32(VRING_ADDR_INDEX, address.index, true);
  view.setUint32(VRING_ADDR_FLAGS, address.flags, true);
  view.setBigUint64(VRING_ADDR_DESC, address.desc, true);
  view.setBigUint64(VRING_ADDR_USED, address.used, true);
  view.setBigUint64(VRING_ADDR_AVAIL, address.avail, true);
  view.setBigUint64(VRING_ADDR_LOG, address.log, true);
  return out;
}

export interface ConfigAccess {
  offset: number;
  size: number;
  flags: number;
}

export function encodeConfig(
  access: ConfigAccess,
  data: Uint8Array = new Uint8Array(access.size),
): Uint8Array {
  const out = new Uint8Array(CONFIG_HEADER_SIZE + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(CONFIG_OFFSET, access.offset, true);
  view.setUint32(CONFIG_SIZE, access.size, true);
  view.setUint32(CONFIG_FLAGS, access.flags, true);
  out.set(data, CONFIG_PAYLOAD);
  return out;
}

export interface InflightDescription {
  mmapSize: bigint;
  mmapOffset: bigint;
  numQueues: number;
  queueSize: number;
}

export function decodeInflight(payload: Uint8Array): InflightDescription {
  const view = payloadView(payload);
  return {
    mmapSize: view.getBigUint64(INFLIGHT_MMAP_SIZE, true),
    mmapOffset: view.getBigUint64(INFLIGHT_MMAP_OFFSET, true),
    numQueues: view.getUint16(INFLIGHT_NUM_QUEUES, true),
    queueSize: view.getUint16(INFLIGHT_QUEUE_SIZE, true),
  };
}

export function encodeInflight(description: InflightDescription): Uint8Array {
  const out = new Uint8Array(INFLIGHT_SIZE);
  const view = new DataView(out.buffer);
  view.setBigUint64(INFLIGHT_MMAP_SIZE, description.mmapSize, true);
  view.setBigUint64(INFLIGHT_MMAP_OFFSET, description.mmapOffset, true);
  view.setUint16(INFLIGHT_NUM_QUEUES, description.numQueues, true);
  view.setUint16(INFLIGHT_QUEUE_SIZE, description.queueSize, true);
  return out;
}
