import { activateForTest, type TestHarness } from '@xvio/transport/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { createGpuDevice, GpuDevice } from './gpu-device.js';
import type { GpuCursor, GpuFrame, GpuHost } from './gpu-host.js';
import { decodePng } from './gpu-png.js';
import {
  GPU_CONFIG_EVENTS_READ,
  GPU_CONFIG_NUM_SCANOUTS,
  GPU_CURSOR_QUEUE,
  GpuFormat,
  type GpuRect,
  GpuResponse,
  HDR_SIZE,
  VIRTIO_GPU_EVENT_DISPLAY,
  VIRTIO_GPU_F_EDID,
  VIRTIO_GPU_FLAG_FENCE,
} from './gpu-wire.js';
import { GpuGuestDriver } from './testing/gpu-guest-driver.js';

class RecordingHost implements GpuHost {
  readonly damage: { scanoutId: number; rect: GpuRect }[] = [];
  readonly scanouts: (GpuFrame | undefined)[] = [];
  cursor: { cursor: GpuCursor | undefined; x: number; y: number } | undefined;
  moves: [number, number][] = [];
  scanoutChanged(id: number, frame: GpuFrame | undefined): void {
    this.scanouts[id] = frame;
  }
  flush(scanoutId: number, _frame: GpuFrame, rect: GpuRect): void {
    this.damage.push({ scanoutId, rect });
  }
  cursorChanged(_id: number, cursor: GpuCursor | undefined, x: number, y: number): void {
    this.cursor = { cursor, x, y };
  }
  cursorMoved(_id: number, x: number, y: number): void {
    this.moves.push([x, y]);
  }
}

let harness: TestHarness | undefined;
afterEach(() => harness?.dispose());

function start(config: Parameters<typeof createGpuDevice>[0] = {}, options: { withoutEdid?: boolean } = {}) {
  const host = new RecordingHost();
  const device = createGpuDevice(
    {
      scanouts: [
        { width: 64, height: 48 },
        { width: 32, height: 32 },
      ],
      ...config,
    },
    { host },
  );
  harness = activateForTest(device, {
    memorySize: 8 << 20,
    withoutFeatures: options.withoutEdid ? VIRTIO_GPU_F_EDID : 0n,
  });
  return { device, host, driver: new GpuGuestDriver(harness), harness };
}

/** The pixel the test pattern has at (x, y), as B8G8R8X8 bytes in guest memory. */
const pattern = (x: number, y: number) => [(x * 4) & 0xff, (y * 5) & 0xff, (x ^ y) & 0xff, 0];

function drawPattern(pixels: Uint8Array, width: number, height: number): void {
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) pixels.set(pattern(x, y), (y * width + x) * 4);
  }
}

