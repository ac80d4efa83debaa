import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestMemory } from '@xvio/grant-pool';
import {
  CORE_FEATURES,
  DeviceController,
  hasFeature,
  STATUS_ACKNOWLEDGE,
  STATUS_DEVICE_NEEDS_RESET,
  STATUS_DRIVER,
  STATUS_DRIVER_OK,
  STATUS_FEATURES_OK,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
} from '@xvio/transport';
import { MockSplitQueue } from '@xvio/transport/testing';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createRngDevice, RateLimiter, type RngClock, type RngDevice } from './rng-device.js';
import { SeededEntropySource } from './rng-host.js';
import { RNG_REQUEST_QUEUE, VIRTIO_ID_ENTROPY } from './rng-wire.js';

interface Setup {
  device: RngDevice;
  controller: DeviceController;
  driver: MockSplitQueue;
  memory: ReturnType<typeof createTestMemory>;
  interrupts: number[];
  kick(): void;
}

/** Brings a device to DRIVER_OK the way a driver does (spec 3.1.1), over a mock split ring. */
function start(
  device: RngDevice,
  options: { size?: number; memorySize?: number; readOnly?: { offset: number; length: number }[] } = {},
): Setup {
  const memory = createTestMemory(options.memorySize ?? 4 << 20, { readOnly: options.readOnly ?? [] });
  const size = options.size ?? 128;
  const driver = new MockSplitQueue(memory, { size, eventIdx: true, indirect: true, seed: 7 });
  const interrupts: number[] = [];
  const controller = new DeviceController(device, {
    memory,
    hooks: { interruptQueue: (queue) => interrupts.push(queue), interruptConfig: () => {} },
  });
  controller.setStatus(STATUS_ACKNOWLEDGE);
  controller.setStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER);
  controller.setDriverFeatures(VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX | VIRTIO_F_INDIRECT_DESC);
  expect(controller.setStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK)).toBe(true);
  Object.assign(controller.queue(RNG_REQUEST_QUEUE)!, {
    size,
    desc: driver.descAddress,
    driver: driver.availAddress,
    device: driver.usedAddress,
    ready: true,
  });
  controller.setStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
  expect(controller.running).toBe(true);
  return { device, controller, driver, memory, interrupts, kick: () => controller.kick(RNG_REQUEST_QUEUE) };
}

/** The bytes a seeded source yields, for comparison. */
function seededBytes(seed: number, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  new SeededEntropySource({ seed }).read(bytes);
  return bytes;
}

/** Byte equality without the deep-diff cost of toEqual on megabytes. */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(
    Buffer.from(b.buffer, b.byteOffset, b.byteLength),
  );
}

afterEach(() => {
  vi.useRealTimers();
});

describe('RngDevice identity', () => {
  it('is an entropy device with no config space that offers the core ring features', () => {
    const device = createRngDevice();
    expect(device.deviceType).toBe(VIRTIO_ID_ENTROPY);
    expect(device.configSize).toBe(0);
    expect(device.queueMaxSizes).toEqual([256]);
    expect(hasFeature(device.features, VIRTIO_F_VERSION_1)).toBe(true);
    expect(hasFeature(device.features, VIRTIO_F_EVENT_IDX)).toBe(true);
    expect(hasFeature(device.features, VIRTIO_F_INDIRECT_DESC)).toBe(true);
    expect(hasFeature(device.features, VIRTIO_F_RING_PACKED)).toBe(
      hasFeature(CORE_FEATURES, VIRTIO_F_RING_PACKED),
    );
  });
});

