import type { TestHarness } from '@xvio/transport/testing';
import {
  GPU_CONTROL_QUEUE,
  GPU_CURSOR_QUEUE,
  GpuCommand,
  type GpuRect,
  HDR_FENCE_ID,
  HDR_FLAGS,
  HDR_SIZE,
  HDR_TYPE,
  MEM_ENTRY_SIZE,
  RESP_DISPLAY_INFO_SIZE,
  RESP_EDID_SIZE,
  VIRTIO_GPU_FLAG_FENCE,
  writeRect,
} from '../gpu-wire.js';

export interface GpuReply {
  type: number;
  flags: number;
  fenceId: bigint;
  /** The whole response (header included). */
  bytes: Uint8Array;
}

/** A guest framebuffer: pages in guest memory the driver attaches as a resource's backing. */
export interface GuestFramebuffer {
  width: number;
  height: number;
  /** Offset of the first byte in the harness memory. */
  offset: number;
  address: bigint;
  length: number;
}

/**
 * The driver's side of virtio-gpu for tests and demos, issuing commands the way Linux's
 * virtio_gpu driver does (virtgpu_vq.c): one readable request buffer (plus the entry table
 * for ATTACH_BACKING) and one writable response buffer per command.
 */
export class GpuGuestDriver {
  private fence = 0n;

  constructor(readonly harness: TestHarness) {}

  /** Sends a raw command and waits for its response. */
  async send(
    request: Uint8Array,
    responseSize: number,
    extra: Uint8Array[] = [],
    fenced = false,
  ): Promise<GpuReply> {
    if (fenced) {
      const view = new DataView(request.buffer, request.byteOffset);
      view.setUint32(HDR_FLAGS, VIRTIO_GPU_FLAG_FENCE, true);
      view.setBigUint64(HDR_FENCE_ID, ++this.fence, true);
    }
    const buffers = [
      { data: request },
      ...extra.map((data) => ({ data })),
      { writable: true as const, length: responseSize },
    ];
    const { head, buffers: placed } = this.harness.request(GPU_CONTROL_QUEUE, buffers);
    const used = await this.harness.waitForUsed(GPU_CONTROL_QUEUE, 1);
    const element = used.find((u) => u.id === head) ?? used[0]!;
    const response = placed[placed.length - 1]!;
    const bytes = this.harness.memory.bytes.slice(response.offset, response.offset + element.length);
    if (bytes.length < HDR_SIZE) return { type: 0, flags: 0, fenceId: 0n, bytes };
    const view = new DataView(bytes.buffer);
    return {
      type: view.getUint32(HDR_TYPE, true),
      flags: view.getUint32(HDR_FLAGS, true),
      fenceId: view.getBigUint64(HDR_FENCE_ID, true),
      bytes,
    };
  }

  private command(type: number, bodySize: number, fill?: (view: DataView) => void): Uint8Array {
    const bytes = new Uint8Array(HDR_SIZE + bodySize);
    const view = new DataView(bytes.buffer);
    view.setUint32(HDR_TYPE, type, true);
    fill?.(view);
    return bytes;
  }

  getDisplayInfo(): Promise<GpuReply> {
    return this.send(this.command(GpuCommand.GET_DISPLAY_INFO, 0), RESP_DISPLAY_INFO_SIZE);
  }

  getEdid(scanoutId: number): Promise<GpuReply> {
    return this.send(
      this.command(GpuCommand.GET_EDID, 8, (v) => v.setUint32(HDR_SIZE, scanoutId, true)),
      RESP_EDID_SIZE,
    );
  }

  create2d(resourceId: number, format: number, width: number, height: number): Promise<GpuReply> {
    return this.send(
      this.command(GpuCommand.RESOURCE_CREATE_2D, 16, (v) => {
        v.setUint32(HDR_SIZE, resourceId, true);
        v.setUint32(HDR_SIZE + 4, format, true);
        v.setUint32(HDR_SIZE + 8, width, true);
        v.setUint32(HDR_SIZE + 12, height, true);
      }),
      HDR_SIZE,
    );
  }

  unref(resourceId: number): Promise<GpuReply> {
    return this.send(
      this.command(GpuCommand.RESOURCE_UNREF, 8, (v) => v.setUint32(HDR_SIZE, resourceId, true)),
      HDR_SIZE,
    );
  }

