// virtio-gpu wire format, virtio spec 1.2 section 5.7. All fields little-endian.

export const VIRTIO_ID_GPU = 16;

/** Queues (5.7.2). */
export const GPU_CONTROL_QUEUE = 0;
export const GPU_CURSOR_QUEUE = 1;
export const GPU_QUEUE_COUNT = 2;

/** Feature bits (5.7.3). xvio implements 2D only: VIRGL, BLOB and CONTEXT_INIT are not offered. */
export const VIRTIO_GPU_F_VIRGL = 1n << 0n;
export const VIRTIO_GPU_F_EDID = 1n << 1n;
export const VIRTIO_GPU_F_RESOURCE_UUID = 1n << 2n;
export const VIRTIO_GPU_F_RESOURCE_BLOB = 1n << 3n;
export const VIRTIO_GPU_F_CONTEXT_INIT = 1n << 4n;

/** struct virtio_gpu_config { le32 events_read; le32 events_clear; le32 num_scanouts; le32 num_capsets; } (5.7.4) */
export const GPU_CONFIG_EVENTS_READ = 0;
export const GPU_CONFIG_EVENTS_CLEAR = 4;
export const GPU_CONFIG_NUM_SCANOUTS = 8;
export const GPU_CONFIG_NUM_CAPSETS = 12;
export const GPU_CONFIG_SIZE = 16;
export const VIRTIO_GPU_EVENT_DISPLAY = 1;

export const VIRTIO_GPU_MAX_SCANOUTS = 16;

/** enum virtio_gpu_ctrl_type (5.7.6.7). */
export const GpuCommand = {
  GET_DISPLAY_INFO: 0x0100,
  RESOURCE_CREATE_2D: 0x0101,
  RESOURCE_UNREF: 0x0102,
  SET_SCANOUT: 0x0103,
  RESOURCE_FLUSH: 0x0104,
  TRANSFER_TO_HOST_2D: 0x0105,
  RESOURCE_ATTACH_BACKING: 0x0106,
  RESOURCE_DETACH_BACKING: 0x0107,
  GET_CAPSET_INFO: 0x0108,
  GET_CAPSET: 0x0109,
  GET_EDID: 0x010a,
  UPDATE_CURSOR: 0x0300,
  MOVE_CURSOR: 0x0301,
} as const;

export const GpuResponse = {
  OK_NODATA: 0x1100,
  OK_DISPLAY_INFO: 0x1101,
  OK_EDID: 0x1104,
  ERR_UNSPEC: 0x1200,
  ERR_OUT_OF_MEMORY: 0x1201,
  ERR_INVALID_SCANOUT_ID: 0x1202,
  ERR_INVALID_RESOURCE_ID: 0x1203,
  ERR_INVALID_CONTEXT_ID: 0x1204,
  ERR_INVALID_PARAMETER: 0x1205,
} as const;

export const VIRTIO_GPU_FLAG_FENCE = 1;
export const VIRTIO_GPU_FLAG_INFO_RING_IDX = 2;

/** struct virtio_gpu_ctrl_hdr { le32 type; le32 flags; le64 fence_id; le32 ctx_id; u8 ring_idx; u8 padding[3]; } */
export const HDR_TYPE = 0;
export const HDR_FLAGS = 4;
export const HDR_FENCE_ID = 8;
export const HDR_CTX_ID = 16;
export const HDR_RING_IDX = 20;
export const HDR_SIZE = 24;

/** struct virtio_gpu_rect { le32 x, y, width, height; } */
export const RECT_SIZE = 16;

/** Request sizes: header plus body (5.7.6.8). The device reads exactly these many bytes. */
export const REQUEST_SIZE: Readonly<Record<number, number>> = {
  [GpuCommand.GET_DISPLAY_INFO]: HDR_SIZE,
  [GpuCommand.RESOURCE_CREATE_2D]: HDR_SIZE + 16, // resource_id, format, width, height
  [GpuCommand.RESOURCE_UNREF]: HDR_SIZE + 8, // resource_id, padding
  [GpuCommand.SET_SCANOUT]: HDR_SIZE + RECT_SIZE + 8, // r, scanout_id, resource_id
  [GpuCommand.RESOURCE_FLUSH]: HDR_SIZE + RECT_SIZE + 8, // r, resource_id, padding
  [GpuCommand.TRANSFER_TO_HOST_2D]: HDR_SIZE + RECT_SIZE + 16, // r, le64 offset, resource_id, padding
  [GpuCommand.RESOURCE_ATTACH_BACKING]: HDR_SIZE + 8, // resource_id, nr_entries; then entries
  [GpuCommand.RESOURCE_DETACH_BACKING]: HDR_SIZE + 8, // resource_id, padding
  [GpuCommand.GET_EDID]: HDR_SIZE + 8, // scanout, padding
  [GpuCommand.UPDATE_CURSOR]: HDR_SIZE + 16 + 16, // cursor_pos{scanout_id,x,y,pad}, resource_id, hot_x, hot_y, pad
  [GpuCommand.MOVE_CURSOR]: HDR_SIZE + 16 + 16,
};