describe('RngDevice requests', () => {
  it('fills a chain of many small descriptors byte for byte, in order', () => {
    const device = createRngDevice({ source: 'seeded:42' });
    const { driver, memory, kick, interrupts } = start(device);
    const lengths = Array.from({ length: 100 }, (_, i) => 1 + ((i * 7) % 37));
    const total = lengths.reduce((a, b) => a + b, 0);
    const { head, buffers } = driver.addChain(
      lengths.map((length) => ({ writable: true as const, length })),
      { indirect: true },
    );
    kick();
    expect(driver.takeUsed()).toEqual([{ id: head, length: total }]);
    const got = new Uint8Array(total);
    let at = 0;
    for (const buffer of buffers) {
      got.set(memory.bytes.subarray(buffer.offset, buffer.offset + buffer.length), at);
      at += buffer.length;
    }
    expect(got).toEqual(seededBytes(42, total));
    expect(interrupts).toEqual([RNG_REQUEST_QUEUE]);
    expect(device.metrics()).toMatchObject({ requests: 1, bytes: total });
  });

  it('fills one huge descriptor completely when the per-request cap allows', () => {
    const size = 3 * 1024 * 1024 + 5;
    const device = createRngDevice({ source: 'seeded:1', maxBytesPerRequest: 4 * 1024 * 1024 });
    const { driver, memory, kick } = start(device, { memorySize: 8 << 20 });
    const { head, buffers } = driver.addChain([{ writable: true, length: size }]);
    kick();
    expect(driver.takeUsed()).toEqual([{ id: head, length: size }]);
    const offset = buffers[0]!.offset;
    expect(sameBytes(memory.bytes.subarray(offset, offset + size), seededBytes(1, size))).toBe(true);
  });

  it('fills one chain of many small descriptors and one huge one, exactly, across the boundary', () => {
    const device = createRngDevice({ source: 'seeded:8', maxBytesPerRequest: 4 * 1024 * 1024 });
    const { driver, memory, kick } = start(device, { memorySize: 8 << 20 });
    const lengths = [...Array.from({ length: 60 }, (_, i) => 1 + (i % 13)), 2 * 1024 * 1024 + 3];
    const total = lengths.reduce((a, b) => a + b, 0);
    const { head, buffers } = driver.addChain(
      lengths.map((length) => ({ writable: true as const, length })),
      { indirect: true },
    );
    kick();
    expect(driver.takeUsed()).toEqual([{ id: head, length: total }]);
    const got = Buffer.concat(
      buffers.map((b) => Buffer.from(memory.bytes.subarray(b.offset, b.offset + b.length))),
    );
    expect(sameBytes(got, seededBytes(8, total))).toBe(true);
  });

  it('caps a huge request at maxBytesPerRequest and leaves the rest of the buffer untouched', () => {
    const device = createRngDevice({ source: 'seeded:3', maxBytesPerRequest: 4096 });
    const { driver, memory, kick } = start(device);
    const { head, buffers } = driver.addChain([{ writable: true, length: 1 << 20 }]);
    kick();
    expect(driver.takeUsed()).toEqual([{ id: head, length: 4096 }]);
    const offset = buffers[0]!.offset;
    expect(memory.bytes.subarray(offset, offset + 4096)).toEqual(seededBytes(3, 4096));
    expect(
      sameBytes(
        memory.bytes.subarray(offset + 4096, offset + (1 << 20)),
        new Uint8Array((1 << 20) - 4096).fill(0xee),
      ),
    ).toBe(true);
  });

  it('serves many requests in one batch with one interrupt, exact lengths each', () => {
    const device = createRngDevice({ source: 'seeded:9' });
    const { driver, kick, interrupts } = start(device);
    const heads = Array.from(
      { length: 64 },
      (_, i) => driver.addChain([{ writable: true, length: i + 1 }]).head,
    );
    kick();
    expect(driver.takeUsed()).toEqual(heads.map((id, i) => ({ id, length: i + 1 })));
    expect(interrupts).toHaveLength(1);
    expect(device.metrics()).toMatchObject({ requests: 64, bytes: (64 * 65) / 2 });
  });

  it('completes a zero-length buffer with 0 (spec 5.4.6.2) and a readable buffer as a bad request', () => {
    const device = createRngDevice({ source: 'seeded:5' });
    const { driver, kick } = start(device);
    const empty = driver.addChain([{ writable: true, length: 0 }]).head;
    const readable = driver.addChain([{ data: Uint8Array.of(1, 2, 3) }, { writable: true, length: 8 }]).head;
    const good = driver.addChain([{ writable: true, length: 8 }]).head;
    kick();
    expect(driver.takeUsed()).toEqual([
      { id: empty, length: 0 },
      { id: readable, length: 0 },
      { id: good, length: 8 },
    ]);
    expect(device.metrics()).toMatchObject({ requests: 3, badRequests: 1, bytes: 8 });
  });

  it('completes a buffer it may not write (read-only grant) with 0, counts it, and keeps running', () => {
    const device = createRngDevice({ source: 'seeded:5' });
    const readOnlyOffset = 3 << 20;
    const { driver, memory, controller, kick } = start(device, {
      readOnly: [{ offset: readOnlyOffset, length: 4096 }],
    });
    const head = driver.size - 1; // a descriptor the mock's allocator hands out last
    driver.writeDescriptor(head, { address: memory.address(readOnlyOffset), length: 64, flags: 2, next: 0 });
    driver.publish(head);
    const good = driver.addChain([{ writable: true, length: 16 }]).head;
    kick();
    expect(driver.takeUsed()).toEqual([
      { id: head, length: 0 },
      { id: good, length: 16 },
    ]);
    expect(memory.bytes.subarray(readOnlyOffset, readOnlyOffset + 64).every((b) => b === 0)).toBe(true);
    expect(device.metrics()).toMatchObject({ faults: 1, bytes: 16 });
    expect(controller.running).toBe(true);
  });

  it('a corrupted ring sets NEEDS_RESET without throwing', () => {
    const device = createRngDevice({ source: 'seeded:5' });
    const { driver, controller, kick } = start(device, { size: 16 });
    driver.setAvailIdx(40); // 2.7.13: more than a queue size ahead
    expect(() => kick()).not.toThrow();
    expect(controller.status & STATUS_DEVICE_NEEDS_RESET).toBe(STATUS_DEVICE_NEEDS_RESET);
    expect(controller.running).toBe(false);
  });
});