describe('GpuDevice', () => {
  it('reports scanouts in config space and GET_DISPLAY_INFO', async () => {
    const { driver, harness } = start();
    const config = harness.controller.readConfig(0, 16);
    expect(new DataView(config.buffer).getUint32(GPU_CONFIG_NUM_SCANOUTS, true)).toBe(2);
    const reply = await driver.getDisplayInfo();
    expect(reply.type).toBe(GpuResponse.OK_DISPLAY_INFO);
    const view = new DataView(reply.bytes.buffer);
    expect([
      view.getUint32(HDR_SIZE + 8, true),
      view.getUint32(HDR_SIZE + 12, true),
      view.getUint32(HDR_SIZE + 16, true),
    ]).toEqual([64, 48, 1]);
    expect([view.getUint32(HDR_SIZE + 24 + 8, true), view.getUint32(HDR_SIZE + 24 + 16, true)]).toEqual([
      32, 1,
    ]);
    expect(view.getUint32(HDR_SIZE + 2 * 24 + 16, true)).toBe(0); // scanout 2 does not exist: disabled
  });

  it('draws a pattern that a PNG snapshot shows pixel for pixel', async () => {
    const { device, driver, host } = start();
    const fb = driver.allocateFramebuffer(64, 48);
    drawPattern(driver.pixels(fb), 64, 48);
    expect((await driver.create2d(1, GpuFormat.B8G8R8X8_UNORM, 64, 48)).type).toBe(GpuResponse.OK_NODATA);
    expect((await driver.attachBacking(1, driver.pageEntries(fb, 1000))).type).toBe(GpuResponse.OK_NODATA);
    expect((await driver.transfer(1, { x: 0, y: 0, width: 64, height: 48 }, 0n)).type).toBe(
      GpuResponse.OK_NODATA,
    );
    expect((await driver.setScanout(0, 1, { x: 0, y: 0, width: 64, height: 48 })).type).toBe(
      GpuResponse.OK_NODATA,
    );
    expect((await driver.flush(1, { x: 0, y: 0, width: 64, height: 48 })).type).toBe(GpuResponse.OK_NODATA);
    expect(host.damage).toEqual([{ scanoutId: 0, rect: { x: 0, y: 0, width: 64, height: 48 } }]);
    const png = decodePng(device.snapshotPng(0)!);
    expect([png.width, png.height]).toEqual([64, 48]);
    for (const [x, y] of [
      [0, 0],
      [63, 0],
      [17, 29],
      [63, 47],
    ] as const) {
      const [b, g, r] = pattern(x, y);
      expect(Array.from(png.rgba.subarray((y * 64 + x) * 4, (y * 64 + x) * 4 + 4))).toEqual([r, g, b, 255]);
    }
  });

  it('transfers a sub-rectangle at its stride offset and flushes only the damage within the scanout', async () => {
    const { device, driver, host } = start();
    const fb = driver.allocateFramebuffer(64, 48);
    await driver.create2d(7, GpuFormat.R8G8B8A8_UNORM, 64, 48);
    await driver.attachBacking(7, driver.pageEntries(fb));
    await driver.setScanout(0, 7, { x: 16, y: 8, width: 32, height: 32 });
    const pixels = driver.pixels(fb);
    pixels.fill(0);
    const rect = { x: 20, y: 10, width: 5, height: 3 };
    for (let y = rect.y; y < rect.y + rect.height; y++) {
      for (let x = rect.x; x < rect.x + rect.width; x++) pixels.set([200, 100, 50, 255], (y * 64 + x) * 4);
    }
    await driver.transfer(7, rect, BigInt((rect.y * 64 + rect.x) * 4));
    await driver.flush(7, { x: 0, y: 0, width: 64, height: 48 });
    // Damage is clipped to the scanout's window and given in scanout coordinates.
    expect(host.damage.at(-1)).toEqual({ scanoutId: 0, rect: { x: 0, y: 0, width: 32, height: 32 } });
    const shot = device.snapshot(0)!;
    const at = (x: number, y: number) =>
      Array.from(shot.rgba.subarray((y * 32 + x) * 4, (y * 32 + x) * 4 + 4));
    expect(at(rect.x - 16, rect.y - 8)).toEqual([200, 100, 50, 255]);
    expect(at(rect.x - 16 + 5, rect.y - 8)).toEqual([0, 0, 0, 0]); // outside the transferred rectangle
  });

  it('answers fenced commands with the fence', async () => {
    const { driver, device } = start();
    await driver.create2d(1, GpuFormat.B8G8R8A8_UNORM, 16, 16);
    const fb = driver.allocateFramebuffer(16, 16);
    await driver.attachBacking(1, [{ address: fb.address, length: fb.length }]);
    const reply = await driver.transfer(1, { x: 0, y: 0, width: 16, height: 16 }, 0n, true);
    expect(reply.type).toBe(GpuResponse.OK_NODATA);
    expect(reply.flags & VIRTIO_GPU_FLAG_FENCE).toBe(VIRTIO_GPU_FLAG_FENCE);
    expect(reply.fenceId).toBe(1n);
    expect(device.counters.fences).toBe(1);
  });

  it('returns a valid EDID with the scanout as preferred mode, and refuses it when not negotiated', async () => {
    const { driver } = start();
    const reply = await driver.getEdid(1);
    expect(reply.type).toBe(GpuResponse.OK_EDID);
    const view = new DataView(reply.bytes.buffer);
    expect(view.getUint32(HDR_SIZE, true)).toBe(128);
    const edid = reply.bytes.subarray(HDR_SIZE + 8, HDR_SIZE + 8 + 128);
    expect(Array.from(edid.subarray(0, 8))).toEqual([0, 255, 255, 255, 255, 255, 255, 0]);
    expect(edid.reduce((sum, b) => sum + b, 0) % 256).toBe(0);
    // Detailed timing descriptor 1: 32 x 32 active.
    expect(edid[56]! | ((edid[58]! >> 4) << 8)).toBe(32);
    expect(edid[59]! | ((edid[61]! >> 4) << 8)).toBe(32);
    expect((await driver.getEdid(5)).type).toBe(GpuResponse.ERR_INVALID_SCANOUT_ID);
    harness!.dispose();
    const second = start({}, { withoutEdid: true });
    expect((await second.driver.getEdid(0)).type).toBe(GpuResponse.ERR_UNSPEC);
  });

  it('sends a display change event and clears it through events_clear', async () => {
    const { device, harness, driver } = start();
    const before = harness.interrupts.config;
    device.setDisplay(1, { width: 800, height: 600 });
    expect(harness.interrupts.config).toBe(before + 1);
    const read = () =>
      new DataView(harness.controller.readConfig(0, 16).buffer).getUint32(GPU_CONFIG_EVENTS_READ, true);
    expect(read()).toBe(VIRTIO_GPU_EVENT_DISPLAY);
    const reply = await driver.getDisplayInfo();
    expect(new DataView(reply.bytes.buffer).getUint32(HDR_SIZE + 24 + 8, true)).toBe(800);
    harness.controller.writeConfig(4, Uint8Array.of(VIRTIO_GPU_EVENT_DISPLAY, 0, 0, 0));
    expect(read()).toBe(0);
  });

  it('shows and moves the cursor from a 64x64 resource', async () => {
    const { driver, host } = start();
    const fb = driver.allocateFramebuffer(64, 64);
    driver.pixels(fb).fill(0x80);
    await driver.create2d(9, GpuFormat.B8G8R8A8_UNORM, 64, 64);
    await driver.attachBacking(9, [{ address: fb.address, length: fb.length }]);
    await driver.transfer(9, { x: 0, y: 0, width: 64, height: 64 }, 0n);
    await driver.cursor(false, 0, 10, 20, 9, 3, 4);
    expect(host.cursor?.x).toBe(10);
    expect(host.cursor?.cursor?.hotX).toBe(3);
    expect(host.cursor?.cursor?.rgba[0]).toBe(0x80);
    await driver.cursor(true, 0, 30, 40);
    expect(host.moves).toEqual([[30, 40]]);
    await driver.cursor(false, 0, 0, 0, 0);
    expect(host.cursor?.cursor).toBeUndefined();
  });

  it('disables a scanout when its resource is unreferenced, and forgets everything on reset', async () => {
    const { device, driver, host, harness } = start();
    await driver.create2d(1, GpuFormat.B8G8R8X8_UNORM, 64, 48);
    await driver.setScanout(0, 1, { x: 0, y: 0, width: 64, height: 48 });
    expect(host.scanouts[0]).toBeDefined();
    await driver.unref(1);
    expect(host.scanouts[0]).toBeUndefined();
    expect(device.snapshot(0)).toBeUndefined();
    await driver.create2d(2, GpuFormat.B8G8R8X8_UNORM, 64, 48);
    expect(device.counters.resources).toBe(1);
    harness.restart();
    expect(device.counters.resources).toBe(0);
    expect(device.counters.resourceBytes).toBe(0);
    // Resource 2 is gone after the reset: the id is free again.
    expect((await new GpuGuestDriver(harness).create2d(2, GpuFormat.B8G8R8X8_UNORM, 8, 8)).type).toBe(
      GpuResponse.OK_NODATA,
    );
  });
});

