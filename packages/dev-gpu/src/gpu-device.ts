import { type GuestMemory, GuestMemoryError } from '@xvio/grant-pool';
import {
  CORE_FEATURES,
  type DescriptorChain,
  type DeviceContext,
  openChain,
  serviceQueue,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  type VirtioDevice,
} from '@xvio/transport';
import { type GpuConfig, type GpuConfigInput, parseGpuConfig } from './gpu-config.js';
import { createEdid } from './gpu-edid.js';
import { type GpuCursor, type GpuFrame, type GpuHost, NullGpuHost } from './gpu-host.js';
import { GpuMetrics } from './gpu-metrics.js';
import { encodePng } from './gpu-png.js';
import {
  BYTES_PER_PIXEL,
  CURSOR_SIZE,
  DISPLAY_ONE_SIZE,
  FORMAT_CHANNELS,
  GPU_CONFIG_EVENTS_CLEAR,
  GPU_CONFIG_EVENTS_READ,
  GPU_CONFIG_NUM_SCANOUTS,
  GPU_CONFIG_SIZE,
  GPU_CONTROL_QUEUE,
  GPU_CURSOR_QUEUE,
  GPU_QUEUE_COUNT,
  GpuCommand,
  type GpuRect,
  GpuResponse,
  HDR_CTX_ID,
  HDR_FENCE_ID,
  HDR_FLAGS,
  HDR_RING_IDX,
  HDR_SIZE,
  HDR_TYPE,
  MEM_ENTRY_SIZE,
  REQUEST_SIZE,
  RESP_DISPLAY_INFO_SIZE,
  RESP_EDID_SIZE,
  readRect,
  rectWithin,
  VIRTIO_GPU_EVENT_DISPLAY,
  VIRTIO_GPU_F_EDID,
  VIRTIO_GPU_FLAG_FENCE,
  VIRTIO_GPU_FLAG_INFO_RING_IDX,
  VIRTIO_ID_GPU,
} from './gpu-wire.js';

/** Largest resource side the device accepts (QEMU and Linux use the same 16384 limit). */
export const MAX_RESOURCE_SIDE = 16384;

const RING_FEATURES =
  VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX | VIRTIO_F_INDIRECT_DESC | (CORE_FEATURES & VIRTIO_F_RING_PACKED);

interface BackingEntry {
  address: bigint;
  length: number;
  /** Offset of this entry's first byte in the resource's backing store. */
  start: number;
}

interface Resource {
  readonly id: number;
  readonly format: number;
  readonly width: number;
  readonly height: number;
  readonly pixels: Uint8Array;
  backing: BackingEntry[] | undefined;
  backingLength: number;
}

interface Scanout {
  width: number;
  height: number;
  enabled: boolean;
  resourceId: number;
  rect: GpuRect;
}

interface Reply {
  type: number;
  payload?: Uint8Array;
}

const ok: Reply = { type: GpuResponse.OK_NODATA };
const error = (type: number): Reply => ({ type });

export interface GpuDeviceOptions {
  host?: GpuHost;
}

/**
 * virtio-gpu in 2D mode (spec 5.7): resources live in host memory, the guest fills them from
 * its backing pages with TRANSFER_TO_HOST_2D and shows them with SET_SCANOUT and
 * RESOURCE_FLUSH. Every command's length is checked before use; every resource size is
 * checked against the configured caps before any host memory is taken; errors are answered
 * with the spec's VIRTIO_GPU_RESP_ERR_* codes. 3D (virgl), blob resources and context
 * init are not offered.
 */
export class GpuDevice implements VirtioDevice {
  readonly deviceType = VIRTIO_ID_GPU;
  readonly name: string;
  readonly queueMaxSizes: readonly number[];
  readonly features: bigint;
  readonly configSize = GPU_CONFIG_SIZE;
  readonly config: GpuConfig;
  readonly counters = new GpuMetrics();
  readonly host: GpuHost;
  private readonly scanouts: Scanout[];
  private readonly resources = new Map<number, Resource>();
  private eventsRead = 0;
  private context: DeviceContext | undefined;

  constructor(config: GpuConfig, options: GpuDeviceOptions = {}) {
    this.config = config;
    this.name = config.name;
    this.queueMaxSizes = Array.from({ length: GPU_QUEUE_COUNT }, () => config.queueSize);
    this.features = RING_FEATURES | (config.edid ? VIRTIO_GPU_F_EDID : 0n);
    this.host = options.host ?? new NullGpuHost();
    this.scanouts = config.scanouts.map((s) => ({
      width: s.width,
      height: s.height,
      enabled: s.enabled,
      resourceId: 0,
      rect: { x: 0, y: 0, width: 0, height: 0 },
    }));
  }