describe('RngDevice deferred requests', () => {
  it('keeps requests queued while the source is dry and serves them when it refills', async () => {
    const source = new SeededEntropySource({ seed: 11, budget: 0 });
    const device = createRngDevice({}, { source });
    const { driver, controller, kick } = start(device);
    const first = driver.addChain([{ writable: true, length: 32 }]).head;
    const second = driver.addChain([{ writable: true, length: 32 }]).head;
    kick();
    expect(driver.takeUsed()).toEqual([]);
    expect(device.waiting).toBe('source');
    const queue = controller.runningQueue(RNG_REQUEST_QUEUE)!;
    const popped = queue.stats.popped;
    for (let i = 0; i < 10; i++) kick();
    expect(queue.stats.popped).toBe(popped); // parked: kicks do not re-walk the ring
    source.refill(40);
    await Promise.resolve();
    expect(driver.takeUsed()).toEqual([
      { id: first, length: 32 },
      { id: second, length: 8 },
    ]);
    expect(device.waiting).toBeUndefined(); // the second got 8 bytes: "one or more" (5.4.6.2)
    expect(device.metrics()).toMatchObject({ sourceWaits: 1, bytes: 40, requests: 2 });
  });

  it('forgets a parked wait on reset and on NEEDS_RESET', async () => {
    const source = new SeededEntropySource({ seed: 11, budget: 0 });
    const device = createRngDevice({}, { source });
    const { driver, controller, kick } = start(device);
    driver.addChain([{ writable: true, length: 32 }]);
    kick();
    expect(device.waiting).toBe('source');
    controller.setStatus(0);
    expect(device.waiting).toBeUndefined();
    source.refill(100);
    await Promise.resolve();
    expect(driver.takeUsed()).toEqual([]);
  });
});