describe('GpuDevice against a hostile driver', () => {
  it('answers invalid ids, formats and rectangles with the spec error codes', async () => {
    const { driver } = start();
    expect((await driver.create2d(0, GpuFormat.B8G8R8X8_UNORM, 8, 8)).type).toBe(
      GpuResponse.ERR_INVALID_RESOURCE_ID,
    );
    expect((await driver.create2d(1, 999, 8, 8)).type).toBe(GpuResponse.ERR_INVALID_PARAMETER);
    expect((await driver.create2d(1, GpuFormat.B8G8R8X8_UNORM, 0, 8)).type).toBe(
      GpuResponse.ERR_INVALID_PARAMETER,
    );
    expect((await driver.create2d(1, GpuFormat.B8G8R8X8_UNORM, 0xffff_ffff, 0xffff_ffff)).type).toBe(
      GpuResponse.ERR_INVALID_PARAMETER,
    );
    expect((await driver.create2d(1, GpuFormat.B8G8R8X8_UNORM, 8, 8)).type).toBe(GpuResponse.OK_NODATA);
    expect((await driver.create2d(1, GpuFormat.B8G8R8X8_UNORM, 8, 8)).type).toBe(
      GpuResponse.ERR_INVALID_RESOURCE_ID,
    );
    expect((await driver.unref(42)).type).toBe(GpuResponse.ERR_INVALID_RESOURCE_ID);
    expect((await driver.setScanout(16, 1, { x: 0, y: 0, width: 8, height: 8 })).type).toBe(
      GpuResponse.ERR_INVALID_SCANOUT_ID,
    );
    expect((await driver.setScanout(0, 1, { x: 4, y: 0, width: 8, height: 8 })).type).toBe(
      GpuResponse.ERR_INVALID_PARAMETER,
    );
    // x + width overflows 32 bits: must not wrap into range.
    expect((await driver.setScanout(0, 1, { x: 0xffff_fff8, y: 0, width: 16, height: 8 })).type).toBe(
      GpuResponse.ERR_INVALID_PARAMETER,
    );
    expect((await driver.flush(1, { x: 0, y: 0, width: 9, height: 8 })).type).toBe(
      GpuResponse.ERR_INVALID_PARAMETER,
    );
    expect((await driver.transfer(1, { x: 0, y: 0, width: 8, height: 8 }, 0n)).type).toBe(
      GpuResponse.ERR_UNSPEC,
    ); // no backing
    expect((await driver.detachBacking(1)).type).toBe(GpuResponse.ERR_UNSPEC);
  });

  it('refuses transfers past the end of the backing, and backing outside guest memory', async () => {
    const { driver, harness } = start();
    await driver.create2d(1, GpuFormat.B8G8R8X8_UNORM, 8, 8);
    const fb = driver.allocateFramebuffer(8, 8);
    expect(
      (await driver.attachBacking(1, [{ address: BigInt(harness.memory.size) + 4096n, length: 256 }])).type,
    ).toBe(GpuResponse.ERR_UNSPEC);
    expect((await driver.attachBacking(1, [{ address: fb.address, length: 255 }])).type).toBe(
      GpuResponse.OK_NODATA,
    );
    expect((await driver.attachBacking(1, [{ address: fb.address, length: 256 }])).type).toBe(
      GpuResponse.ERR_UNSPEC,
    ); // already attached
    expect((await driver.transfer(1, { x: 0, y: 0, width: 8, height: 8 }, 0n)).type).toBe(
      GpuResponse.ERR_INVALID_PARAMETER,
    );
    expect((await driver.transfer(1, { x: 0, y: 0, width: 1, height: 1 }, 1n << 63n)).type).toBe(
      GpuResponse.ERR_INVALID_PARAMETER,
    );
    expect((await driver.transfer(1, { x: 0, y: 0, width: 8, height: 7 }, 0n)).type).toBe(
      GpuResponse.OK_NODATA,
    );
  });

  it('caps resource count and memory with ERR_OUT_OF_MEMORY', async () => {
    const { driver, device } = start({ maxResources: 2, maxResourceMemory: 64 * 64 * 4 + 16 * 16 * 4 });
    expect((await driver.create2d(1, GpuFormat.B8G8R8X8_UNORM, 64, 64)).type).toBe(GpuResponse.OK_NODATA);
    expect((await driver.create2d(2, GpuFormat.B8G8R8X8_UNORM, 64, 64)).type).toBe(
      GpuResponse.ERR_OUT_OF_MEMORY,
    );
    expect((await driver.create2d(2, GpuFormat.B8G8R8X8_UNORM, 16, 16)).type).toBe(GpuResponse.OK_NODATA);
    expect((await driver.create2d(3, GpuFormat.B8G8R8X8_UNORM, 1, 1)).type).toBe(
      GpuResponse.ERR_OUT_OF_MEMORY,
    );
    expect(device.counters.resourceBytes).toBe(64 * 64 * 4 + 16 * 16 * 4);
  });

  it('rejects backing tables that are too long or shorter than nr_entries says', async () => {
    const { driver, device } = start({ maxBackingEntries: 4 });
    await driver.create2d(1, GpuFormat.B8G8R8X8_UNORM, 8, 8);
    const entries = Array.from({ length: 5 }, (_, i) => ({ address: 0x10000n + BigInt(i * 64), length: 64 }));
    expect((await driver.attachBacking(1, entries)).type).toBe(GpuResponse.ERR_INVALID_PARAMETER);
    // nr_entries says 3 but only 2 entries follow.
    const request = new Uint8Array(HDR_SIZE + 8);
    const view = new DataView(request.buffer);
    view.setUint32(0, 0x0106, true);
    view.setUint32(HDR_SIZE, 1, true);
    view.setUint32(HDR_SIZE + 4, 3, true);
    const reply = await driver.send(request, HDR_SIZE, [new Uint8Array(32)]);
    expect(reply.type).toBe(GpuResponse.ERR_INVALID_PARAMETER);
    expect(device.counters.badRequests).toBe(1);
  });

  it('answers truncated and unknown commands and drops responses that do not fit', async () => {
    const { driver, device, harness } = start();
    const truncated = new Uint8Array(HDR_SIZE + 4);
    new DataView(truncated.buffer).setUint32(0, 0x0101, true); // CREATE_2D needs 16 body bytes
    expect((await driver.send(truncated, HDR_SIZE)).type).toBe(GpuResponse.ERR_INVALID_PARAMETER);
    const unknown = new Uint8Array(HDR_SIZE);
    new DataView(unknown.buffer).setUint32(0, 0x0200, true); // a 3D command: not offered
    expect((await driver.send(unknown, HDR_SIZE)).type).toBe(GpuResponse.ERR_UNSPEC);
    const tooSmall = await driver.send(new Uint8Array(HDR_SIZE), 8); // GET_DISPLAY_INFO? type 0
    expect(tooSmall.bytes.length).toBe(0);
    const headerless = await driver.send(new Uint8Array(10), HDR_SIZE);
    expect(headerless.bytes.length).toBe(0);
    expect(device.counters.badRequests).toBeGreaterThanOrEqual(2);
    expect(harness.needsReset).toBe(false);
    expect((await driver.getDisplayInfo()).type).toBe(GpuResponse.OK_DISPLAY_INFO);
  });

  it('completes cursor commands for unknown scanouts without a response and keeps going', async () => {
    const { driver, harness, host } = start();
    await driver.cursor(true, 99, 1, 1);
    expect(host.moves).toEqual([]);
    expect(harness.interrupts.queues[GPU_CURSOR_QUEUE]).toBeGreaterThan(0);
    await driver.cursor(true, 0, 5, 6);
    expect(host.moves).toEqual([[5, 6]]);
  });
});

describe('GpuDevice configuration', () => {
  it('names the bad field', () => {
    expect(() => createGpuDevice({ scanouts: [] })).toThrow(/scanouts/);
    expect(() => createGpuDevice({ queueSize: 100 })).toThrow(/queueSize/);
    expect(() => createGpuDevice({ scanouts: [{ width: 5000, height: 10 }] })).toThrow(/scanouts\.0\.width/);
  });

  it('offers EDID only when configured', () => {
    expect(new GpuDevice(createGpuDevice().config).features & VIRTIO_GPU_F_EDID).toBe(VIRTIO_GPU_F_EDID);
    expect(createGpuDevice({ edid: false }).features & VIRTIO_GPU_F_EDID).toBe(0n);
  });
});
