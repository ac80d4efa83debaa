import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { GpuCursor, GpuFrame, GpuHost } from './gpu-host.js';
import { DISPLAY_ONE_SIZE, type GpuRect, HDR_SIZE, VIRTIO_GPU_MAX_SCANOUTS } from './gpu-wire.js';
import {
  DISPLAY_FLAG_REPLY,
  DisplayReplyReader,
  DisplayRequest,
  encodeCursorPos,
  encodeCursorUpdate,
  encodeGetDisplayInfo,
  encodeGetProtocolFeatures,
  encodeScanout,
  encodeSetProtocolFeatures,
  encodeUpdate,
} from './vhost-user-gpu-wire.js';

export interface VhostUserGpuDisplayOptions {
  /**
   * Bytes that may wait in the socket before flushes are merged (one rectangle per
   * scanout, sent when QEMU has read the backlog) instead of queued. Default 8 MiB.
   */
  maxQueuedBytes?: number;
  /** Largest pixel payload of one UPDATE; larger damage goes in bands of rows. Default 1 MiB. */
  maxUpdateBytes?: number;
  log?: { info(message: string): void; warn(message: string): void };
}

/** One scanout as QEMU's display describes it (GET_DISPLAY_INFO). */
export interface QemuDisplayMode {
  enabled: boolean;
  width: number;
  height: number;
}

/** Counters of a display (`metrics()` of the owner may add them). */
export interface VhostUserGpuDisplayCounters {
  /** UPDATE messages sent. */
  updates: number;
  /** Pixel bytes sent in UPDATEs. */
  updateBytes: number;
  /** Flushes merged into a pending rectangle because QEMU was behind. */
  mergedFlushes: number;
  scanoutMessages: number;
  cursorMessages: number;
  /** Display sockets attached so far (one per DRIVER_OK). */
  attachments: number;
}

/**
 * A `GpuHost` that shows a gpu device's scanouts in QEMU's own display (a window, VNC,
 * `screendump`), over the socket QEMU's `vhost-user-gpu` hands the back-end with
 * VHOST_USER_GPU_SET_SOCKET. Scanouts become SCANOUT messages, flushed damage becomes
 * UPDATE messages with the pixels inline (no DMABUF), the cursor CURSOR_* messages.
 *
 * QEMU sends a new socket after every reset of the device (each DRIVER_OK): `attach`
 * replaces the old one and replays what the scanouts show, so QEMU's display is whole
 * again. Memory is bounded: while QEMU has not read `maxQueuedBytes`, further flushes
 * of a scanout merge into one rectangle that is sent when the socket drains.
 */
export class VhostUserGpuDisplay implements GpuHost {
  readonly counters: VhostUserGpuDisplayCounters = {
    updates: 0,
    updateBytes: 0,
    mergedFlushes: 0,
    scanoutMessages: 0,
    cursorMessages: 0,
    attachments: 0,
  };
  /** What QEMU answered to GET_DISPLAY_INFO on the current socket, when it has. */
  qemuDisplays: QemuDisplayMode[] | undefined;
  /** QEMU's protocol features (none are used: xvio sends pixels inline). */
  qemuProtocolFeatures: bigint | undefined;
  private socket: Duplex | undefined;
  private readonly frames = new Map<number, GpuFrame>();
  private readonly pending = new Map<number, GpuRect>();
  private readonly cursors = new Map<number, { cursor: GpuCursor | undefined; x: number; y: number }>();
  private readonly maxQueuedBytes: number;
  private readonly maxUpdateBytes: number;

  constructor(private readonly options: VhostUserGpuDisplayOptions = {}) {
    this.maxQueuedBytes = options.maxQueuedBytes ?? 8 * 1024 * 1024;
    this.maxUpdateBytes = Math.max(options.maxUpdateBytes ?? 1024 * 1024, 16384 * 4);
  }

  /** Whether a display socket is attached. */
  get attached(): boolean {
    return this.socket !== undefined;
  }

  /** Attaches the fd VHOST_USER_GPU_SET_SOCKET carried (a connected unix stream socket); owns it. */
  attachFd(fd: number): void {
    this.attach(new Socket({ fd, readable: true, writable: true }));
  }

  /** Attaches a display socket, replacing the previous one, and replays the scanouts. */
  attach(socket: Duplex): void {
    this.detach();
    this.socket = socket;
    this.counters.attachments++;
    this.qemuDisplays = undefined;
    this.qemuProtocolFeatures = undefined;
    const reader = new DisplayReplyReader();
    socket.on('data', (chunk: Buffer) => {
      if (this.socket !== socket) return;
      try {
        for (const reply of reader.push(chunk)) this.reply(reply.request, reply.flags, reply.payload);
      } catch (error) {
        this.options.log?.warn(`display socket: ${(error as Error).message}`);
        this.detach();
      }
    });
    socket.on('drain', () => {
      if (this.socket === socket) this.sendPending();
    });
    socket.on('error', (error) => {
      if (this.socket !== socket) return;
      this.options.log?.warn(`display socket failed: ${error.message}`);
      this.detach();
    });
    socket.on('close', () => {
      if (this.socket === socket) this.socket = undefined;
    });
    this.send(encodeGetProtocolFeatures());
    this.pending.clear();
    for (const [scanoutId, frame] of this.frames) this.showScanout(scanoutId, frame);
    for (const [scanoutId, state] of this.cursors)
      this.cursorChanged(scanoutId, state.cursor, state.x, state.y);
  }

  /** Drops the display socket (QEMU stopped the device); scanouts are kept for the next one. */
  detach(): void {
    const socket = this.socket;
    this.socket = undefined;
    this.pending.clear();
    socket?.destroy();
  }

