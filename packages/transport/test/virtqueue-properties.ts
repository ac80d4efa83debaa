// Properties of the split and packed queues under hostile and well-behaved drivers, shared
// by the property tests (small budget, every CI run) and `pnpm fuzz` (large budget).
//
// Hostile: random descriptor tables, indices, flags and event fields, driver rewrites in the
// middle of device operations, and random device call sequences. Properties: only typed
// errors (VirtqueueError, GuestMemoryError) ever escape; every call terminates; the device
// writes only its own ring areas (checked byte for byte); a broken queue writes nothing more;
// split used.idx moves only by what publishUsed returned.
// Well-behaved: random valid chains (direct and indirect, random gaps) and random device
// sequences. Properties: the driver sees exactly the published elements, each id one that
// was popped and not yet returned, lengths never above the chain's writable bytes.

import { createTestMemory, GuestMemoryError, type TestMemory } from '@xvio/grant-pool';
import fc from 'fast-check';
import type { DescriptorChain } from '../src/descriptor-chain.js';
import { PackedQueue } from '../src/packed-queue.js';
import { SplitQueue } from '../src/split-queue.js';
import { MockPackedQueue } from '../src/testing/mock-packed-queue.js';
import { MockSplitQueue } from '../src/testing/mock-split-queue.js';
import { VirtqueueError } from '../src/virtio-errors.js';
import type { Virtqueue } from '../src/virtqueue.js';

const MEMORY_SIZE = 0x6000;
const HOLE = { offset: 0x4000, length: 0x1000 };
const DESC = 0x0;
const DRIVER = 0x400;
const DEVICE = 0x800;
const TABLES = 0x2000; // indirect tables the hostile driver points at
const TABLE_STRIDE = 0x100;

/** Addresses a hostile descriptor may carry: valid, in the hole, past the end, wrapping, grant-like. */
const address = fc.oneof(
  fc.integer({ min: 0x1000, max: 0x3fff }).map(BigInt),
  fc.constantFrom(
    BigInt(TABLES),
    BigInt(TABLES + TABLE_STRIDE),
    BigInt(HOLE.offset + 8),
    BigInt(MEMORY_SIZE - 8),
    BigInt(MEMORY_SIZE),
    0xffff_ffff_ffff_fff0n,
    (1n << 63n) | 0x1000n,
  ),
  fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
);
const length = fc.oneof(
  fc.integer({ min: 0, max: 64 }),
  fc.constantFrom(16, 32, 48, 0xffff_ffff, 0x8000_0000),
  fc.integer({ min: 0, max: 0xffff_ffff }),
);
const rawDescriptor = fc.record({
  address,
  length,
  // Mostly the meaningful bits (NEXT, WRITE, INDIRECT, AVAIL, USED), sometimes anything.
  flags: fc.oneof(
    fc.integer({ min: 0, max: 7 }),
    fc.integer({ min: 0, max: 7 }).map((f) => f | 0x80),
    fc.integer({ min: 0, max: 7 }).map((f) => f | 0x8000),
    fc.integer({ min: 0, max: 0xffff }),
  ),
  next: fc.oneof(fc.integer({ min: 0, max: 20 }), fc.integer({ min: 0, max: 0xffff })),
});
type Raw = { address: bigint; length: number; flags: number; next: number };

function writeRaw(memory: TestMemory, offset: number, raw: Raw, packed: boolean): void {
  const view = memory.dataView;
  view.setBigUint64(offset, raw.address, true);
  view.setUint32(offset + 8, raw.length, true);
  // split: flags @12, next @14; packed: id @12, flags @14
  view.setUint16(offset + 12, packed ? raw.next : raw.flags, true);
  view.setUint16(offset + 14, packed ? raw.flags : raw.next, true);
}

