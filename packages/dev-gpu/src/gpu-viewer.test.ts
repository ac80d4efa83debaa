import { existsSync } from 'node:fs';
import { activateForTest, type TestHarness } from '@xvio/transport/testing';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createGpuDevice } from './gpu-device.js';
import { decodePng } from './gpu-png.js';
import { GpuViewer } from './gpu-viewer.js';
import { GpuFormat } from './gpu-wire.js';
import { GpuGuestDriver } from './testing/gpu-guest-driver.js';

const WIDTH = 96;
const HEIGHT = 64;

/** A pattern with distinct colours per region, in B8G8R8X8 (what Linux's fbdev uses). */
function pattern(x: number, y: number): [number, number, number] {
  return [(x * 2) & 0xff, (y * 3) & 0xff, x < WIDTH / 2 ? 0xff : 0x20]; // r, g, b
}

let harness: TestHarness | undefined;
let viewer: GpuViewer | undefined;
afterEach(async () => {
  harness?.dispose();
  await viewer?.close();
});

async function drawn() {
  viewer = await GpuViewer.start();
  const device = createGpuDevice({ scanouts: [{ width: WIDTH, height: HEIGHT }] }, { host: viewer });
  harness = activateForTest(device, { memorySize: 4 << 20 });
  const driver = new GpuGuestDriver(harness);
  const fb = driver.allocateFramebuffer(WIDTH, HEIGHT);
  const pixels = driver.pixels(fb);
  for (let y = 0; y < HEIGHT; y++) {
    for (let x = 0; x < WIDTH; x++) {
      const [r, g, b] = pattern(x, y);
      pixels.set([b, g, r, 0], (y * WIDTH + x) * 4);
    }
  }
  const full = { x: 0, y: 0, width: WIDTH, height: HEIGHT };
  await driver.create2d(1, GpuFormat.B8G8R8X8_UNORM, WIDTH, HEIGHT);
  await driver.attachBacking(1, driver.pageEntries(fb));
  await driver.transfer(1, full, 0n);
  await driver.setScanout(0, 1, full);
  await driver.flush(1, full);
  return { device, driver, fb, viewer };
}

describe('GpuViewer over HTTP', () => {
  it('serves the page and PNG snapshots of a scanout', async () => {
    const { viewer } = await drawn();
    const page = await fetch(viewer.url);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('<title>xvio gpu viewer</title>');
    const response = await fetch(`${viewer.url}snapshot/0.png`);
    expect(response.headers.get('content-type')).toBe('image/png');
    const png = decodePng(new Uint8Array(await response.arrayBuffer()));
    expect([png.width, png.height]).toEqual([WIDTH, HEIGHT]);
    const [r, g, b] = pattern(70, 33);
    expect(Array.from(png.rgba.subarray((33 * WIDTH + 70) * 4, (33 * WIDTH + 70) * 4 + 4))).toEqual([
      r,
      g,
      b,
      255,
    ]);
    expect((await fetch(`${viewer.url}snapshot/3.png`)).status).toBe(404);
  });
});

describe('GpuViewer in a real browser', () => {
  let browser: Browser;
  beforeAll(async () => {
    const executablePath = '/usr/bin/chromium';
    if (!existsSync(executablePath)) throw new Error('chromium is not installed (apt-get install chromium)');
    browser = await chromium.launch({
      executablePath,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
  });

  it('shows the guest pattern in the canvas, then applies only the damaged rectangle', async () => {
    const { viewer, driver, fb } = await drawn();
    const page = await browser.newPage();
    await page.goto(viewer.url);
    await page.waitForFunction(
      () => (globalThis as unknown as { __xvio: { rects: number } }).__xvio.rects >= 1,
    );
    const shot = decodePng(new Uint8Array(await page.locator('#screen-0').screenshot()));
    expect([shot.width, shot.height]).toEqual([WIDTH, HEIGHT]);
    let mismatches = 0;
    for (let y = 0; y < HEIGHT; y++) {
      for (let x = 0; x < WIDTH; x++) {
        const at = (y * WIDTH + x) * 4;
        const [r, g, b] = pattern(x, y);
        if (shot.rgba[at] !== r || shot.rgba[at + 1] !== g || shot.rgba[at + 2] !== b) mismatches++;
      }
    }
    expect(mismatches).toBe(0);

    // The guest repaints a 10x6 rectangle white: the browser receives that rectangle only.
    const rect = { x: 40, y: 20, width: 10, height: 6 };
    const pixels = driver.pixels(fb);
    for (let y = rect.y; y < rect.y + rect.height; y++)
      pixels.fill(0xff, (y * WIDTH + rect.x) * 4, (y * WIDTH + rect.x + rect.width) * 4);
    await driver.transfer(1, rect, BigInt((rect.y * WIDTH + rect.x) * 4));
    await driver.flush(1, rect);
    await page.waitForFunction(
      () => (globalThis as unknown as { __xvio: { rects: number } }).__xvio.rects >= 2,
    );
    const last = await page.evaluate(
      () => (globalThis as unknown as { __xvio: { last: unknown } }).__xvio.last,
    );
    expect(last).toEqual({ id: 0, x: rect.x, y: rect.y, w: rect.width, h: rect.height });
    const after = decodePng(new Uint8Array(await page.locator('#screen-0').screenshot()));
    const white = (x: number, y: number) =>
      Array.from(after.rgba.subarray((y * WIDTH + x) * 4, (y * WIDTH + x) * 4 + 3));
    expect(white(45, 22)).toEqual([255, 255, 255]);
    expect(white(39, 22)).toEqual(pattern(39, 22));
    await page.close();
  }, 60_000);
});