  readConfig(offset: number, target: Uint8Array): void {
    const bytes = new Uint8Array(GPU_CONFIG_SIZE);
    const view = new DataView(bytes.buffer);
    view.setUint32(GPU_CONFIG_EVENTS_READ, this.eventsRead, true);
    view.setUint32(GPU_CONFIG_NUM_SCANOUTS, this.scanouts.length, true);
    target.set(bytes.subarray(offset, offset + target.length));
  }

  writeConfig(offset: number, source: Uint8Array): void {
    // Only events_clear is writable (5.7.4): a set bit clears that bit of events_read.
    for (let i = 0; i < source.length; i++) {
      const at = offset + i;
      if (at >= GPU_CONFIG_EVENTS_CLEAR && at < GPU_CONFIG_EVENTS_CLEAR + 4) {
        this.eventsRead &= ~(source[i]! << ((at - GPU_CONFIG_EVENTS_CLEAR) * 8));
      }
    }
  }

  activate(context: DeviceContext): void {
    this.context = context;
    this.service(GPU_CONTROL_QUEUE);
    this.service(GPU_CURSOR_QUEUE);
  }

  notify(queueIndex: number): void {
    this.service(queueIndex);
  }

  /** Drops every resource and disables every scanout (2.1.2: the device forgets the driver's state). */
  reset(): void {
    this.context = undefined;
    this.resources.clear();
    this.counters.resources = 0;
    this.counters.resourceBytes = 0;
    this.eventsRead = 0;
    this.scanouts.forEach((scanout, id) => {
      if (scanout.resourceId !== 0) this.host.scanoutChanged(id, undefined);
      scanout.resourceId = 0;
    });
  }

  metrics(): Readonly<Record<string, number>> {
    return this.counters.snapshot();
  }

  /**
   * The host changed a display (a window resized, a monitor plugged): the next
   * GET_DISPLAY_INFO reports it and the driver is told with a config change (5.7.4).
   */
  setDisplay(scanoutId: number, display: { width: number; height: number; enabled?: boolean }): void {
    const scanout = this.scanouts[scanoutId];
    if (!scanout) throw new RangeError(`no scanout ${scanoutId}`);
    scanout.width = display.width;
    scanout.height = display.height;
    scanout.enabled = display.enabled ?? true;
    this.eventsRead |= VIRTIO_GPU_EVENT_DISPLAY;
    this.context?.configChanged();
  }

  /** The picture a scanout shows now, as RGBA, or undefined when it shows nothing. */
  snapshot(scanoutId: number): { width: number; height: number; rgba: Uint8Array } | undefined {
    const frame = this.frame(scanoutId);
    if (!frame) return undefined;
    return {
      width: frame.width,
      height: frame.height,
      rgba: frame.readRgba({ x: 0, y: 0, width: frame.width, height: frame.height }),
    };
  }

  /** A PNG file of what a scanout shows, for tests and bug reports. */
  snapshotPng(scanoutId: number): Uint8Array | undefined {
    const shot = this.snapshot(scanoutId);
    return shot && encodePng(shot.width, shot.height, shot.rgba);
  }

  /** The frame of a scanout (a window on its resource), or undefined when disabled. */
  frame(scanoutId: number): GpuFrame | undefined {
    const scanout = this.scanouts[scanoutId];
    const resource = scanout && this.resources.get(scanout.resourceId);
    if (!scanout || !resource) return undefined;
    const origin = scanout.rect;
    return {
      width: origin.width,
      height: origin.height,
      readRgba: (rect) =>
        toRgba(resource, {
          x: origin.x + rect.x,
          y: origin.y + rect.y,
          width: rect.width,
          height: rect.height,
        }),
    };
  }

  private service(queueIndex: number): void {
    const context = this.context;
    if (!context || context.signal.aborted) return;
    const result = serviceQueue(context, queueIndex, (chain) => this.handle(context, queueIndex, chain));
    this.counters.faults += result.faulted;
  }

