// The vhost-user-gpu display protocol (QEMU docs/interop/vhost-user-gpu.rst): how a
// vhost-user gpu back-end shows its scanouts in QEMU's display. The back-end sends requests
// on the socket QEMU passes with VHOST_USER_GPU_SET_SOCKET; QEMU replies to the few that
// have a reply. Native byte order per the document; every host xvio runs on is
// little-endian, so fields are written little-endian explicitly.

/** Header: request u32 @0, flags u32 @4, size u32 @8 (the payload's length). */
export const DISPLAY_HEADER_SIZE = 12;
export const DISPLAY_HEADER_REQUEST = 0;
export const DISPLAY_HEADER_FLAGS = 4;
export const DISPLAY_HEADER_SIZE_FIELD = 8;
/** Bit 2 of flags: set on every reply (from QEMU). */
export const DISPLAY_FLAG_REPLY = 0x4;

/** Request ids ("Message types"). */
export const DisplayRequest = {
  GET_PROTOCOL_FEATURES: 1,
  SET_PROTOCOL_FEATURES: 2,
  GET_DISPLAY_INFO: 3,
  CURSOR_POS: 4,
  CURSOR_POS_HIDE: 5,
  CURSOR_UPDATE: 6,
  SCANOUT: 7,
  UPDATE: 8,
  DMABUF_SCANOUT: 9,
  DMABUF_UPDATE: 10,
} as const;

/**
 * Largest reply xvio reads: GET_DISPLAY_INFO's `virtio_gpu_resp_display_info` (408 bytes);
 * newer QEMUs also answer GET_EDID (1056). Anything longer is not QEMU.
 */
export const MAX_DISPLAY_REPLY = 4096;

/** VhostUserGpuCursorPos: scanout-id u32 @0, x u32 @4, y u32 @8. */
export const CURSOR_POS_SIZE = 12;
/** VhostUserGpuCursorUpdate: pos, hot_x u32 @12, hot_y u32 @16, 64x64 a8r8g8b8 from @20. */
export const CURSOR_UPDATE_HOT_X = 12;
export const CURSOR_UPDATE_HOT_Y = 16;
export const CURSOR_UPDATE_DATA = 20;
export const CURSOR_SIDE = 64;
export const CURSOR_UPDATE_SIZE = CURSOR_UPDATE_DATA + CURSOR_SIDE * CURSOR_SIDE * 4;
/** VhostUserGpuScanout: scanout-id u32 @0, width u32 @4, height u32 @8 (0x0 disables it). */
export const SCANOUT_SIZE = 12;
/** VhostUserGpuUpdate: scanout-id, x, y, width, height (u32 each), then x8r8g8b8 pixels, stride width * 4. */
export const UPDATE_HEADER_SIZE = 20;

function message(request: number, payloadSize: number): { bytes: Uint8Array; view: DataView } {
  const bytes = new Uint8Array(DISPLAY_HEADER_SIZE + payloadSize);
  const view = new DataView(bytes.buffer);
  view.setUint32(DISPLAY_HEADER_REQUEST, request, true);
  view.setUint32(DISPLAY_HEADER_FLAGS, 0, true);
  view.setUint32(DISPLAY_HEADER_SIZE_FIELD, payloadSize, true);
  return { bytes, view };
}

export function encodeGetProtocolFeatures(): Uint8Array {
  return message(DisplayRequest.GET_PROTOCOL_FEATURES, 0).bytes;
}

export function encodeSetProtocolFeatures(features: bigint): Uint8Array {
  const { bytes, view } = message(DisplayRequest.SET_PROTOCOL_FEATURES, 8);
  view.setBigUint64(DISPLAY_HEADER_SIZE, features, true);
  return bytes;
}

export function encodeGetDisplayInfo(): Uint8Array {
  return message(DisplayRequest.GET_DISPLAY_INFO, 0).bytes;
}

export function encodeScanout(scanoutId: number, width: number, height: number): Uint8Array {
  const { bytes, view } = message(DisplayRequest.SCANOUT, SCANOUT_SIZE);
  view.setUint32(DISPLAY_HEADER_SIZE, scanoutId, true);
  view.setUint32(DISPLAY_HEADER_SIZE + 4, width, true);
  view.setUint32(DISPLAY_HEADER_SIZE + 8, height, true);
  return bytes;
}

/**
 * An UPDATE of `rect` from RGBA pixels (row-major, width * 4 bytes a row). QEMU composites
 * the data as PIXMAN_x8r8g8b8, a native 32-bit 0xXXRRGGBB, so the bytes are B, G, R, X.
 */
