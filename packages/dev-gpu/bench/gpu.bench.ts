// virtio-gpu 2D: how many full 1024x768 frames per second a guest redrawing continuously
// gets through the device (TRANSFER_TO_HOST_2D + RESOURCE_FLUSH), alone (null host) and
// with the browser viewer streaming damage to a connected WebSocket client, beside a plain
// memcpy of the same frame as the bound. One process, one run.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { activateForTest } from '@xvio/transport/testing';
import WebSocket from 'ws';
import { createGpuDevice } from '../src/gpu-device.js';
import type { GpuHost } from '../src/gpu-host.js';
import { NullGpuHost } from '../src/gpu-host.js';
import { GpuViewer } from '../src/gpu-viewer.js';
import { GpuFormat } from '../src/gpu-wire.js';
import { GpuGuestDriver } from '../src/testing/gpu-guest-driver.js';

const WIDTH = 1024;
const HEIGHT = 768;
const SECONDS = Number(process.env.XVIO_BENCH_SECONDS ?? 2);
const full = { x: 0, y: 0, width: WIDTH, height: HEIGHT };

async function deviceFrames(host: GpuHost, onFrame?: () => Promise<void>): Promise<number> {
  const device = createGpuDevice({ scanouts: [{ width: WIDTH, height: HEIGHT }] }, { host });
  const harness = activateForTest(device, { memorySize: 32 << 20 });
  const driver = new GpuGuestDriver(harness);
  const fb = driver.allocateFramebuffer(WIDTH, HEIGHT);
  await driver.create2d(1, GpuFormat.B8G8R8X8_UNORM, WIDTH, HEIGHT);
  await driver.attachBacking(1, driver.pageEntries(fb));
  await driver.setScanout(0, 1, full);
  const pixels = driver.pixels(fb);
  let frames = 0;
  const deadline = performance.now() + SECONDS * 1000;
  const start = performance.now();
  while (performance.now() < deadline) {
    pixels[(frames * 4) % pixels.length] = frames & 0xff; // the guest changes the picture
    await driver.transfer(1, full, 0n);
    await driver.flush(1, full);
    if (onFrame) await onFrame();
    frames++;
  }
  const elapsed = (performance.now() - start) / 1000;
  harness.dispose();
  return frames / elapsed;
}

function memcpyFrames(): number {
  const source = new Uint8Array(WIDTH * HEIGHT * 4).fill(7);
  const target = new Uint8Array(source.length);
  let frames = 0;
  const start = performance.now();
  while (performance.now() - start < SECONDS * 1000) {
    target.set(source);
    frames++;
  }
  return frames / ((performance.now() - start) / 1000);
}

async function viewerFrames(): Promise<{ produced: number; delivered: number }> {
  const viewer = await GpuViewer.start();
  const client = new WebSocket(`${viewer.url.replace('http', 'ws')}ws`);
  let received = 0;
  client.on('message', (data: Buffer) => {
    if (data[0] === 1) received++;
  });
  await new Promise((resolve) => client.once('open', resolve));
  const start = performance.now();
  const produced = await deviceFrames(viewer, () => new Promise((resolve) => setImmediate(resolve)));
  await new Promise((resolve) => setTimeout(resolve, 200));
  const delivered = received / ((performance.now() - start) / 1000);
  client.close();
  await viewer.close();
  return { produced, delivered };
}

const bound = memcpyFrames();
const alone = await deviceFrames(new NullGpuHost());
const withViewer = await viewerFrames();
const round = (n: number) => Math.round(n * 10) / 10;
const results = [
  {
    name: 'full-frame redraw 1024x768, null host',
    value: round(alone),
    unit: 'frames/s',
    bound: { name: 'memcpy 3 MiB', value: round(bound) },
  },
  {
    name: 'full-frame redraw 1024x768, viewer: guest frames',
    value: round(withViewer.produced),
    unit: 'frames/s',
    bound: { name: 'memcpy 3 MiB', value: round(bound) },
  },
  {
    name: 'full-frame redraw 1024x768, viewer: rectangles delivered to a WebSocket client',
    value: round(withViewer.delivered),
    unit: 'frames/s',
    bound: { name: 'memcpy 3 MiB', value: round(bound) },
  },
];
const machine = `${cpus()[0]?.model ?? 'unknown cpu'}, ${cpus().length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB, node ${process.version}`;
const out = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bench', 'results');
mkdirSync(out, { recursive: true });
writeFileSync(
  join(out, 'dev-gpu-frames.json'),
  `${JSON.stringify({ machine, date: new Date().toISOString(), results }, null, 2)}\n`,
);
const lines = results.map(
  (r) =>
    `| ${r.name} | ${r.value} ${r.unit} | ${r.bound.value} (${r.bound.name}) | ${(r.value / r.bound.value).toFixed(3)} |`,
);
writeFileSync(
  join(out, 'dev-gpu-frames.md'),
  `# dev-gpu: frames per second at 1024x768\n\nMachine: ${machine}\n\nA guest redrawing the whole 1024x768 B8G8R8X8 framebuffer continuously: TRANSFER_TO_HOST_2D from 768 page-sized backing entries, then RESOURCE_FLUSH. The viewer converts each flushed rectangle to RGBA and sends it over a WebSocket on loopback; slow clients get merged damage, so "delivered" may be lower than "guest frames" without the guest ever waiting.\n\n| case | value | bound | ratio |\n|---|---|---|---|\n${lines.join('\n')}\n`,
);
console.log(lines.join('\n'));
