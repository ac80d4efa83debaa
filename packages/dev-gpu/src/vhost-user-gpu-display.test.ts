import { Duplex } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { GpuFrame } from './gpu-host.js';
import { DISPLAY_ONE_SIZE, type GpuRect, HDR_SIZE, RESP_DISPLAY_INFO_SIZE } from './gpu-wire.js';
import { VhostUserGpuDisplay } from './vhost-user-gpu-display.js';
import {
  CURSOR_UPDATE_SIZE,
  DISPLAY_FLAG_REPLY,
  DISPLAY_HEADER_SIZE,
  DisplayReplyReader,
  DisplayRequest,
  encodeCursorUpdate,
  encodeUpdate,
  MAX_DISPLAY_REPLY,
  UPDATE_HEADER_SIZE,
} from './vhost-user-gpu-wire.js';

interface Sent {
  request: number;
  flags: number;
  payload: Uint8Array;
}

/** The QEMU end of a display socket: records what the display sends; writes complete when told. */
class FakeQemu {
  private bytes = new Uint8Array(0);
  private held: (() => void)[] = [];
  hold = false;
  destroyed = false;
  readonly socket: Duplex;

  constructor() {
    this.socket = new Duplex({
      read() {},
      write: (chunk: Buffer, _encoding, callback) => {
        const joined = new Uint8Array(this.bytes.length + chunk.length);
        joined.set(this.bytes);
        joined.set(chunk, this.bytes.length);
        this.bytes = joined;
        if (this.hold) this.held.push(() => callback());
        else callback();
      },
      destroy: (error, callback) => {
        this.destroyed = true;
        callback(error);
      },
    });
  }

  /** QEMU read everything it was sent. */
  release(): void {
    for (const callback of this.held.splice(0)) callback();
  }

  reply(request: number, payload: Uint8Array): void {
    const out = new Uint8Array(DISPLAY_HEADER_SIZE + payload.length);
    const view = new DataView(out.buffer);
    view.setUint32(0, request, true);
    view.setUint32(4, DISPLAY_FLAG_REPLY, true);
    view.setUint32(8, payload.length, true);
    out.set(payload, DISPLAY_HEADER_SIZE);
    this.socket.push(out);
  }

  /** Every message sent so far (and forgets them). */
  take(): Sent[] {
    const out: Sent[] = [];
    let at = 0;
    const view = new DataView(this.bytes.buffer);
    while (at + DISPLAY_HEADER_SIZE <= this.bytes.length) {
      const size = view.getUint32(at + 8, true);
      out.push({
        request: view.getUint32(at, true),
        flags: view.getUint32(at + 4, true),
        payload: this.bytes.slice(at + DISPLAY_HEADER_SIZE, at + DISPLAY_HEADER_SIZE + size),
      });
      at += DISPLAY_HEADER_SIZE + size;
    }
    expect(at).toBe(this.bytes.length);
    this.bytes = new Uint8Array(0);
    return out;
  }
}

/** A frame whose pixel (x, y) is RGBA (x, y, x ^ y, 0xff), all bytes mod 256. */
function frame(width: number, height: number): GpuFrame {
  return {
    width,
    height,
    readRgba(rect: GpuRect) {
      const out = new Uint8Array(rect.width * rect.height * 4);
      for (let y = 0; y < rect.height; y++) {
        for (let x = 0; x < rect.width; x++) {
          const at = (y * rect.width + x) * 4;
          const px = rect.x + x;
          const py = rect.y + y;
          out.set([px & 0xff, py & 0xff, (px ^ py) & 0xff, 0xff], at);
        }
      }
      return out;
    },
  };
}