  attachBacking(
    resourceId: number,
    entries: readonly { address: bigint; length: number }[],
  ): Promise<GpuReply> {
    const table = new Uint8Array(entries.length * MEM_ENTRY_SIZE);
    const view = new DataView(table.buffer);
    entries.forEach((entry, i) => {
      view.setBigUint64(i * MEM_ENTRY_SIZE, entry.address, true);
      view.setUint32(i * MEM_ENTRY_SIZE + 8, entry.length, true);
    });
    const request = this.command(GpuCommand.RESOURCE_ATTACH_BACKING, 8, (v) => {
      v.setUint32(HDR_SIZE, resourceId, true);
      v.setUint32(HDR_SIZE + 4, entries.length, true);
    });
    return this.send(request, HDR_SIZE, [table]);
  }

  detachBacking(resourceId: number): Promise<GpuReply> {
    return this.send(
      this.command(GpuCommand.RESOURCE_DETACH_BACKING, 8, (v) => v.setUint32(HDR_SIZE, resourceId, true)),
      HDR_SIZE,
    );
  }

  setScanout(scanoutId: number, resourceId: number, rect: GpuRect): Promise<GpuReply> {
    return this.send(
      this.command(GpuCommand.SET_SCANOUT, 24, (v) => {
        writeRect(v, HDR_SIZE, rect);
        v.setUint32(HDR_SIZE + 16, scanoutId, true);
        v.setUint32(HDR_SIZE + 20, resourceId, true);
      }),
      HDR_SIZE,
    );
  }

  transfer(resourceId: number, rect: GpuRect, offset: bigint, fenced = false): Promise<GpuReply> {
    return this.send(
      this.command(GpuCommand.TRANSFER_TO_HOST_2D, 32, (v) => {
        writeRect(v, HDR_SIZE, rect);
        v.setBigUint64(HDR_SIZE + 16, offset, true);
        v.setUint32(HDR_SIZE + 24, resourceId, true);
      }),
      HDR_SIZE,
      [],
      fenced,
    );
  }

  flush(resourceId: number, rect: GpuRect, fenced = false): Promise<GpuReply> {
    return this.send(
      this.command(GpuCommand.RESOURCE_FLUSH, 24, (v) => {
        writeRect(v, HDR_SIZE, rect);
        v.setUint32(HDR_SIZE + 16, resourceId, true);
      }),
      HDR_SIZE,
      [],
      fenced,
    );
  }

  /** UPDATE_CURSOR / MOVE_CURSOR on the cursor queue (no response buffer, as Linux sends them). */
  async cursor(
    move: boolean,
    scanoutId: number,
    x: number,
    y: number,
    resourceId = 0,
    hotX = 0,
    hotY = 0,
  ): Promise<void> {
    const request = this.command(move ? GpuCommand.MOVE_CURSOR : GpuCommand.UPDATE_CURSOR, 32, (v) => {
      v.setUint32(HDR_SIZE, scanoutId, true);
      v.setUint32(HDR_SIZE + 4, x, true);
      v.setUint32(HDR_SIZE + 8, y, true);
      v.setUint32(HDR_SIZE + 16, resourceId, true);
      v.setUint32(HDR_SIZE + 20, hotX, true);
      v.setUint32(HDR_SIZE + 24, hotY, true);
    });
    this.harness.request(GPU_CURSOR_QUEUE, [{ data: request }]);
    await this.harness.waitForUsed(GPU_CURSOR_QUEUE, 1);
  }

  /** Reserves a framebuffer's pages in guest memory (in the cursor queue's buffer arena, which cursor traffic barely uses). */
  allocateFramebuffer(width: number, height: number): GuestFramebuffer {
    const length = width * height * 4;
    const arena = this.harness.queue(GPU_CURSOR_QUEUE).arena;
    const offset = arena.allocate(length, 4096);
    return { width, height, offset, address: this.harness.memory.address(offset), length };
  }

  /** Backing entries for a framebuffer cut into page-sized pieces, the way a scatter list looks. */
  pageEntries(framebuffer: GuestFramebuffer, pageSize = 4096): { address: bigint; length: number }[] {
    const entries: { address: bigint; length: number }[] = [];
    for (let at = 0; at < framebuffer.length; at += pageSize) {
      entries.push({
        address: framebuffer.address + BigInt(at),
        length: Math.min(pageSize, framebuffer.length - at),
      });
    }
    return entries;
  }

  /** The guest's view of its framebuffer pixels. */
  pixels(framebuffer: GuestFramebuffer): Uint8Array {
    return this.harness.memory.bytes.subarray(framebuffer.offset, framebuffer.offset + framebuffer.length);
  }
}