const deviceOp = fc.oneof(
  fc.constant({ op: 'pop' as const }),
  fc.constant({ op: 'pop' as const }),
  fc.record({ op: fc.constant('addUsed' as const), which: fc.nat(), length: fc.nat() }),
  fc.constant({ op: 'publish' as const }),
  fc.constant({ op: 'undo' as const }),
  fc.constant({ op: 'notify' as const }),
  fc.constant({ op: 'enable' as const }),
  fc.constant({ op: 'disable' as const }),
  fc.constant({ op: 'has' as const }),
  fc.record({ op: fc.constant('recycle' as const), which: fc.nat() }),
  fc.record({ op: fc.constant('map' as const), which: fc.nat() }),
  fc.constant({ op: 'state' as const }),
);
type DeviceOp =
  | { op: 'pop' | 'publish' | 'undo' | 'notify' | 'enable' | 'disable' | 'has' | 'state' }
  | { op: 'addUsed'; which: number; length: number }
  | { op: 'recycle' | 'map'; which: number };

function isTyped(error: unknown): boolean {
  return VirtqueueError.isInstance(error) || GuestMemoryError.isInstance(error);
}

const lastPopped = new WeakMap<DescriptorChain[], DescriptorChain>();

/** Runs one device operation; returns how many elements a publish made visible. */
function runDeviceOp(queue: Virtqueue, memory: TestMemory, op: DeviceOp, popped: DescriptorChain[]): number {
  // undoPop gives back the chain popped last, so it is only valid right after a pop.
  const justPopped = lastPopped.get(popped);
  lastPopped.delete(popped);
  switch (op.op) {
    case 'pop': {
      const chain = queue.pop();
      if (chain) {
        popped.push(chain);
        lastPopped.set(popped, chain);
      }
      return 0;
    }
    case 'addUsed': {
      const chain = popped.splice(op.which % Math.max(popped.length, 1), 1)[0];
      if (chain) queue.addUsed(chain, op.length);
      return 0;
    }
    case 'publish':
      return queue.publishUsed();
    case 'undo':
      if (justPopped !== undefined && popped[popped.length - 1] === justPopped) {
        popped.pop();
        queue.undoPop();
      }
      return 0;
    case 'notify':
      queue.needsNotification();
      return 0;
    case 'enable':
      queue.enableNotification();
      return 0;
    case 'disable':
      queue.disableNotification();
      return 0;
    case 'has':
      queue.hasAvailable();
      return 0;
    case 'state':
      queue.getState();
      return 0;
    case 'recycle': {
      // Only chains the device is done with: here, one it completes with length 0 first.
      const chain = popped.splice(op.which % Math.max(popped.length, 1), 1)[0];
      if (chain) {
        queue.addUsed(chain, 0);
        queue.recycle?.(chain);
      }
      return 0;
    }
    case 'map': {
      const chain = popped[op.which % Math.max(popped.length, 1)];
      if (chain) memory.map(chain.ranges()).release();
      return 0;
    }
  }
}

/** Bytes that differ between `now` and `before` outside [allowedStart, allowedEnd) ranges. */
function changedOutside(now: Uint8Array, before: Uint8Array, allowed: readonly [number, number][]): number {
  let cursor = 0;
  const sorted = [...allowed].sort((a, b) => a[0] - b[0]);
  for (const [start, end] of [...sorted, [now.length, now.length] as [number, number]]) {
    if (
      start > cursor &&
      Buffer.compare(
        Buffer.from(now.subarray(cursor, start)),
        Buffer.from(before.subarray(cursor, start)),
      ) !== 0
    ) {
      for (let i = cursor; i < start; i++) if (now[i] !== before[i]) return i;
    }
    cursor = Math.max(cursor, end);
  }
  return -1;
}

const sizeOf = (packed: boolean) =>
  packed ? fc.integer({ min: 1, max: 16 }) : fc.constantFrom(1, 2, 4, 8, 16);