function update(sent: Sent) {
  const view = new DataView(sent.payload.buffer);
  return {
    scanoutId: view.getUint32(0, true),
    rect: {
      x: view.getUint32(4, true),
      y: view.getUint32(8, true),
      width: view.getUint32(12, true),
      height: view.getUint32(16, true),
    },
    data: sent.payload.subarray(UPDATE_HEADER_SIZE),
  };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('vhost-user-gpu display wire', () => {
  it('encodes UPDATE pixels as x8r8g8b8 (bytes B, G, R, X) after a 20-byte header', () => {
    const rgba = Uint8Array.from([0x11, 0x22, 0x33, 0x00, 0xaa, 0xbb, 0xcc, 0x80]);
    const bytes = encodeUpdate(2, { x: 5, y: 6, width: 2, height: 1 }, rgba);
    const view = new DataView(bytes.buffer);
    expect(view.getUint32(0, true)).toBe(DisplayRequest.UPDATE);
    expect(view.getUint32(8, true)).toBe(UPDATE_HEADER_SIZE + 8);
    expect([1, 2, 3, 4, 5].map((i) => view.getUint32(DISPLAY_HEADER_SIZE + (i - 1) * 4, true))).toEqual([
      2, 5, 6, 2, 1,
    ]);
    expect(Array.from(bytes.subarray(DISPLAY_HEADER_SIZE + UPDATE_HEADER_SIZE))).toEqual([
      0x33, 0x22, 0x11, 0xff, 0xcc, 0xbb, 0xaa, 0xff,
    ]);
    expect(() => encodeUpdate(0, { x: 0, y: 0, width: 2, height: 2 }, rgba)).toThrow(RangeError);
  });

  it('encodes CURSOR_UPDATE as 64x64 a8r8g8b8 and keeps the alpha', () => {
    const rgba = new Uint8Array(64 * 64 * 4);
    rgba.set([1, 2, 3, 4]);
    const bytes = encodeCursorUpdate(0, { rgba, hotX: 7, hotY: 9 }, 10, 20);
    const view = new DataView(bytes.buffer);
    expect(view.getUint32(8, true)).toBe(CURSOR_UPDATE_SIZE);
    expect(view.getUint32(DISPLAY_HEADER_SIZE + 4, true)).toBe(10);
    expect(view.getUint32(DISPLAY_HEADER_SIZE + 12, true)).toBe(7);
    expect(Array.from(bytes.subarray(DISPLAY_HEADER_SIZE + 20, DISPLAY_HEADER_SIZE + 24))).toEqual([
      3, 2, 1, 4,
    ]);
  });

  it('splits replies across chunks and refuses a size QEMU never sends', () => {
    const reader = new DisplayReplyReader();
    const message = new Uint8Array(DISPLAY_HEADER_SIZE + 8);
    const view = new DataView(message.buffer);
    view.setUint32(0, DisplayRequest.GET_PROTOCOL_FEATURES, true);
    view.setUint32(4, DISPLAY_FLAG_REPLY, true);
    view.setUint32(8, 8, true);
    view.setBigUint64(DISPLAY_HEADER_SIZE, 3n, true);
    expect(reader.push(message.subarray(0, 5))).toEqual([]);
    const [reply] = reader.push(message.subarray(5));
    expect(reply?.request).toBe(DisplayRequest.GET_PROTOCOL_FEATURES);
    expect(reply?.payload.length).toBe(8);
    view.setUint32(8, MAX_DISPLAY_REPLY + 1, true);
    expect(() => reader.push(message.subarray(0, DISPLAY_HEADER_SIZE))).toThrow(RangeError);
  });
});

describe('VhostUserGpuDisplay', () => {
  it('asks for protocol features, acknowledges none, and reads QEMU display info', async () => {
    const qemu = new FakeQemu();
    const display = new VhostUserGpuDisplay();
    display.attach(qemu.socket);
    expect(qemu.take().map((m) => m.request)).toEqual([DisplayRequest.GET_PROTOCOL_FEATURES]);
    const features = new Uint8Array(8);
    new DataView(features.buffer).setBigUint64(0, 3n, true);
    qemu.reply(DisplayRequest.GET_PROTOCOL_FEATURES, features);
    await tick();
    const sent = qemu.take();
    expect(sent.map((m) => m.request)).toEqual([
      DisplayRequest.SET_PROTOCOL_FEATURES,
      DisplayRequest.GET_DISPLAY_INFO,
    ]);
    expect(new DataView(sent[0]!.payload.buffer).getBigUint64(0, true)).toBe(0n);
    expect(display.qemuProtocolFeatures).toBe(3n);
    const info = new Uint8Array(RESP_DISPLAY_INFO_SIZE);
    const view = new DataView(info.buffer);
    view.setUint32(HDR_SIZE + 8, 1280, true);
    view.setUint32(HDR_SIZE + 12, 800, true);
    view.setUint32(HDR_SIZE + 16, 1, true);
    qemu.reply(DisplayRequest.GET_DISPLAY_INFO, info);
    await tick();
    expect(display.qemuDisplays).toHaveLength((RESP_DISPLAY_INFO_SIZE - HDR_SIZE) / DISPLAY_ONE_SIZE);
    expect(display.qemuDisplays?.[0]).toEqual({ enabled: true, width: 1280, height: 800 });
    expect(display.qemuDisplays?.[1]?.enabled).toBe(false);
  });

  it('sends SCANOUT then the whole frame, then only flushed damage; 0x0 disables', () => {
    const qemu = new FakeQemu();
    const display = new VhostUserGpuDisplay();
    display.attach(qemu.socket);
    qemu.take();
    const picture = frame(32, 16);
    display.scanoutChanged(1, picture);
    const shown = qemu.take();
    expect(shown.map((m) => m.request)).toEqual([DisplayRequest.SCANOUT, DisplayRequest.UPDATE]);
    const scanout = new DataView(shown[0]!.payload.buffer);
    expect([0, 4, 8].map((at) => scanout.getUint32(at, true))).toEqual([1, 32, 16]);
    expect(update(shown[1]!).rect).toEqual({ x: 0, y: 0, width: 32, height: 16 });
    display.flush(1, picture, { x: 3, y: 4, width: 5, height: 2 });
    const [damage] = qemu.take();
    const { rect, data } = update(damage!);
    expect(rect).toEqual({ x: 3, y: 4, width: 5, height: 2 });
    // Pixel (3, 4): RGBA (3, 4, 7) as B, G, R, X.
    expect(Array.from(data.subarray(0, 4))).toEqual([7, 4, 3, 0xff]);
    display.scanoutChanged(1, undefined);
    const [off] = qemu.take();
    expect(off!.request).toBe(DisplayRequest.SCANOUT);
    expect(Array.from(off!.payload)).toEqual([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    expect(display.counters.scanoutMessages).toBe(2);
  });

  it('sends large damage in bands of whole rows no bigger than maxUpdateBytes', () => {
    const qemu = new FakeQemu();
    const display = new VhostUserGpuDisplay({ maxUpdateBytes: 16384 * 4 });
    display.attach(qemu.socket);
    display.scanoutChanged(0, frame(1024, 100));
    const updates = qemu.take().filter((m) => m.request === DisplayRequest.UPDATE);
    // 64 KiB bands of 4 KiB rows: 16 rows each.
    expect(updates.map((m) => update(m).rect.height)).toEqual([16, 16, 16, 16, 16, 16, 4]);
    expect(updates.map((m) => update(m).rect.y)).toEqual([0, 16, 32, 48, 64, 80, 96]);
    expect(display.counters.updateBytes).toBe(1024 * 100 * 4);
  });

  it('merges flushes into one rectangle while QEMU is behind and sends it when the socket drains', async () => {
    const qemu = new FakeQemu();
    const display = new VhostUserGpuDisplay({ maxQueuedBytes: 1024 });
    display.attach(qemu.socket);
    const picture = frame(64, 64);
    qemu.hold = true;
    display.scanoutChanged(0, picture);
    qemu.take();
    for (let i = 0; i < 10; i++) display.flush(0, picture, { x: i, y: 2 * i, width: 4, height: 4 });
    expect(qemu.take()).toEqual([]);
    expect(display.counters.mergedFlushes).toBe(10);
    qemu.hold = false;
    qemu.release();
    await tick();
    // The frame that was waiting in the socket, then one update for all ten flushes.
    const sent = qemu.take();
    expect(sent.map((m) => update(m).rect)).toEqual([
      { x: 0, y: 0, width: 64, height: 64 },
      { x: 0, y: 0, width: 13, height: 22 },
    ]);
  });

  it('replays scanouts and the cursor on a new socket (QEMU sends one after every reset)', () => {
    const display = new VhostUserGpuDisplay();
    const picture = frame(16, 16);
    display.scanoutChanged(0, picture);
    display.cursorChanged(0, { rgba: new Uint8Array(64 * 64 * 4), hotX: 1, hotY: 2 }, 5, 6);
    display.cursorMoved(0, 8, 9);
    const first = new FakeQemu();
    display.attach(first.socket);
    expect(first.take().map((m) => m.request)).toEqual([
      DisplayRequest.GET_PROTOCOL_FEATURES,
      DisplayRequest.SCANOUT,
      DisplayRequest.UPDATE,
      DisplayRequest.CURSOR_UPDATE,
    ]);
    const second = new FakeQemu();
    display.attach(second.socket);
    expect(first.destroyed).toBe(true);
    const replayed = second.take();
    expect(replayed.map((m) => m.request)).toContain(DisplayRequest.SCANOUT);
    const cursor = replayed.find((m) => m.request === DisplayRequest.CURSOR_UPDATE)!;
    expect(new DataView(cursor.payload.buffer).getUint32(4, true)).toBe(8);
    expect(display.counters.attachments).toBe(2);
  });

  it('drops a socket that sends an oversized reply, and sends nothing more to it', async () => {
    const qemu = new FakeQemu();
    const warnings: string[] = [];
    const display = new VhostUserGpuDisplay({ log: { info() {}, warn: (m) => warnings.push(m) } });
    display.attach(qemu.socket);
    qemu.take();
    qemu.reply(DisplayRequest.GET_DISPLAY_INFO, new Uint8Array(MAX_DISPLAY_REPLY + 4));
    await tick();
    expect(display.attached).toBe(false);
    expect(qemu.destroyed).toBe(true);
    expect(warnings.join()).toContain('display reply');
    display.scanoutChanged(0, frame(16, 16));
    expect(qemu.take()).toEqual([]);
  });
});