  private handle(context: DeviceContext, queueIndex: number, chain: DescriptorChain): number {
    const io = openChain(context.memory, chain);
    try {
      const header = io.reader.readExact(HDR_SIZE);
      if (!header) {
        this.counters.badRequests++;
        return io.close();
      }
      const view = new DataView(header.buffer);
      const type = view.getUint32(HDR_TYPE, true);
      const size = REQUEST_SIZE[type];
      let reply: Reply;
      if (size === undefined) {
        reply = error(GpuResponse.ERR_UNSPEC);
      } else {
        const body = io.reader.readExact(size - HDR_SIZE);
        if (!body) {
          this.counters.badRequests++;
          reply = error(GpuResponse.ERR_INVALID_PARAMETER);
        } else {
          reply = this.execute(context, type, new DataView(body.buffer), io.reader);
        }
      }
      this.counters.commands++;
      if (reply.type >= GpuResponse.ERR_UNSPEC) this.counters.errors++;
      const response = new Uint8Array(HDR_SIZE + (reply.payload?.length ?? 0));
      const out = new DataView(response.buffer);
      out.setUint32(HDR_TYPE, reply.type, true);
      const flags = view.getUint32(HDR_FLAGS, true);
      if (flags & VIRTIO_GPU_FLAG_FENCE) {
        // 5.7.6.7: a fenced command completes only once done (we work synchronously), and the
        // response carries the fence back so the driver can signal it.
        this.counters.fences++;
        out.setUint32(HDR_FLAGS, flags & (VIRTIO_GPU_FLAG_FENCE | VIRTIO_GPU_FLAG_INFO_RING_IDX), true);
        out.setBigUint64(HDR_FENCE_ID, view.getBigUint64(HDR_FENCE_ID, true), true);
        out.setUint32(HDR_CTX_ID, view.getUint32(HDR_CTX_ID, true), true);
        out.setUint8(HDR_RING_IDX, view.getUint8(HDR_RING_IDX));
      }
      if (reply.payload) response.set(reply.payload, HDR_SIZE);
      if (queueIndex === GPU_CURSOR_QUEUE && io.writer.length === 0) return io.close(); // cursor commands carry no response buffer
      if (io.writer.remaining < response.length) {
        this.counters.badRequests++;
        return io.close();
      }
      io.writer.write(response);
      return io.close();
    } finally {
      io.close();
    }
  }

  private execute(
    context: DeviceContext,
    type: number,
    body: DataView,
    reader: { readExact(n: number): Uint8Array | undefined },
  ): Reply {
    switch (type) {
      case GpuCommand.GET_DISPLAY_INFO:
        return this.displayInfo();
      case GpuCommand.GET_EDID:
        return this.edid(context, body.getUint32(0, true));
      case GpuCommand.RESOURCE_CREATE_2D:
        return this.create2d(
          body.getUint32(0, true),
          body.getUint32(4, true),
          body.getUint32(8, true),
          body.getUint32(12, true),
        );
      case GpuCommand.RESOURCE_UNREF:
        return this.unref(body.getUint32(0, true));
      case GpuCommand.SET_SCANOUT:
        return this.setScanout(readRect(body, 0), body.getUint32(16, true), body.getUint32(20, true));
      case GpuCommand.RESOURCE_FLUSH:
        return this.flush(readRect(body, 0), body.getUint32(16, true));
      case GpuCommand.TRANSFER_TO_HOST_2D:
        return this.transfer(
          context.memory,
          readRect(body, 0),
          body.getBigUint64(16, true),
          body.getUint32(24, true),
        );
      case GpuCommand.RESOURCE_ATTACH_BACKING:
        return this.attachBacking(context.memory, body.getUint32(0, true), body.getUint32(4, true), reader);
      case GpuCommand.RESOURCE_DETACH_BACKING:
        return this.detachBacking(body.getUint32(0, true));
      case GpuCommand.UPDATE_CURSOR:
      case GpuCommand.MOVE_CURSOR:
        return this.cursor(type === GpuCommand.MOVE_CURSOR, body);
      default:
        return error(GpuResponse.ERR_UNSPEC);
    }
  }

  private displayInfo(): Reply {
    const payload = new Uint8Array(RESP_DISPLAY_INFO_SIZE - HDR_SIZE);
    const view = new DataView(payload.buffer);
    this.scanouts.forEach((scanout, i) => {
      const at = i * DISPLAY_ONE_SIZE;
      view.setUint32(at + 8, scanout.width, true);
      view.setUint32(at + 12, scanout.height, true);
      view.setUint32(at + 16, scanout.enabled ? 1 : 0, true);
    });
    return { type: GpuResponse.OK_DISPLAY_INFO, payload };
  }