/** Hostile driver, split or packed. */
export function hostileProperty(packed: boolean) {
  const driverOp = fc.oneof(
    fc.record({ op: fc.constant('desc' as const), index: fc.nat(), raw: rawDescriptor }),
    fc.record({ op: fc.constant('table' as const), table: fc.nat(1), index: fc.nat(15), raw: rawDescriptor }),
    fc.record({
      op: fc.constant('avail' as const),
      heads: fc.array(fc.integer({ min: 0, max: 20 }), { maxLength: 20 }),
    }),
    fc.record({ op: fc.constant('availIdx' as const), value: fc.integer({ min: 0, max: 0xffff }) }),
    fc.record({
      op: fc.constant('driverWord' as const),
      at: fc.nat(40),
      value: fc.integer({ min: 0, max: 0xffff }),
    }),
  );
  return fc.property(
    sizeOf(packed),
    fc.boolean(),
    fc.boolean(),
    fc.array(rawDescriptor, { minLength: 16, maxLength: 16 }),
    fc.array(rawDescriptor, { minLength: 32, maxLength: 32 }),
    fc.array(fc.oneof(driverOp, deviceOp, deviceOp), { maxLength: 40 }),
    (size, eventIdx, indirect, ring, tables, ops) => {
      const memory = createTestMemory(MEMORY_SIZE, { holes: [HOLE] });
      for (const [i, raw] of ring.slice(0, size).entries()) writeRaw(memory, DESC + i * 16, raw, packed);
      for (const [i, raw] of tables.entries()) writeRaw(memory, TABLES + i * 16, raw, packed);
      const config = {
        size,
        maxSize: 16,
        desc: BigInt(DESC),
        driver: BigInt(DRIVER),
        device: BigInt(DEVICE),
        eventIdx,
        indirect,
      };
      const queue: Virtqueue = packed ? new PackedQueue(memory, config) : new SplitQueue(memory, config);
      // What the device may write: split, the used ring; packed, the descriptor ring and the
      // device event structure.
      const allowed: [number, number][] = packed
        ? [
            [DESC, DESC + size * 16],
            [DEVICE, DEVICE + 4],
          ]
        : [[DEVICE, DEVICE + 6 + 8 * size]];
      const popped: DescriptorChain[] = [];
      let availIdx = 0;
      let published = 0;
      let before = memory.bytes.slice();
      for (const op of ops) {
        if (
          op.op === 'desc' ||
          op.op === 'table' ||
          op.op === 'avail' ||
          op.op === 'availIdx' ||
          op.op === 'driverWord'
        ) {
          const view = memory.dataView;
          if (op.op === 'desc') writeRaw(memory, DESC + (op.index % size) * 16, op.raw, packed);
          else if (op.op === 'table')
            writeRaw(memory, TABLES + op.table * TABLE_STRIDE + op.index * 16, op.raw, packed);
          else if (op.op === 'avail' && !packed) {
            for (const head of op.heads) {
              view.setUint16(DRIVER + 4 + 2 * (availIdx % size), head, true);
              availIdx = (availIdx + 1) & 0xffff;
            }
            view.setUint16(DRIVER + 2, availIdx, true);
          } else if (op.op === 'availIdx' && !packed) {
            availIdx = op.value;
            view.setUint16(DRIVER + 2, op.value, true);
          } else if (op.op === 'driverWord') {
            // Avail flags / used_event (split) or the driver event structure (packed).
            const at = packed ? (op.at % 2) * 2 : op.at % (6 + 2 * size - 1);
            view.setUint16(DRIVER + (at & ~1), op.value, true);
          }
          before = memory.bytes.slice();
          continue;
        }
        const wasBroken = queue.broken !== undefined;
        let count = 0;
        try {
          count = runDeviceOp(queue, memory, op, popped);
        } catch (error) {
          if (!isTyped(error)) throw error;
          if (VirtqueueError.isInstance(error) && queue.broken === undefined) {
            throw new Error(`a VirtqueueError (${error.code}) escaped without breaking the queue`);
          }
        }
        published += count;
        const changed = changedOutside(memory.bytes, before, wasBroken ? [] : allowed);
        if (changed >= 0)
          throw new Error(`${op.op} wrote byte 0x${changed.toString(16)} outside the device's areas`);
        if (!packed) {
          const usedIdx = memory.dataView.getUint16(DEVICE + 2, true);
          if (usedIdx !== (published & 0xffff))
            throw new Error(`used.idx ${usedIdx} after ${published} published`);
        }
        before = memory.bytes.slice();
      }
    },
  );
}

