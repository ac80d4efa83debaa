// Device-side virtqueue throughput: pop + addUsed + publishUsed, split and packed rings,
// 1-descriptor, 4-descriptor and indirect chains, batches of 1 and 64 — beside two bounds
// measured in the same run: a raw memcpy of the ring bytes each chain touches, and a bare
// loop (one DataView over one buffer, no abstractions, no checks). The driver side refills
// the rings as cheaply as possible (pre-built descriptors; split: only avail.idx moves;
// packed: only the flags flip each lap) so the device side is what is measured.
//
// Usage: pnpm bench [--quick] [--only TEXT] [--out DIR]
// (writes <repo>/bench/results/transport-virtqueue.{json,md}; --only runs the scenarios whose name contains TEXT)

import { writeFileSync } from 'node:fs';
import { arch, cpus, loadavg, platform, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { createTestMemory, type TestMemory } from '@xvio/grant-pool';
import { PackedQueue } from '../src/packed-queue.js';
import { SplitQueue } from '../src/split-queue.js';
import type { VirtqueueConfig } from '../src/virtqueue.js';

const QUEUE_SIZE = 256;
const BUFFER = 64; // bytes per descriptor buffer
const quick = process.argv.includes('--quick');
const ROUND_MS = quick ? 150 : 500;
const ROUNDS = quick ? 2 : 4;

type Shape = 'single' | 'four' | 'indirect';
const DESCRIPTORS: Record<Shape, number> = { single: 1, four: 4, indirect: 4 };

interface Result {
  name: string;
  value: number;
  unit: string;
  bound?: { name: string; value: number };
  /** The same measurement per wall-clock second (lower when the shared machine was busy). */
  wallClock?: number;
}

/** The wall-clock rate of the last `measure` (the machine is shared: CPU time is the per-core figure). */
let lastWallRate = 0;

/**
 * Runs `step` (which processes `perStep` chains) repeatedly; returns the best chains per
 * CPU-second of several rounds (chains/s per core: time the thread was descheduled on a
 * busy machine does not count). The wall-clock rate is kept in `lastWallRate`.
 */
function measure(step: () => void, perStep: number): number {
  let best = 0;
  let bestWall = 0;
  const warm = performance.now() + ROUND_MS / 2;
  while (performance.now() < warm) for (let i = 0; i < 64; i++) step();
  for (let round = 0; round < ROUNDS; round++) {
    let chains = 0;
    const cpu = process.cpuUsage();
    const start = performance.now();
    const end = start + ROUND_MS;
    let now = start;
    while (now < end) {
      for (let i = 0; i < 256; i++) step();
      chains += 256 * perStep;
      now = performance.now();
    }
    const used = process.cpuUsage(cpu);
    const cpuSeconds = (used.user + used.system) / 1e6;
    best = Math.max(best, chains / Math.max(cpuSeconds, 1e-6));
    bestWall = Math.max(bestWall, chains / ((now - start) / 1000));
  }
  lastWallRate = bestWall;
  return best;
}

// --- split ring -------------------------------------------------------------------------

interface SplitRig {
  memory: TestMemory;
  config: VirtqueueConfig;
  availIdxOffset: number;
  /** Chains the table holds at once. */
  capacity: number;
}

function buildSplit(shape: Shape): SplitRig {
  const memory = createTestMemory(4 << 20);
  const view = memory.dataView;
  const desc = 0;
  const avail = QUEUE_SIZE * 16;
  const used = 0x4000;
  let cursor = 0x10000;
  const buffer = () => {
    const at = cursor;
    cursor += BUFFER;
    return BigInt(at);
  };
  const writeDesc = (at: number, address: bigint, length: number, flags: number, next: number) => {
    view.setBigUint64(at, address, true);
    view.setUint32(at + 8, length, true);
    view.setUint16(at + 12, flags, true);
    view.setUint16(at + 14, next, true);
  };
  const heads: number[] = [];
  if (shape === 'single') {
    for (let i = 0; i < QUEUE_SIZE; i++) {
      writeDesc(desc + i * 16, buffer(), BUFFER, 2, 0);
      heads.push(i);
    }
  } else if (shape === 'four') {
    for (let c = 0; c < QUEUE_SIZE / 4; c++) {
      for (let k = 0; k < 4; k++) {
        const index = c * 4 + k;
        // two readable, then two writable
        writeDesc(desc + index * 16, buffer(), BUFFER, (k >= 2 ? 2 : 0) | (k < 3 ? 1 : 0), index + 1);
      }
      heads.push(c * 4);
    }
  } else {
    for (let i = 0; i < QUEUE_SIZE; i++) {
      const table = cursor;
      cursor += 64;
      for (let k = 0; k < 4; k++)
        writeDesc(table + k * 16, buffer(), BUFFER, (k >= 2 ? 2 : 0) | (k < 3 ? 1 : 0), k + 1);
      writeDesc(desc + i * 16, BigInt(table), 64, 4, 0);
      heads.push(i);
    }
  }
  for (let slot = 0; slot < QUEUE_SIZE; slot++)
    view.setUint16(avail + 4 + slot * 2, heads[slot % heads.length]!, true);
  return {
    memory,
    config: {
      size: QUEUE_SIZE,
      maxSize: QUEUE_SIZE,
      desc: BigInt(desc),
      driver: BigInt(avail),
      device: BigInt(used),
      eventIdx: false,
      indirect: shape === 'indirect',
    },
    availIdxOffset: avail + 2,
    capacity: heads.length,
  };
}

function benchSplit(shape: Shape, batch: number, recycle = true): number {
  const rig = buildSplit(shape);
  const queue = new SplitQueue(rig.memory, rig.config);
  const view = rig.memory.dataView;
  const at = rig.availIdxOffset;
  const perStep = Math.min(batch, rig.capacity);
  let availIdx = 0;
  const written = shape === 'single' ? BUFFER : 2 * BUFFER;
  return measure(() => {
    availIdx = (availIdx + perStep) & 0xffff;
    view.setUint16(at, availIdx, true); // the driver's whole refill
    for (let i = 0; i < perStep; i++) {
      const chain = queue.pop()!;
      queue.addUsed(chain, written);
      if (recycle) queue.recycle(chain);
    }
    queue.publishUsed();
  }, perStep);
}

// --- packed ring ------------------------------------------------------------------------

function buildPacked(shape: Shape) {
  const memory = createTestMemory(4 << 20);
  const view = memory.dataView;
  const desc = 0;
  const driverEvent = QUEUE_SIZE * 16;
  const deviceEvent = driverEvent + 4;
  let cursor = 0x10000;
  const buffer = () => {
    const at = cursor;
    cursor += BUFFER;
    return BigInt(at);
  };
  const writeDesc = (at: number, address: bigint, length: number, id: number, flags: number) => {
    view.setBigUint64(at, address, true);
    view.setUint32(at + 8, length, true);
    view.setUint16(at + 12, id, true);
    view.setUint16(at + 14, flags, true);
  };
  // Ring slots of each chain and the flags (without AVAIL/USED) of each slot.
  const baseFlags = new Uint16Array(QUEUE_SIZE);
  const headLength = new Uint32Array(QUEUE_SIZE);
  let slotsPerChain = 1;
  if (shape === 'single') {
    for (let i = 0; i < QUEUE_SIZE; i++) {
      writeDesc(desc + i * 16, buffer(), BUFFER, i, 2);
      baseFlags[i] = 2;
      headLength[i] = BUFFER;
    }
  } else if (shape === 'four') {
    slotsPerChain = 4;
    for (let c = 0; c < QUEUE_SIZE / 4; c++) {
      for (let k = 0; k < 4; k++) {
        const index = c * 4 + k;
        const flags = (k >= 2 ? 2 : 0) | (k < 3 ? 1 : 0);
        writeDesc(desc + index * 16, buffer(), BUFFER, c, 0);
        baseFlags[index] = flags;
        headLength[index] = BUFFER;
      }
    }
  } else {
    for (let i = 0; i < QUEUE_SIZE; i++) {
      const table = cursor;
      cursor += 64;
      for (let k = 0; k < 4; k++) writeDesc(table + k * 16, buffer(), BUFFER, 0, k >= 2 ? 2 : 0);
      writeDesc(desc + i * 16, BigInt(table), 64, i, 0);
      baseFlags[i] = 4;
      headLength[i] = 64;
    }
  }
  return {
    memory,
    view,
    baseFlags,
    headLength,
    slotsPerChain,
    config: {
      size: QUEUE_SIZE,
      maxSize: QUEUE_SIZE,
      desc: BigInt(desc),
      driver: BigInt(driverEvent),
      device: BigInt(deviceEvent),
      eventIdx: false,
      indirect: shape === 'indirect',
    } satisfies VirtqueueConfig,
  };
}

function benchPacked(shape: Shape, batch: number, recycle = true): number {
  const rig = buildPacked(shape);
  const queue = new PackedQueue(rig.memory, rig.config);
  const { view, baseFlags, headLength, slotsPerChain } = rig;
  const capacity = QUEUE_SIZE / slotsPerChain;
  const perStep = Math.min(batch, capacity);
  const written = shape === 'single' ? BUFFER : 2 * BUFFER;
  let slot = 0;
  let wrap = 1;
  if (shape === 'single') {
    // One writable descriptor per chain: the driver's refill is one flags store per chain
    // (the device's used descriptor left id and length as they were).
    return measure(() => {
      let flags = wrap ? 0x82 : 0x8002;
      for (let c = 0; c < perStep; c++) {
        view.setUint16(slot * 16 + 14, flags, true);
        if (++slot === QUEUE_SIZE) {
          slot = 0;
          wrap ^= 1;
          flags = wrap ? 0x82 : 0x8002;
        }
      }
      for (let i = 0; i < perStep; i++) {
        const chain = queue.pop()!;
        queue.addUsed(chain, written);
        if (recycle) queue.recycle(chain);
      }
      queue.publishUsed();
    }, perStep);
  }
  return measure(() => {
    // The driver's refill: make the next chains available again. The device overwrote each
    // chain's head with a used descriptor, so the head's length comes back too.
    for (let c = 0; c < perStep; c++) {
      const head = slot;
      if (slotsPerChain > 1 || shape === 'indirect') view.setUint32(head * 16 + 8, headLength[head]!, true);
      for (let k = slotsPerChain - 1; k >= 0; k--) {
        const s = head + k;
        view.setUint16(s * 16 + 14, baseFlags[s]! | (wrap ? 0x80 : 0x8000), true);
      }
      slot += slotsPerChain;
      if (slot === QUEUE_SIZE) {
        slot = 0;
        wrap ^= 1;
      }
    }
    for (let i = 0; i < perStep; i++) {
      const chain = queue.pop()!;
      queue.addUsed(chain, written);
      if (recycle) queue.recycle(chain);
    }
    queue.publishUsed();
  }, perStep);
}

// --- bounds -----------------------------------------------------------------------------

/**
 * The bare loop: one DataView over one ArrayBuffer, no classes, no checks, no fences. Pop
 * (read avail idx and the ring entry), read the descriptor's fields, write the used
 * element, publish used.idx per 64.
 */
function benchBareSplit(): number {
  const buffer = new ArrayBuffer(0x8000);
  const view = new DataView(buffer);
  const avail = QUEUE_SIZE * 16;
  const used = 0x4000;
  for (let i = 0; i < QUEUE_SIZE; i++) {
    view.setUint32(i * 16 + 8, BUFFER, true);
    view.setUint16(i * 16 + 12, 2, true);
    view.setUint16(avail + 4 + i * 2, i, true);
  }
  let availIdx = 0;
  let nextAvail = 0;
  let usedIdx = 0;
  let sink = 0;
  const rate = measure(() => {
    availIdx = (availIdx + 64) & 0xffff;
    view.setUint16(avail + 2, availIdx, true);
    const idx = view.getUint16(avail + 2, true);
    while (nextAvail !== idx) {
      const head = view.getUint16(avail + 4 + (nextAvail & (QUEUE_SIZE - 1)) * 2, true);
      const at = head * 16;
      const low = view.getUint32(at, true);
      const high = view.getUint32(at + 4, true);
      const length = view.getUint32(at + 8, true);
      const flags = view.getUint16(at + 12, true);
      sink = (sink + low + high + flags) | 0;
      const slot = used + 4 + (usedIdx & (QUEUE_SIZE - 1)) * 8;
      view.setUint32(slot, head, true);
      view.setUint32(slot + 4, length, true);
      usedIdx = (usedIdx + 1) & 0xffff;
      nextAvail = (nextAvail + 1) & 0xffff;
    }
    view.setUint16(used + 2, usedIdx, true);
  }, 64);
  if (sink === 42) console.log('');
  return rate;
}

/** The same bare loop over a packed ring (flags checked with the wrap counter, used written in place). */
function benchBarePacked(): number {
  const view = new DataView(new ArrayBuffer(QUEUE_SIZE * 16));
  for (let i = 0; i < QUEUE_SIZE; i++) {
    view.setUint32(i * 16 + 8, BUFFER, true);
    view.setUint16(i * 16 + 12, i, true);
  }
  let driverSlot = 0;
  let driverWrap = 1;
  let next = 0;
  let wrap = 1;
  let sink = 0;
  const rate = measure(() => {
    for (let c = 0; c < 64; c++) {
      view.setUint16(driverSlot * 16 + 14, 2 | (driverWrap ? 0x80 : 0x8000), true);
      if (++driverSlot === QUEUE_SIZE) {
        driverSlot = 0;
        driverWrap ^= 1;
      }
    }
    let first = -1;
    let firstFlags = 0;
    for (let c = 0; c < 64; c++) {
      const at = next * 16;
      const flags = view.getUint16(at + 14, true);
      if (((flags >> 7) & 1) !== wrap || ((flags >> 15) & 1) === wrap) break;
      const low = view.getUint32(at, true);
      const high = view.getUint32(at + 4, true);
      const length = view.getUint32(at + 8, true);
      const id = view.getUint16(at + 12, true);
      sink = (sink + low + high) | 0;
      view.setUint32(at + 8, length, true);
      view.setUint16(at + 12, id, true);
      const used = wrap ? 0x8080 : 0;
      if (first < 0) {
        first = at;
        firstFlags = used;
      } else view.setUint16(at + 14, used, true);
      if (++next === QUEUE_SIZE) {
        next = 0;
        wrap ^= 1;
      }
    }
    view.setUint16(first + 14, firstFlags, true);
  }, 64);
  if (sink === 42) console.log('');
  return rate;
}

/**
 * memcpy of the ring bytes one chain makes the device touch: its descriptors (16 B each,
 * plus the indirect table), the avail entry (2 B) and the used element (8 B); one
 * `TypedArray.set` per batch.
 */
function benchMemcpy(shape: Shape, batch: number): number {
  const perChain = 16 * DESCRIPTORS[shape] + (shape === 'indirect' ? 16 : 0) + 2 + 8;
  const source = new Uint8Array(perChain * 64 * 2);
  const target = new Uint8Array(perChain * 64 * 2);
  let flip = 0;
  return measure(() => {
    flip ^= 1;
    target.set(source.subarray(flip * perChain * batch, (flip + 1) * perChain * batch));
  }, batch);
}

// --- run --------------------------------------------------------------------------------
// Each measurement runs in a fresh worker thread of this one process: a device process runs
// one ring format with its own JIT state, and measuring every scenario on one isolate would
// let the type feedback of earlier scenarios (other ring, other chain shapes) slow later ones.

type Job =
  | { kind: 'bare-split' | 'bare-packed' }
  | { kind: 'split' | 'packed'; shape: Shape; batch: number; recycle: boolean }
  | { kind: 'memcpy'; shape: Shape; batch: number };

function runJob(job: Job): number {
  switch (job.kind) {
    case 'bare-split':
      return benchBareSplit();
    case 'bare-packed':
      return benchBarePacked();
    case 'split':
      return benchSplit(job.shape, job.batch, job.recycle);
    case 'packed':
      return benchPacked(job.shape, job.batch, job.recycle);
    case 'memcpy':
      return benchMemcpy(job.shape, job.batch);
  }
}

function inWorker(job: Job): Promise<{ value: number; wall: number }> {
  return new Promise((resolvePromise, reject) => {
    const worker = new Worker(fileURLToPath(new URL('./virtqueue-worker.mjs', import.meta.url)), {
      workerData: job,
    });
    worker.once('message', (value: { value: number; wall: number }) => resolvePromise(value));
    worker.once('error', reject);
    worker.once('exit', (code) => {
      if (code !== 0) reject(new Error(`bench worker exited with ${code}`));
    });
  });
}

async function main(): Promise<void> {
  const results: Result[] = [];
  const table: string[] = [];
  const fmt = (n: number) => `${(n / 1e6).toFixed(1)} M`;

  const bareSplit = (await inWorker({ kind: 'bare-split' })).value;
  const barePacked = (await inWorker({ kind: 'bare-packed' })).value;
  results.push({ name: 'bare-loop split 1-desc batch 64', value: Math.round(bareSplit), unit: 'chains/s' });
  results.push({ name: 'bare-loop packed 1-desc batch 64', value: Math.round(barePacked), unit: 'chains/s' });
  table.push(`| bare loop (DataView, no checks) | split | 1-desc | 64 | ${fmt(bareSplit)} | | | |`);
  table.push(`| bare loop (DataView, no checks) | packed | 1-desc | 64 | ${fmt(barePacked)} | | | |`);
  console.log(`bare loop: split ${fmt(bareSplit)} chains/s, packed ${fmt(barePacked)} chains/s`);

  const shapes: Shape[] = ['single', 'four', 'indirect'];
  const label: Record<Shape, string> = { single: '1-desc', four: '4-desc', indirect: 'indirect(4)' };
  const split: Record<string, number> = {};
  const scenarios: { ring: 'split' | 'packed'; shape: Shape; batch: number; recycle: boolean }[] = [];
  for (const ring of ['split', 'packed'] as const) {
    for (const shape of shapes)
      for (const batch of [1, 64]) scenarios.push({ ring, shape, batch, recycle: true });
    // The same without recycling chain objects: one allocation per chain.
    scenarios.push({ ring, shape: 'single', batch: 64, recycle: false });
  }
  const onlyIndex = process.argv.indexOf('--only');
  const only = onlyIndex > 0 ? process.argv[onlyIndex + 1] : undefined;
  for (const { ring, shape, batch, recycle } of scenarios) {
    if (only && !`${ring} ${label[shape]} batch ${batch}${recycle ? '' : ' no-recycle'}`.includes(only))
      continue;
    const { value, wall } = await inWorker({ kind: ring, shape, batch, recycle });
    const memcpy = (await inWorker({ kind: 'memcpy', shape, batch })).value;
    const key = `${shape}/${batch}/${recycle}`;
    if (ring === 'split') split[key] = value;
    const name = `${ring} ${label[shape]} batch ${batch}${recycle ? '' : ' no-recycle'}`;
    results.push({
      name,
      value: Math.round(value),
      unit: 'chains/s',
      bound: { name: 'memcpy', value: Math.round(memcpy) },
    });
    const relation =
      ring === 'split'
        ? `${(bareSplit / value).toFixed(2)}x bare`
        : `${((split[key] ?? value) / value).toFixed(2)}x split`;
    table.push(
      `| virtqueue${recycle ? '' : ' (no recycle)'} | ${ring} | ${label[shape]} | ${batch} | ${fmt(value)} | ${fmt(wall)} | ${fmt(memcpy)} | ${relation} |`,
    );
    console.log(
      `${name.padEnd(44)} ${fmt(value).padStart(9)} chains/s   memcpy ${fmt(memcpy)}   ${relation}`,
    );
  }

  function targets(): string[] {
    const splitRate = split['single/64/true'];
    const packedRate = results.find((r) => r.name === 'packed 1-desc batch 64')?.value;
    if (splitRate === undefined || packedRate === undefined)
      return ['Targets: not all scenarios ran (--only).'];
    const ratio = splitRate / packedRate;
    return [
      `Target 1, split 1-desc batch 64 >= 50 M chains/s per core: ${fmt(splitRate)} (${splitRate >= 50e6 ? 'met' : 'missed'}); ${(bareSplit / splitRate).toFixed(2)}x the bare loop.`,
      `Target 2, packed within 1.5x of split (1-desc batch 64): ${ratio.toFixed(2)}x (${ratio <= 1.5 ? 'met' : 'missed'}); the bare loops alone are ${(bareSplit / barePacked).toFixed(2)}x apart (a packed driver rewrites every descriptor's flags and the device every used descriptor's).`,
    ];
  }

  const load = loadavg()
    .map((n) => n.toFixed(1))
    .join(' ');
  const machine = `${cpus()[0]?.model ?? 'unknown cpu'}, ${cpus().length} cores (shared; load average at the end ${load}), ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}, ${platform()} ${arch()}`;
  const date = new Date().toISOString();
  const here = dirname(fileURLToPath(import.meta.url));
  const outIndex = process.argv.indexOf('--out');
  const outDir = outIndex > 0 ? resolve(process.argv[outIndex + 1]!) : join(here, '../../../bench/results');
  writeFileSync(
    join(outDir, 'transport-virtqueue.json'),
    `${JSON.stringify({ machine, date, results }, null, 2)}\n`,
  );
  writeFileSync(
    join(outDir, 'transport-virtqueue.md'),
    [
      '# transport: virtqueue device-side throughput',
      '',
      `Machine: ${machine}. Date: ${date}.`,
      `One process (\`pnpm bench\` in packages/transport); each scenario in a fresh worker thread; one core; best of ${ROUNDS} rounds of ${ROUND_MS} ms after a warm-up.`,
      '',
      'Each chain: `pop` + `addUsed` + `recycle`, one `publishUsed` per batch (batch 1: per chain). Buffers are 64 B; 4-desc and indirect chains are 2 readable + 2 writable descriptors.',
      'The driver side refills cheaply: split rings only move avail.idx over a pre-built table; packed rings flip the flags (and restore the head length) of each chain.',
      'memcpy bound: one `TypedArray.set` per batch of the ring bytes a chain touches (descriptors, indirect table, avail entry, used element).',
      'Bare loop: the same ring fields read and written through one DataView over one ArrayBuffer, no checks, no fences, no objects, used.idx published per 64.',
      '',
      ...targets(),
      '',
      '| what | ring | chain | batch | chains/s per core (CPU time) | chains/s (wall clock) | memcpy bound | relation |',
      '|---|---|---|---|---|---|---|---|',
      ...table,
      '',
    ].join('\n'),
  );
}

if (isMainThread) {
  await main();
} else {
  const value = runJob(workerData as Job);
  parentPort!.postMessage({ value, wall: lastWallRate });
}