  private edid(context: DeviceContext, scanoutId: number): Reply {
    if ((context.features & VIRTIO_GPU_F_EDID) === 0n) return error(GpuResponse.ERR_UNSPEC);
    const scanout = this.scanouts[scanoutId];
    if (!scanout) return error(GpuResponse.ERR_INVALID_SCANOUT_ID);
    const edid = createEdid({ width: scanout.width, height: scanout.height, serial: scanoutId });
    const payload = new Uint8Array(RESP_EDID_SIZE - HDR_SIZE);
    new DataView(payload.buffer).setUint32(0, edid.length, true);
    payload.set(edid, 8);
    return { type: GpuResponse.OK_EDID, payload };
  }

  private create2d(id: number, format: number, width: number, height: number): Reply {
    if (id === 0 || this.resources.has(id)) return error(GpuResponse.ERR_INVALID_RESOURCE_ID);
    if (!FORMAT_CHANNELS.has(format)) return error(GpuResponse.ERR_INVALID_PARAMETER);
    if (width === 0 || height === 0 || width > MAX_RESOURCE_SIDE || height > MAX_RESOURCE_SIDE) {
      return error(GpuResponse.ERR_INVALID_PARAMETER);
    }
    const bytes = width * height * BYTES_PER_PIXEL; // < 2^30: both sides are at most 2^14
    if (this.resources.size >= this.config.maxResources) return error(GpuResponse.ERR_OUT_OF_MEMORY);
    if (this.counters.resourceBytes + bytes > this.config.maxResourceMemory)
      return error(GpuResponse.ERR_OUT_OF_MEMORY);
    let pixels: Uint8Array;
    try {
      pixels = new Uint8Array(bytes);
    } catch {
      return error(GpuResponse.ERR_OUT_OF_MEMORY);
    }
    this.resources.set(id, { id, format, width, height, pixels, backing: undefined, backingLength: 0 });
    this.counters.resources++;
    this.counters.resourceBytes += bytes;
    return ok;
  }

  private unref(id: number): Reply {
    const resource = this.resources.get(id);
    if (!resource) return error(GpuResponse.ERR_INVALID_RESOURCE_ID);
    this.scanouts.forEach((scanout, scanoutId) => {
      if (scanout.resourceId === id) {
        scanout.resourceId = 0;
        this.host.scanoutChanged(scanoutId, undefined);
      }
    });
    this.resources.delete(id);
    this.counters.resources--;
    this.counters.resourceBytes -= resource.pixels.length;
    return ok;
  }

  private setScanout(rect: GpuRect, scanoutId: number, resourceId: number): Reply {
    const scanout = this.scanouts[scanoutId];
    if (!scanout) return error(GpuResponse.ERR_INVALID_SCANOUT_ID);
    if (resourceId === 0) {
      // 5.7.6.8: resource 0 disables the scanout.
      if (scanout.resourceId !== 0) this.host.scanoutChanged(scanoutId, undefined);
      scanout.resourceId = 0;
      return ok;
    }
    const resource = this.resources.get(resourceId);
    if (!resource) return error(GpuResponse.ERR_INVALID_RESOURCE_ID);
    if (rect.width === 0 || rect.height === 0 || !rectWithin(rect, resource.width, resource.height)) {
      return error(GpuResponse.ERR_INVALID_PARAMETER);
    }
    scanout.resourceId = resourceId;
    scanout.rect = rect;
    this.host.scanoutChanged(scanoutId, this.frame(scanoutId));
    return ok;
  }

  private flush(rect: GpuRect, resourceId: number): Reply {
    const resource = this.resources.get(resourceId);
    if (!resource) return error(GpuResponse.ERR_INVALID_RESOURCE_ID);
    if (!rectWithin(rect, resource.width, resource.height)) return error(GpuResponse.ERR_INVALID_PARAMETER);
    this.counters.flushes++;
    this.scanouts.forEach((scanout, scanoutId) => {
      if (scanout.resourceId !== resourceId) return;
      const x0 = Math.max(rect.x, scanout.rect.x);
      const y0 = Math.max(rect.y, scanout.rect.y);
      const x1 = Math.min(rect.x + rect.width, scanout.rect.x + scanout.rect.width);
      const y1 = Math.min(rect.y + rect.height, scanout.rect.y + scanout.rect.height);
      if (x1 <= x0 || y1 <= y0) return;
      const frame = this.frame(scanoutId)!;
      this.host.flush(scanoutId, frame, {
        x: x0 - scanout.rect.x,
        y: y0 - scanout.rect.y,
        width: x1 - x0,
        height: y1 - y0,
      });
    });
    return ok;
  }