describe('RngDevice with a file source', () => {
  it('serves a file until it ends, then keeps requests queued without spinning', async () => {
    const directory = await mkdtemp(join(tmpdir(), 'xvio-rng-'));
    try {
      const path = join(directory, 'pool');
      await writeFile(
        path,
        Uint8Array.from({ length: 100 }, (_, i) => i),
      );
      const device = createRngDevice({ source: { kind: 'file', path, bufferSize: 64 } });
      await device.source.ready();
      const { driver, memory, controller, kick } = start(device);
      const first = driver.addChain([{ writable: true, length: 300 }]);
      kick();
      const used: { id: number; length: number }[] = [];
      while (used.reduce((sum, u) => sum + u.length, 0) < 100) {
        await new Promise((resolve) => setTimeout(resolve, 5));
        used.push(...driver.takeUsed());
        if (used.length > 0 && driver.freeCount === driver.size)
          driver.addChain([{ writable: true, length: 300 }]);
        kick();
      }
      const offset = first.buffers[0]!.offset;
      expect(memory.bytes[offset]).toBe(0);
      expect(used.reduce((sum, u) => sum + u.length, 0)).toBe(100);
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(device.source.error?.code).toBe('source-exhausted');
      const queue = controller.runningQueue(RNG_REQUEST_QUEUE)!;
      const popped = queue.stats.popped;
      kick();
      kick();
      expect(queue.stats.popped).toBe(popped);
      expect(driver.takeUsed()).toEqual([]);
      await device.close();
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  });
});

describe('RngDevice rate limit', () => {
  it('gives exactly maxBytes per period under continuous demand (fake timers)', () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const device = createRngDevice({ source: 'seeded:2', maxBytes: 1000, periodMs: 100 });
    const { driver, kick } = start(device, { size: 256 });
    const delivered = () => driver.takeUsed().reduce((sum, used) => sum + used.length, 0);
    const refill = () => {
      while (driver.freeCount > 0) driver.addChain([{ writable: true, length: 64 }]);
    };
    refill();
    kick();
    expect(delivered()).toBe(1000);
    expect(device.waiting).toBe('rate-limit');
    for (let window = 1; window <= 20; window++) {
      vi.advanceTimersByTime(99);
      expect(delivered()).toBe(0); // nothing before the window ends
      vi.advanceTimersByTime(1);
      expect(delivered()).toBe(1000);
      refill();
    }
    expect(device.metrics()).toMatchObject({ bytes: 21_000, rateLimitedWaits: 21 });
  });

  it('does not bank quota while idle, and a reset does not refill it', () => {
    vi.useFakeTimers({ now: 0 });
    const device = createRngDevice({ source: 'seeded:2', maxBytes: 100, periodMs: 1000 });
    const { driver, controller, kick } = start(device);
    driver.addChain([{ writable: true, length: 80 }]);
    kick();
    vi.advanceTimersByTime(500);
    driver.takeUsed();
    // A driver reset must not buy a fresh window.
    controller.setStatus(0);
    const again = start(device);
    again.driver.addChain([{ writable: true, length: 80 }]);
    again.kick();
    expect(again.driver.takeUsed()).toEqual([{ id: expect.any(Number), length: 20 }]);
    vi.advanceTimersByTime(10_000); // idle for ten periods
    again.driver.takeUsed();
    again.driver.addChain([{ writable: true, length: 300 }]);
    again.kick();
    expect(again.driver.takeUsed()[0]!.length).toBe(100);
  });

  it('clears its timer on reset', () => {
    vi.useFakeTimers();
    const device = createRngDevice({ source: 'seeded:2', maxBytes: 10, periodMs: 1000 });
    const { driver, controller, kick } = start(device);
    driver.addChain([{ writable: true, length: 64 }]);
    driver.addChain([{ writable: true, length: 64 }]);
    kick();
    expect(vi.getTimerCount()).toBe(1);
    controller.setStatus(0);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('accepts an injected clock', () => {
    let now = 0;
    const timers: { at: number; callback: () => void }[] = [];
    const clock: RngClock = {
      now: () => now,
      setTimeout: (callback, ms) => {
        const timer = { at: now + ms, callback };
        timers.push(timer);
        return timer;
      },
      clearTimeout: (handle) => {
        timers.splice(timers.indexOf(handle as (typeof timers)[number]), 1);
      },
    };
    const device = createRngDevice({ source: 'seeded:2', maxBytes: 50, periodMs: 10 }, { clock });
    const { driver, kick } = start(device);
    driver.addChain([{ writable: true, length: 64 }]);
    driver.addChain([{ writable: true, length: 64 }]);
    kick();
    expect(driver.takeUsed().map((used) => used.length)).toEqual([50]);
    expect(timers.map((timer) => timer.at)).toEqual([10]);
    now = 10;
    timers.shift()!.callback();
    expect(driver.takeUsed().map((used) => used.length)).toEqual([50]);
  });
});

describe('RateLimiter', () => {
  it('never allows more than maxBytes inside one window', () => {
    const limiter = new RateLimiter(100, 10);
    let taken = 0;
    for (let t = 0; t < 10; t++) {
      const n = limiter.allowance(t);
      limiter.take(t, n);
      taken += n;
    }
    expect(taken).toBe(100);
    expect(limiter.waitMs(9)).toBe(1);
    expect(limiter.allowance(10)).toBe(100);
  });
});