export function encodeUpdate(
  scanoutId: number,
  rect: { x: number; y: number; width: number; height: number },
  rgba: Uint8Array,
): Uint8Array {
  const pixels = rect.width * rect.height;
  if (rgba.length !== pixels * 4)
    throw new RangeError(`update of ${pixels} pixels given ${rgba.length} bytes`);
  const { bytes, view } = message(DisplayRequest.UPDATE, UPDATE_HEADER_SIZE + pixels * 4);
  const at = DISPLAY_HEADER_SIZE;
  view.setUint32(at, scanoutId, true);
  view.setUint32(at + 4, rect.x, true);
  view.setUint32(at + 8, rect.y, true);
  view.setUint32(at + 12, rect.width, true);
  view.setUint32(at + 16, rect.height, true);
  rgbaToBgrx(rgba, bytes.subarray(at + UPDATE_HEADER_SIZE));
  return bytes;
}

/** CURSOR_POS (shown) or CURSOR_POS_HIDE. */
export function encodeCursorPos(scanoutId: number, x: number, y: number, visible: boolean): Uint8Array {
  const { bytes, view } = message(
    visible ? DisplayRequest.CURSOR_POS : DisplayRequest.CURSOR_POS_HIDE,
    CURSOR_POS_SIZE,
  );
  view.setUint32(DISPLAY_HEADER_SIZE, scanoutId, true);
  view.setUint32(DISPLAY_HEADER_SIZE + 4, x >>> 0, true);
  view.setUint32(DISPLAY_HEADER_SIZE + 8, y >>> 0, true);
  return bytes;
}

/** CURSOR_UPDATE from a 64x64 RGBA image; QEMU takes PIXMAN_a8r8g8b8 (bytes B, G, R, A). */
export function encodeCursorUpdate(
  scanoutId: number,
  cursor: { rgba: Uint8Array; hotX: number; hotY: number },
  x: number,
  y: number,
): Uint8Array {
  if (cursor.rgba.length !== CURSOR_SIDE * CURSOR_SIDE * 4) throw new RangeError('cursor must be 64x64 RGBA');
  const { bytes, view } = message(DisplayRequest.CURSOR_UPDATE, CURSOR_UPDATE_SIZE);
  const at = DISPLAY_HEADER_SIZE;
  view.setUint32(at, scanoutId, true);
  view.setUint32(at + 4, x >>> 0, true);
  view.setUint32(at + 8, y >>> 0, true);
  view.setUint32(at + CURSOR_UPDATE_HOT_X, cursor.hotX, true);
  view.setUint32(at + CURSOR_UPDATE_HOT_Y, cursor.hotY, true);
  const data = bytes.subarray(at + CURSOR_UPDATE_DATA);
  rgbaToBgrx(cursor.rgba, data);
  for (let i = 3; i < data.length; i += 4) data[i] = cursor.rgba[i]!;
  return bytes;
}

/** RGBA to B, G, R, X=0xff, pixel by pixel. */
function rgbaToBgrx(rgba: Uint8Array, out: Uint8Array): void {
  for (let i = 0; i < rgba.length; i += 4) {
    out[i] = rgba[i + 2]!;
    out[i + 1] = rgba[i + 1]!;
    out[i + 2] = rgba[i]!;
    out[i + 3] = 0xff;
  }
}

export interface DisplayReply {
  request: number;
  flags: number;
  payload: Uint8Array;
}

/**
 * Splits a byte stream from QEMU into messages. A size beyond MAX_DISPLAY_REPLY cannot be
 * a reply QEMU sends and ends the stream (RangeError).
 */
export class DisplayReplyReader {
  private buffer = new Uint8Array(0);

  push(chunk: Uint8Array): DisplayReply[] {
    const joined = new Uint8Array(this.buffer.length + chunk.length);
    joined.set(this.buffer);
    joined.set(chunk, this.buffer.length);
    const out: DisplayReply[] = [];
    let at = 0;
    while (joined.length - at >= DISPLAY_HEADER_SIZE) {
      const view = new DataView(joined.buffer, joined.byteOffset + at, DISPLAY_HEADER_SIZE);
      const size = view.getUint32(DISPLAY_HEADER_SIZE_FIELD, true);
      if (size > MAX_DISPLAY_REPLY) throw new RangeError(`display reply of ${size} bytes`);
      if (joined.length - at < DISPLAY_HEADER_SIZE + size) break;
      out.push({
        request: view.getUint32(DISPLAY_HEADER_REQUEST, true),
        flags: view.getUint32(DISPLAY_HEADER_FLAGS, true),
        payload: joined.slice(at + DISPLAY_HEADER_SIZE, at + DISPLAY_HEADER_SIZE + size),
      });
      at += DISPLAY_HEADER_SIZE + size;
    }
    this.buffer = joined.slice(at);
    return out;
  }
}