/** struct virtio_gpu_mem_entry { le64 addr; le32 length; le32 padding; } */
export const MEM_ENTRY_SIZE = 16;

/** struct virtio_gpu_display_one { struct virtio_gpu_rect r; le32 enabled; le32 flags; } x 16 */
export const DISPLAY_ONE_SIZE = 24;
export const RESP_DISPLAY_INFO_SIZE = HDR_SIZE + VIRTIO_GPU_MAX_SCANOUTS * DISPLAY_ONE_SIZE;
/** struct virtio_gpu_resp_edid { hdr; le32 size; le32 padding; u8 edid[1024]; } */
export const RESP_EDID_SIZE = HDR_SIZE + 8 + 1024;

/** enum virtio_gpu_formats (5.7.6.8): the byte order in memory, 4 bytes per pixel. */
export const GpuFormat = {
  B8G8R8A8_UNORM: 1,
  B8G8R8X8_UNORM: 2,
  A8R8G8B8_UNORM: 3,
  X8R8G8B8_UNORM: 4,
  R8G8B8A8_UNORM: 67,
  X8B8G8R8_UNORM: 68,
  A8B8G8R8_UNORM: 121,
  R8G8B8X8_UNORM: 134,
} as const;

/**
 * Where R, G, B and (if any) A sit in each 4-byte pixel of a format, so that any of them
 * converts to RGBA for PNG and the viewer. Alpha -1: the format has no alpha (opaque).
 */
export const FORMAT_CHANNELS: ReadonlyMap<number, { r: number; g: number; b: number; a: number }> = new Map([
  [GpuFormat.B8G8R8A8_UNORM, { b: 0, g: 1, r: 2, a: 3 }],
  [GpuFormat.B8G8R8X8_UNORM, { b: 0, g: 1, r: 2, a: -1 }],
  [GpuFormat.A8R8G8B8_UNORM, { a: 0, r: 1, g: 2, b: 3 }],
  [GpuFormat.X8R8G8B8_UNORM, { a: -1, r: 1, g: 2, b: 3 }],
  [GpuFormat.R8G8B8A8_UNORM, { r: 0, g: 1, b: 2, a: 3 }],
  [GpuFormat.X8B8G8R8_UNORM, { a: -1, b: 1, g: 2, r: 3 }],
  [GpuFormat.A8B8G8R8_UNORM, { a: 0, b: 1, g: 2, r: 3 }],
  [GpuFormat.R8G8B8X8_UNORM, { r: 0, g: 1, b: 2, a: -1 }],
]);

export const BYTES_PER_PIXEL = 4;

/** Cursor images are 64x64 (5.7.6.10). */
export const CURSOR_SIZE = 64;

export interface GpuRect {
  x: number;
  y: number;
  width: number;
  height: number;
}

export function readRect(view: DataView, offset: number): GpuRect {
  return {
    x: view.getUint32(offset, true),
    y: view.getUint32(offset + 4, true),
    width: view.getUint32(offset + 8, true),
    height: view.getUint32(offset + 12, true),
  };
}

export function writeRect(view: DataView, offset: number, rect: GpuRect): void {
  view.setUint32(offset, rect.x, true);
  view.setUint32(offset + 4, rect.y, true);
  view.setUint32(offset + 8, rect.width, true);
  view.setUint32(offset + 12, rect.height, true);
}

/** Whether `inner` lies within a width x height area, computed without 32-bit overflow. */
export function rectWithin(inner: GpuRect, width: number, height: number): boolean {
  return inner.x + inner.width <= width && inner.y + inner.height <= height;
}