  private attachBacking(
    memory: GuestMemory,
    resourceId: number,
    count: number,
    reader: { readExact(n: number): Uint8Array | undefined },
  ): Reply {
    const resource = this.resources.get(resourceId);
    if (!resource) return error(GpuResponse.ERR_INVALID_RESOURCE_ID);
    if (count === 0 || count > this.config.maxBackingEntries) return error(GpuResponse.ERR_INVALID_PARAMETER);
    const table = reader.readExact(count * MEM_ENTRY_SIZE);
    if (!table) {
      this.counters.badRequests++;
      return error(GpuResponse.ERR_INVALID_PARAMETER);
    }
    if (resource.backing) return error(GpuResponse.ERR_UNSPEC); // already attached (as QEMU answers)
    const view = new DataView(table.buffer);
    const entries: BackingEntry[] = [];
    let total = 0;
    for (let i = 0; i < count; i++) {
      const address = view.getBigUint64(i * MEM_ENTRY_SIZE, true);
      const length = view.getUint32(i * MEM_ENTRY_SIZE + 8, true);
      if (memory.check(address, length, 'read') !== undefined) return error(GpuResponse.ERR_UNSPEC);
      entries.push({ address, length, start: total });
      total += length;
    }
    resource.backing = entries;
    resource.backingLength = total;
    return ok;
  }

  private detachBacking(resourceId: number): Reply {
    const resource = this.resources.get(resourceId);
    if (!resource) return error(GpuResponse.ERR_INVALID_RESOURCE_ID);
    if (!resource.backing) return error(GpuResponse.ERR_UNSPEC);
    resource.backing = undefined;
    resource.backingLength = 0;
    return ok;
  }

  /**
   * Copies a rectangle from the guest's backing into the resource (5.7.6.8). Row h of the
   * rectangle starts at `offset + stride * h` in the backing, as QEMU and Linux agree.
   */
  private transfer(memory: GuestMemory, rect: GpuRect, offset: bigint, resourceId: number): Reply {
    const resource = this.resources.get(resourceId);
    if (!resource) return error(GpuResponse.ERR_INVALID_RESOURCE_ID);
    if (!resource.backing) return error(GpuResponse.ERR_UNSPEC);
    if (!rectWithin(rect, resource.width, resource.height)) return error(GpuResponse.ERR_INVALID_PARAMETER);
    if (rect.width === 0 || rect.height === 0) return ok;
    const stride = resource.width * BYTES_PER_PIXEL;
    const rowBytes = rect.width * BYTES_PER_PIXEL;
    if (offset > BigInt(resource.backingLength)) return error(GpuResponse.ERR_INVALID_PARAMETER);
    const start = Number(offset);
    if (start + stride * (rect.height - 1) + rowBytes > resource.backingLength)
      return error(GpuResponse.ERR_INVALID_PARAMETER);
    try {
      if (rect.x === 0 && rect.width === resource.width) {
        // Whole rows: one contiguous run in the backing and in the resource.
        const target = resource.pixels.subarray(rect.y * stride, (rect.y + rect.height) * stride);
        readBacking(memory, resource.backing, start, target);
      } else {
        for (let h = 0; h < rect.height; h++) {
          const at = (rect.y + h) * stride + rect.x * BYTES_PER_PIXEL;
          readBacking(
            memory,
            resource.backing,
            start + stride * h,
            resource.pixels.subarray(at, at + rowBytes),
          );
        }
      }
    } catch (caught) {
      if (!GuestMemoryError.isInstance(caught)) throw caught;
      this.counters.faults++;
      return error(GpuResponse.ERR_UNSPEC);
    }
    this.counters.transferBytes += rowBytes * rect.height;
    return ok;
  }

