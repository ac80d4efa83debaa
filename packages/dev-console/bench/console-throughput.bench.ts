// virtio-console throughput on port 0 through split rings in test memory, both directions,
// against the bound of the same bytes without a device: one memcpy (TypedArray.set) per
// buffer. Guest output goes to a host that only counts; host input comes from the in-memory
// host. What is measured is the device, the ring and the copies.
//
// The driver is lean: buffers are placed once and their heads re-published after each use.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createTestMemory } from '@xvio/grant-pool';
import { DeviceController, VIRTIO_F_RING_PACKED } from '@xvio/transport';
import { MockSplitQueue } from '@xvio/transport/testing';
import { createConsoleDevice } from '../src/console-device.js';
import { type ConsoleHost, MemoryConsoleHost } from '../src/console-host.js';

const QUEUE_SIZE = 256;
const SECONDS = Number(process.env.XVIO_BENCH_SECONDS ?? 1);
const SIZES = [64, 4096, 32768];

/** Takes guest output and only counts it (the device's copy is the one being measured). */
class CountingHost extends MemoryConsoleHost implements ConsoleHost {
  written = 0;
  override write(bytes: Uint8Array): boolean {
    this.written += bytes.length;
    return true;
  }
}

function setup(size: number) {
  const perQueue = (1 << 20) + QUEUE_SIZE * (size + 64);
  const memory = createTestMemory(perQueue * 2);
  const host = new CountingHost();
  const device = createConsoleDevice({ bufferBytes: 4 * 1024 * 1024 }, { hosts: new Map([[0, host]]) });
  const controller = new DeviceController(device, {
    memory,
    hooks: { interruptQueue: () => {}, interruptConfig: () => {} },
  });
  controller.setStatus(1);
  controller.setStatus(3);
  controller.setDriverFeatures(controller.offeredFeatures & ~VIRTIO_F_RING_PACKED);
  controller.setStatus(11);
  const queues = [0, 1].map((index) => {
    const queue = new MockSplitQueue(memory, {
      size: QUEUE_SIZE,
      offset: index * perQueue,
      eventIdx: true,
      seed: index + 1,
    });
    Object.assign(controller.queue(index)!, {
      size: QUEUE_SIZE,
      desc: queue.descAddress,
      driver: queue.availAddress,
      device: queue.usedAddress,
      ready: true,
    });
    return queue;
  });
  controller.setStatus(15);
  return { controller, host, device, receive: queues[0]!, transmit: queues[1]! };
}

/** Guest -> host: transmit buffers of `size` bytes, the host drained after each kick. */
function measureTransmit(size: number): number {
  const { controller, host, transmit } = setup(size);
  const payload = new Uint8Array(size).fill(0x41);
  const heads: number[] = [];
  for (let i = 0; i < QUEUE_SIZE; i++)
    heads.push(transmit.addChain([{ data: payload }], { noPublish: true }).head);
  for (const head of heads) transmit.publish(head);
  let seen = 0;
  let cursor = 0;
  let bytes = 0;
  const start = performance.now();
  const deadline = start + SECONDS * 1000;
  while (performance.now() < deadline) {
    for (let batch = 0; batch < 16; batch++) {
      controller.kick(1);
      const used = transmit.usedIdx;
      const completed = (used - seen) & 0xffff;
      seen = used;
      for (let i = 0; i < completed; i++) {
        transmit.publish(heads[cursor]!);
        cursor = (cursor + 1) % QUEUE_SIZE;
      }
    }
  }
  const seconds = (performance.now() - start) / 1000;
  controller.setStatus(0);
  bytes = host.written;
  return bytes / seconds / 1e6;
}

/** Host -> guest: the host offers `size`-byte chunks, the guest keeps receive buffers of that size posted. */
function measureReceive(size: number): number {
  const { controller, host, receive } = setup(size);
  const chunk = new Uint8Array(size).fill(0x42);
  const heads: number[] = [];
  for (let i = 0; i < QUEUE_SIZE; i++)
    heads.push(receive.addChain([{ writable: true, length: size }], { noPublish: true }).head);
  for (const head of heads) receive.publish(head);
  let seen = 0;
  let cursor = 0;
  let bytes = 0;
  const start = performance.now();
  const deadline = start + SECONDS * 1000;
  while (performance.now() < deadline) {
    for (let batch = 0; batch < 16; batch++) {
      for (let i = 0; i < 32; i++) host.input(chunk);
      const used = receive.usedIdx;
      const completed = (used - seen) & 0xffff;
      seen = used;
      bytes += completed * size;
      for (let i = 0; i < completed; i++) {
        receive.publish(heads[cursor]!);
        cursor = (cursor + 1) % QUEUE_SIZE;
      }
      controller.kick(0);
    }
  }
  const seconds = (performance.now() - start) / 1000;
  controller.setStatus(0);
  return bytes / seconds / 1e6;
}

function measureCopy(size: number): number {
  const source = new Uint8Array(size).fill(1);
  const target = new Uint8Array(size);
  let bytes = 0;
  const start = performance.now();
  const deadline = start + SECONDS * 1000;
  while (performance.now() < deadline) {
    for (let i = 0; i < 256; i++) target.set(source);
    bytes += 256 * size;
  }
  return bytes / ((performance.now() - start) / 1000) / 1e6;
}

const label = (size: number) => (size >= 1024 ? `${size / 1024}KiB` : `${size}B`);
const round = (value: number) => Math.round(value * 10) / 10;
const results: { name: string; value: number; unit: string; bound: { name: string; value: number } }[] = [];
for (const size of SIZES) {
  const bound = { name: `memcpy ${label(size)}`, value: round(measureCopy(size)) };
  results.push({
    name: `console tx ${label(size)} (guest -> host)`,
    value: round(measureTransmit(size)),
    unit: 'MB/s',
    bound,
  });
  results.push({
    name: `console rx ${label(size)} (host -> guest)`,
    value: round(measureReceive(size)),
    unit: 'MB/s',
    bound,
  });
}

const cpu = cpus();
const machine = `${cpu[0]?.model ?? 'unknown cpu'}, ${cpu.length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB, node ${process.version}`;
const report = { machine, date: new Date().toISOString(), results };
const out = join(dirname(fileURLToPath(import.meta.url)), '../../..', 'bench/results');
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'dev-console-throughput.json'), `${JSON.stringify(report, null, 2)}\n`);
const rows = results.map(
  (r) =>
    `| ${r.name} | ${r.value} ${r.unit} | ${r.bound.name}: ${r.bound.value} ${r.unit} | ${Math.round((100 * r.value) / r.bound.value)}% |`,
);
writeFileSync(
  join(out, 'dev-console-throughput.md'),
  [
    '# dev-console throughput',
    '',
    `${machine}, ${report.date}. Produced by \`pnpm --filter @xvio/dev-console bench\`.`,
    '',
    'Port 0 without MULTIPORT, split rings of 256 entries in test memory, EVENT_IDX on. tx: the',
    'guest posts transmit buffers of the given size into a host that only counts them;',
    'rx: the in-memory host offers chunks of that size and the guest keeps receive buffers of that size',
    'posted. The bound is one memcpy (`TypedArray.set`) of the same size per buffer. Each byte is',
    'copied once out of (tx) or into (rx) guest memory; tx also allocates the host-owned copy.',
    '',
    '| case | device | bound | of bound |',
    '|---|---|---|---|',
    ...rows,
    '',
  ].join('\n'),
);
for (const row of rows) console.log(row);