  private reply(request: number, flags: number, payload: Uint8Array): void {
    if (!(flags & DISPLAY_FLAG_REPLY)) return;
    const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
    if (request === DisplayRequest.GET_PROTOCOL_FEATURES && payload.length >= 8) {
      this.qemuProtocolFeatures = view.getBigUint64(0, true);
      // xvio uses none of them (EDID and DMABUF2 in newer QEMUs): acknowledge the empty set.
      this.send(encodeSetProtocolFeatures(0n));
      this.send(encodeGetDisplayInfo());
    } else if (request === DisplayRequest.GET_DISPLAY_INFO && payload.length >= HDR_SIZE) {
      const count = Math.min(
        VIRTIO_GPU_MAX_SCANOUTS,
        Math.floor((payload.length - HDR_SIZE) / DISPLAY_ONE_SIZE),
      );
      this.qemuDisplays = Array.from({ length: count }, (_, i) => {
        const at = HDR_SIZE + i * DISPLAY_ONE_SIZE;
        // struct virtio_gpu_display_one: rect (x, y, width, height), enabled, flags.
        return {
          width: view.getUint32(at + 8, true),
          height: view.getUint32(at + 12, true),
          enabled: view.getUint32(at + 16, true) !== 0,
        };
      });
      this.options.log?.info(
        `qemu display: ${this.qemuDisplays
          .filter((d) => d.enabled)
          .map((d) => `${d.width}x${d.height}`)
          .join(', ')}`,
      );
    }
  }

  private send(bytes: Uint8Array): void {
    this.socket?.write(bytes);
  }

  private get backlogged(): boolean {
    return (this.socket?.writableLength ?? 0) >= this.maxQueuedBytes;
  }

  /** SCANOUT creates QEMU's surface; QEMU shows it with the next UPDATE, so the whole frame follows. */
  private showScanout(scanoutId: number, frame: GpuFrame): void {
    this.send(encodeScanout(scanoutId, frame.width, frame.height));
    this.counters.scanoutMessages++;
    this.sendUpdate(scanoutId, frame, { x: 0, y: 0, width: frame.width, height: frame.height });
  }

  scanoutChanged(scanoutId: number, frame: GpuFrame | undefined): void {
    this.pending.delete(scanoutId);
    if (frame) this.frames.set(scanoutId, frame);
    else this.frames.delete(scanoutId);
    if (!this.socket) return;
    if (frame) {
      this.showScanout(scanoutId, frame);
    } else {
      this.send(encodeScanout(scanoutId, 0, 0));
      this.counters.scanoutMessages++;
    }
  }

  flush(scanoutId: number, frame: GpuFrame, damage: GpuRect): void {
    if (!this.socket || damage.width === 0 || damage.height === 0) return;
    const pending = this.pending.get(scanoutId);
    if (pending || this.backlogged) {
      this.counters.mergedFlushes++;
      this.pending.set(scanoutId, pending ? union(pending, damage) : damage);
      return;
    }
    this.sendUpdate(scanoutId, frame, damage);
  }

  private sendPending(): void {
    for (const [scanoutId, rect] of [...this.pending]) {
      if (this.backlogged) return;
      this.pending.delete(scanoutId);
      const frame = this.frames.get(scanoutId);
      if (frame) this.sendUpdate(scanoutId, frame, clip(rect, frame));
    }
  }

  /** UPDATEs in bands of whole rows, each at most `maxUpdateBytes` of pixels. */
  private sendUpdate(scanoutId: number, frame: GpuFrame, rect: GpuRect): void {
    if (rect.width === 0 || rect.height === 0) return;
    const rows = Math.max(1, Math.floor(this.maxUpdateBytes / (rect.width * 4)));
    for (let y = rect.y; y < rect.y + rect.height; y += rows) {
      const band = { x: rect.x, y, width: rect.width, height: Math.min(rows, rect.y + rect.height - y) };
      const rgba = frame.readRgba(band);
      this.send(encodeUpdate(scanoutId, band, rgba));
      this.counters.updates++;
      this.counters.updateBytes += rgba.length;
    }
  }

  cursorChanged(scanoutId: number, cursor: GpuCursor | undefined, x: number, y: number): void {
    this.cursors.set(scanoutId, { cursor, x, y });
    if (!this.socket) return;
    this.send(cursor ? encodeCursorUpdate(scanoutId, cursor, x, y) : encodeCursorPos(scanoutId, x, y, false));
    this.counters.cursorMessages++;
  }

  cursorMoved(scanoutId: number, x: number, y: number): void {
    const state = this.cursors.get(scanoutId);
    this.cursors.set(scanoutId, { cursor: state?.cursor, x, y });
    if (!this.socket) return;
    this.send(encodeCursorPos(scanoutId, x, y, state?.cursor !== undefined));
    this.counters.cursorMessages++;
  }
}

function union(a: GpuRect, b: GpuRect): GpuRect {
  const x = Math.min(a.x, b.x);
  const y = Math.min(a.y, b.y);
  return {
    x,
    y,
    width: Math.max(a.x + a.width, b.x + b.width) - x,
    height: Math.max(a.y + a.height, b.y + b.height) - y,
  };
}

/** A merged rectangle against the scanout's current size (it may have shrunk since). */
function clip(rect: GpuRect, frame: GpuFrame): GpuRect {
  const x = Math.min(rect.x, frame.width);
  const y = Math.min(rect.y, frame.height);
  return {
    x,
    y,
    width: Math.min(rect.x + rect.width, frame.width) - x,
    height: Math.min(rect.y + rect.height, frame.height) - y,
  };
}
