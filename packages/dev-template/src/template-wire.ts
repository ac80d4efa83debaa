// Wire format of the template device. Everything the guest and the device exchange is
// defined here, with named offsets and explicit little-endian, as every device's
// `<name>-wire.ts` does. Numbers from the virtio spec cite their section.

/**
 * Device ID. The template is not a standard virtio device, so it takes an ID whose
 * virtio-pci device ID (0x1040 + ID = 0x10ff) lies in the range QEMU's docs/specs/pci-ids
 * keep "available for experimental usage without registration" (1af4:10f0-10ff). No guest
 * driver binds to it: a new device replaces this with its spec ID (spec 5).
 */
export const TEMPLATE_DEVICE_ID = 0xbf;

/** The one queue: the driver sends a request, the device answers in the same chain. */
export const TEMPLATE_REQUEST_QUEUE = 0;
export const TEMPLATE_QUEUE_COUNT = 1;

/**
 * Device feature bit 0 (device-specific bits are 0-23, spec 6): when negotiated the device
 * fills `checksum` in every response header; otherwise it writes 0 there.
 */
export const VIRTIO_TEMPLATE_F_CHECKSUM = 1n << 0n;

/** struct virtio_template_config { le32 max_request_size; } — read-only for the driver. */
export const CONFIG_MAX_REQUEST_SIZE = 0;
export const TEMPLATE_CONFIG_SIZE = 4;

/**
 * A request is one chain: the payload in device-readable buffers, then device-writable
 * buffers for struct virtio_template_response { le32 status; le32 checksum; u8 data[]; }
 * where `data` is the transformed payload (same length).
 */
export const RESPONSE_STATUS = 0;
export const RESPONSE_CHECKSUM = 4;
export const RESPONSE_HEADER_SIZE = 8;

export const TEMPLATE_STATUS_OK = 0;
/** The payload is larger than `max_request_size`. */
export const TEMPLATE_STATUS_TOO_LARGE = 1;
/** The writable buffers cannot hold the header plus the transformed payload. */
export const TEMPLATE_STATUS_NO_ROOM = 2;
/** The host failed; the device keeps running. */
export const TEMPLATE_STATUS_HOST_ERROR = 3;

export type TemplateStatus =
  | typeof TEMPLATE_STATUS_OK
  | typeof TEMPLATE_STATUS_TOO_LARGE
  | typeof TEMPLATE_STATUS_NO_ROOM
  | typeof TEMPLATE_STATUS_HOST_ERROR;

export function encodeResponseHeader(status: TemplateStatus, checksum: number): Uint8Array {
  const header = new Uint8Array(RESPONSE_HEADER_SIZE);
  const view = new DataView(header.buffer);
  view.setUint32(RESPONSE_STATUS, status, true);
  view.setUint32(RESPONSE_CHECKSUM, checksum >>> 0, true);
  return header;
}

export function decodeResponseHeader(bytes: Uint8Array): { status: number; checksum: number } {
  if (bytes.length < RESPONSE_HEADER_SIZE)
    throw new RangeError(`response header needs ${RESPONSE_HEADER_SIZE} bytes`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, RESPONSE_HEADER_SIZE);
  return { status: view.getUint32(RESPONSE_STATUS, true), checksum: view.getUint32(RESPONSE_CHECKSUM, true) };
}

export function encodeTemplateConfig(maxRequestSize: number): Uint8Array {
  const bytes = new Uint8Array(TEMPLATE_CONFIG_SIZE);
  new DataView(bytes.buffer).setUint32(CONFIG_MAX_REQUEST_SIZE, maxRequestSize >>> 0, true);
  return bytes;
}

const crcTable = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 (IEEE 802.3, reflected, as zlib computes it) of the transformed payload. */
export function crc32(bytes: Uint8Array): number {
  let crc = 0xffff_ffff;
  for (let i = 0; i < bytes.length; i++) crc = crcTable[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffff_ffff) >>> 0;
}