  private cursor(moveOnly: boolean, body: DataView): Reply {
    const scanoutId = body.getUint32(0, true);
    const x = body.getUint32(4, true);
    const y = body.getUint32(8, true);
    if (!this.scanouts[scanoutId]) return error(GpuResponse.ERR_INVALID_SCANOUT_ID);
    this.counters.cursorUpdates++;
    if (moveOnly) {
      this.host.cursorMoved(scanoutId, x, y);
      return ok;
    }
    const resourceId = body.getUint32(16, true);
    if (resourceId === 0) {
      this.host.cursorChanged(scanoutId, undefined, x, y);
      return ok;
    }
    const resource = this.resources.get(resourceId);
    if (!resource) return error(GpuResponse.ERR_INVALID_RESOURCE_ID);
    if (resource.width > CURSOR_SIZE || resource.height > CURSOR_SIZE)
      return error(GpuResponse.ERR_INVALID_PARAMETER);
    const image = new Uint8Array(CURSOR_SIZE * CURSOR_SIZE * 4);
    const rgba = toRgba(resource, { x: 0, y: 0, width: resource.width, height: resource.height });
    for (let row = 0; row < resource.height; row++) {
      image.set(
        rgba.subarray(row * resource.width * 4, (row + 1) * resource.width * 4),
        row * CURSOR_SIZE * 4,
      );
    }
    const cursor: GpuCursor = {
      rgba: image,
      hotX: Math.min(body.getUint32(20, true), CURSOR_SIZE - 1),
      hotY: Math.min(body.getUint32(24, true), CURSOR_SIZE - 1),
    };
    this.host.cursorChanged(scanoutId, cursor, x, y);
    return ok;
  }
}

/** Copies `target.length` bytes from the backing store at `offset` (already bounds-checked). */
function readBacking(
  memory: GuestMemory,
  entries: readonly BackingEntry[],
  offset: number,
  target: Uint8Array,
): void {
  // Binary search for the entry holding `offset`.
  let low = 0;
  let high = entries.length - 1;
  while (low < high) {
    const mid = (low + high + 1) >> 1;
    if (entries[mid]!.start <= offset) low = mid;
    else high = mid - 1;
  }
  let done = 0;
  for (let i = low; done < target.length && i < entries.length; i++) {
    const entry = entries[i]!;
    const from = offset + done - entry.start;
    if (from >= entry.length) continue;
    const n = Math.min(entry.length - from, target.length - done);
    memory.read(entry.address + BigInt(from), target.subarray(done, done + n));
    done += n;
  }
}

const littleEndian = new Uint8Array(Uint32Array.of(1).buffer)[0] === 1;

/** Converts a rectangle of a resource to RGBA, whatever its format. */
function toRgba(resource: Resource, rect: GpuRect): Uint8Array {
  const channels = FORMAT_CHANNELS.get(resource.format)!;
  const out = new Uint8Array(rect.width * rect.height * 4);
  const stride = resource.width * BYTES_PER_PIXEL;
  if (littleEndian && channels.b === 0 && channels.g === 1 && channels.r === 2) {
    // B8G8R8A8/X8 (Linux's XRGB8888 framebuffers): swizzle whole 32-bit pixels. The
    // resource is host memory we allocated (aligned), so word access is safe here.
    const source32 = new Uint32Array(
      resource.pixels.buffer,
      resource.pixels.byteOffset,
      resource.pixels.length >> 2,
    );
    const out32 = new Uint32Array(out.buffer);
    const opaque = channels.a < 0 ? 0xff000000 : 0;
    let o = 0;
    for (let y = 0; y < rect.height; y++) {
      let p = (rect.y + y) * resource.width + rect.x;
      for (let x = 0; x < rect.width; x++, p++, o++) {
        const v = source32[p]!;
        out32[o] = (opaque | (v & 0xff00ff00) | ((v & 0xff) << 16) | ((v >>> 16) & 0xff)) >>> 0;
      }
    }
    return out;
  }
  const source = resource.pixels;
  const { r, g, b, a } = channels;
  let o = 0;
  for (let y = 0; y < rect.height; y++) {
    let p = (rect.y + y) * stride + rect.x * BYTES_PER_PIXEL;
    for (let x = 0; x < rect.width; x++, p += 4, o += 4) {
      out[o] = source[p + r]!;
      out[o + 1] = source[p + g]!;
      out[o + 2] = source[p + b]!;
      out[o + 3] = a < 0 ? 255 : source[p + a]!;
    }
  }
  return out;
}

/** Builds a gpu device from a user configuration (validated here, once). */
export function createGpuDevice(config: GpuConfigInput = {}, options: GpuDeviceOptions = {}): GpuDevice {
  return new GpuDevice(parseGpuConfig(config), options);
}