/** Well-behaved driver, split or packed: the driver sees exactly what was published. */
export function accountingProperty(packed: boolean) {
  const driverOp = fc.record({
    op: fc.constant('add' as const),
    buffers: fc.array(fc.record({ writable: fc.boolean(), length: fc.integer({ min: 1, max: 64 }) }), {
      minLength: 1,
      maxLength: 4,
    }),
    indirect: fc.boolean(),
  });
  return fc.property(
    sizeOf(packed),
    fc.boolean(),
    fc.integer({ min: 1, max: 1 << 30 }),
    fc.array(fc.oneof(driverOp, deviceOp), { maxLength: 60 }),
    (size, eventIdx, seed, ops) => {
      const memory = createTestMemory(0x10000);
      const options = { size, eventIdx, indirect: true, seed };
      const driver = packed ? new MockPackedQueue(memory, options) : new MockSplitQueue(memory, options);
      const queue: Virtqueue = packed
        ? new PackedQueue(memory, driver.config)
        : new SplitQueue(memory, driver.config);
      const popped: DescriptorChain[] = [];
      /** Writable bytes of each buffer id the device holds (popped, not yet returned). */
      const inFlight = new Map<number, number>();
      let published = 0;
      let seen = 0;
      for (const op of ops) {
        if (op.op === 'add') {
          // A driver never makes a chain (indirect tables included) longer than the queue (2.7.5.3.1).
          const buffers = op.buffers.slice(0, size).sort((a, b) => Number(a.writable) - Number(b.writable));
          try {
            driver.addChain(
              buffers.map((b) =>
                b.writable
                  ? { writable: true as const, length: b.length }
                  : { data: new Uint8Array(b.length) },
              ),
              { indirect: op.indirect },
            );
          } catch (error) {
            if (!(error instanceof Error) || !error.message.startsWith('mock queue')) throw error;
          }
          continue;
        }
        if (op.op === 'recycle') continue; // covered by the hostile property
        const count = popped.length;
        const last = popped[count - 1];
        published += runDeviceOp(queue, memory, op, popped);
        if (op.op === 'pop' && popped.length > count) {
          const chain = popped[popped.length - 1]!;
          if (inFlight.has(chain.head)) throw new Error(`id ${chain.head} popped twice`);
          inFlight.set(chain.head, chain.writableLength);
        } else if (op.op === 'undo' && popped.length < count) {
          inFlight.delete(last!.head);
        }
        if (queue.broken) throw new Error(`a well-behaved driver broke the queue: ${queue.broken.message}`);
        for (const used of driver.takeUsed()) {
          const writable = inFlight.get(used.id);
          if (writable === undefined) throw new Error(`used id ${used.id} was not in flight`);
          if (used.length > writable) throw new Error(`used length ${used.length} > writable ${writable}`);
          inFlight.delete(used.id);
          seen++;
        }
        if (seen !== published)
          throw new Error(`driver saw ${seen} used elements, device published ${published}`);
      }
    },
  );
}

/** Every property, for the tests and the fuzz script. */
export const properties: { name: string; property: () => fc.IProperty<unknown[]> }[] = [
  { name: 'split ring, hostile driver', property: () => hostileProperty(false) as fc.IProperty<unknown[]> },
  { name: 'packed ring, hostile driver', property: () => hostileProperty(true) as fc.IProperty<unknown[]> },
  {
    name: 'split ring, used elements match what was published',
    property: () => accountingProperty(false) as fc.IProperty<unknown[]>,
  },
  {
    name: 'packed ring, used elements match what was published',
    property: () => accountingProperty(true) as fc.IProperty<unknown[]>,
  },
];
