import { GuestMemoryError } from '@xvio/grant-pool';
import { afterEach, describe, expect, it } from 'vitest';
import { RING_EVENT_FLAGS_DESC } from '../packed-ring-wire.js';
import type { VirtioDevice } from '../virtio-device.js';
import { VirtioError } from '../virtio-errors.js';
import {
  CORE_FEATURES,
  hasFeature,
  RESERVED_FEATURE_MASK,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
} from '../virtio-features.js';
import { STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK } from '../virtio-status.js';
import { type ActivateForTestOptions, activateForTest, type TestHarness } from './activate-for-test.js';
import { type MalformedRingCase, packedMalformedCases, splitMalformedCases } from './malformed-rings.js';
import type { MockBuffer, UsedElement } from './mock-buffers.js';
import type { PlacedBuffer } from './mock-split-queue.js';

/** How the suite drives real I/O on one of the device's queues. */
export interface ConformanceExercise {
  /** The queue a valid request goes to. Default 0. */
  queue?: number;
  /** The buffers of one valid request, readable first, as a driver would add them. */
  request(): MockBuffer[];
  /**
   * Called after each activation, before requests (e.g. give the in-memory host data to
   * serve). The host must then be able to serve any number of requests: one test sends 40.
   */
  prepare?(harness: TestHarness): void | Promise<void>;
  /** Checks one completed request (its used element and where its buffers were placed). */
  check?(used: UsedElement, buffers: PlacedBuffer[], harness: TestHarness): void;
}

export interface ConformanceOptions {
  /** Names the describe block. */
  name: string;
  /** A fresh, unactivated device; called once per test. */
  create: () => VirtioDevice;
  /**
   * A valid request for one queue. Default: queue 0, 16 readable bytes then 64 writable
   * bytes. A device that serves requests only when its host has something must `prepare` it.
   */
  exercise?: ConformanceExercise;
  /** Ring formats to run. Default: split, plus packed when the device offers VIRTIO_F_RING_PACKED. */
  rings?: readonly ('split' | 'packed')[];
  /** Extra activation options (queue sizes, controller options). */
  activation?: Omit<ActivateForTestOptions, 'packed'>;
  /** How long to wait for the device to complete a request. Default 2000 ms. */
  timeoutMs?: number;
}

const defaultExercise: ConformanceExercise = {
  queue: 0,
  request: () => [{ data: new Uint8Array(16).fill(0x5a) }, { writable: true, length: 64 }],
};

function faultCode(fault: unknown): string | undefined {
  if (VirtioError.isInstance(fault) || GuestMemoryError.isInstance(fault)) return fault.code;
  return undefined;
}

/** Wraps a device so its offer carries extra feature bits (the controller must mask unknown ones). */
function withExtraFeatures(device: VirtioDevice, extra: bigint): VirtioDevice {
  return new Proxy(device, {
    get(target, property) {
      if (property === 'features') return target.features | extra;
      const value = Reflect.get(target, property, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

/**
 * Registers vitest tests that check a device against the virtio rules every device must
 * follow, through a `DeviceController` and mock driver queues:
 * feature negotiation (VERSION_1 required, unknown bits masked, FEATURES_OK refused for bits
 * not offered), the status state machine, real requests (`exercise`) with interrupts, reset
 * during in-flight I/O, every malformed ring -> DEVICE_NEEDS_RESET plus a configuration
 * interrupt and never a throw, containment, and notification suppression — for split and
 * packed rings.
 *
 * ```ts
 * runConformanceSuite({ name: 'rng', create: () => new RngDevice(new NullEntropy()) });
 * ```
 */
export function runConformanceSuite(options: ConformanceOptions): void {
  const exercise = options.exercise ?? defaultExercise;
  const queueIndex = exercise.queue ?? 0;
  const timeoutMs = options.timeoutMs ?? 2000;
  const probe = options.create();
  const rings =
    options.rings ?? (hasFeature(probe.features, VIRTIO_F_RING_PACKED) ? ['split', 'packed'] : ['split']);
  probe.reset();

  describe(`${options.name}: virtio conformance`, () => {
    const live: TestHarness[] = [];
    afterEach(() => {
      for (const harness of live.splice(0)) harness.dispose();
    });

    const start = async (
      activation: ActivateForTestOptions = {},
      device = options.create(),
    ): Promise<TestHarness> => {
      const harness = activateForTest(device, { ...options.activation, ...activation });
      live.push(harness);
      await exercise.prepare?.(harness);
      return harness;
    };

    /** One valid request, completed; returns its used element. */
    const serve = async (
      harness: TestHarness,
      chainOptions?: { indirect?: boolean },
    ): Promise<UsedElement> => {
      const writable = exercise
        .request()
        .reduce((sum, buffer) => sum + (buffer.writable ? buffer.length : 0), 0);
      let placed: { head: number; buffers: PlacedBuffer[] } | undefined;
      expect(() => {
        placed = harness.request(queueIndex, exercise.request(), chainOptions);
      }).not.toThrow();
      const [used] = await harness.waitForUsed(queueIndex, 1, timeoutMs);
      expect(used!.id).toBe(placed!.head);
      expect(used!.length).toBeLessThanOrEqual(writable);
      exercise.check?.(used!, placed!.buffers, harness);
      return used!;
    };

    describe('feature negotiation and status', () => {
      it('offers VERSION_1 and masks reserved bits it cannot implement', () => {
        const unknown = RESERVED_FEATURE_MASK & ~CORE_FEATURES;
        const harness = activateForTest(withExtraFeatures(options.create(), unknown), options.activation);
        live.push(harness);
        const offered = harness.controller.offeredFeatures;
        expect(hasFeature(offered, VIRTIO_F_VERSION_1)).toBe(true);
        expect(offered & unknown).toBe(0n);
        expect(harness.features & ~offered).toBe(0n);
      });

      it('refuses FEATURES_OK without VERSION_1 and for bits it did not offer', () => {
        const device = options.create();
        const harness = activateForTest(device, options.activation);
        live.push(harness);
        const { controller } = harness;
        const offered = controller.offeredFeatures;
        let unoffered = 0n;
        for (let bit = 0n; bit < 64n; bit++) {
          if (!hasFeature(offered, 1n << bit)) {
            unoffered = 1n << bit;
            break;
          }
        }
        expect(unoffered).not.toBe(0n);
        for (const features of [offered & ~VIRTIO_F_VERSION_1, VIRTIO_F_VERSION_1 | unoffered]) {
          controller.setStatus(0);
          controller.setStatus(STATUS_ACKNOWLEDGE);
          controller.setStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER);
          controller.setDriverFeatures(features);
          expect(controller.setStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK)).toBe(false);
          expect(controller.status & STATUS_FEATURES_OK).toBe(0);
          // 3.1.1 step 6: the driver gives up; DRIVER_OK must not start the device.
          expect(
            controller.setStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK),
          ).toBe(false);
          expect(controller.running).toBe(false);
        }
      });

      it('refuses status writes out of order and never starts early', () => {
        const harness = activateForTest(options.create(), options.activation);
        live.push(harness);
        const { controller } = harness;
        const activations = controller.metrics.activations;
        controller.setStatus(0);
        expect(controller.setStatus(STATUS_DRIVER)).toBe(false);
        expect(controller.setStatus(STATUS_ACKNOWLEDGE | STATUS_FEATURES_OK)).toBe(false);
        expect(controller.setStatus(STATUS_ACKNOWLEDGE)).toBe(true);
        expect(controller.setStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK)).toBe(false);
        expect(controller.setStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER)).toBe(true);
        controller.setDriverFeatures(harness.features);
        expect(controller.setStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK)).toBe(true);
        // Features are frozen once FEATURES_OK is set (3.1.1).
        expect(controller.setDriverFeatures(0n)).toBe(false);
        expect(controller.driverFeatures).toBe(harness.features);
        expect(controller.running).toBe(false);
        expect(controller.metrics.activations).toBe(activations);
        expect(controller.metrics.rejectedStatusWrites).toBeGreaterThanOrEqual(3);
      });

      it('reads its configuration space without throwing, zero beyond its size', () => {
        const harness = activateForTest(options.create(), options.activation);
        live.push(harness);
        const size = harness.device.configSize;
        const bytes = harness.controller.readConfig(0, size + 8);
        expect(bytes.length).toBe(size + 8);
        expect(Array.from(bytes.subarray(size))).toEqual(new Array(8).fill(0));
        expect(() => harness.controller.readConfig(size + 100, 4)).not.toThrow();
      });
    });

    for (const ring of rings) {
      const packed = ring === 'packed';
      const cases: readonly MalformedRingCase<never>[] = (
        packed ? packedMalformedCases : splitMalformedCases
      ) as never;

      describe(`${ring} ring`, () => {
        it('serves a valid request and interrupts', async () => {
          const harness = await start({ packed });
          const before = harness.interrupts.queues[queueIndex]!;
          await serve(harness);
          expect(harness.interrupts.queues[queueIndex]!).toBeGreaterThan(before);
          expect(harness.needsReset).toBe(false);
        });

        it("writes only into the request's writable buffers and its own rings", async () => {
          const harness = await start({ packed });
          const queue = harness.queue(queueIndex);
          const regionStart = Number(queue.config.desc - harness.memory.base);
          const arenaEnd = queue.arena.start + queue.arena.size;
          const placed = queue.addChain(exercise.request());
          const before = harness.memory.bytes.slice(regionStart, arenaEnd);
          harness.kick(queueIndex);
          await harness.waitForUsed(queueIndex, 1, timeoutMs);
          const after = harness.memory.bytes.subarray(regionStart, arenaEnd);
          const allowed = (offset: number) =>
            offset < queue.arena.start ||
            placed.buffers.some((b) => b.writable && offset >= b.offset && offset < b.offset + b.length);
          for (let i = 0; i < after.length; i++) {
            if (after[i] !== before[i] && !allowed(regionStart + i)) {
              throw new Error(`the device wrote byte ${regionStart + i} outside its writable buffers`);
            }
          }
        });

        it('serves requests across several laps of the ring', async () => {
          const harness = await start({
            packed,
            queueSizes: probe.queueMaxSizes.map((max) => Math.min(max, 8)),
          });
          for (let i = 0; i < 40; i++) await serve(harness);
          expect(harness.needsReset).toBe(false);
        });

        if (hasFeature(probe.features, VIRTIO_F_INDIRECT_DESC)) {
          it('serves a request in an indirect table', async () => {
            const harness = await start({ packed });
            await serve(harness, { indirect: true });
          });
        }

        it('resets during in-flight I/O without throwing, publishes nothing after, and works again', async () => {
          const harness = await start({ packed });
          const queue = harness.queue(queueIndex);
          for (let i = 0; i < 4; i++) queue.addChain(exercise.request());
          expect(() => {
            harness.kick(queueIndex);
            harness.controller.setStatus(0);
          }).not.toThrow();
          const snapshot = harness.memory.bytes.slice();
          await new Promise((resolve) => setTimeout(resolve, 20));
          expect(firstDifference(harness.memory.bytes, snapshot)).toBe(-1);
          expect(harness.memory.liveMappings()).toBe(0);
          expect(harness.controller.status).toBe(0);
          harness.restart();
          await exercise.prepare?.(harness);
          await serve(harness);
        });

        it('ignores kicks before DRIVER_OK and on queues it does not have', async () => {
          const harness = await start({ packed });
          expect(() => harness.controller.kick(harness.device.queueMaxSizes.length + 5)).not.toThrow();
          harness.controller.setStatus(0);
          expect(() => harness.controller.kick(queueIndex)).not.toThrow();
          expect(harness.controller.metrics.ignoredKicks).toBeGreaterThanOrEqual(2);
        });

        for (const malformed of cases) {
          it(`NEEDS_RESET, a config interrupt and no throw on: ${malformed.name}`, async () => {
            const indirect = malformed.indirect;
            const harness = await start({
              packed,
              withoutFeatures: indirect === false ? VIRTIO_F_INDIRECT_DESC : 0n,
            });
            if (indirect === true && !hasFeature(harness.features, VIRTIO_F_INDIRECT_DESC)) {
              // The device does not offer indirect tables: the same ring must then fail as
              // 'indirect-not-negotiated'.
              (malformed.corrupt as (q: unknown, m: unknown) => void)(
                harness.queue(queueIndex),
                harness.memory,
              );
              expect(() => harness.kick(queueIndex)).not.toThrow();
              expect(await harness.waitFor(() => harness.needsReset, timeoutMs)).toBe(true);
              expect(faultCode(harness.controller.lastFault)).toBe('indirect-not-negotiated');
              return;
            }
            const config = harness.interrupts.config;
            (malformed.corrupt as (q: unknown, m: unknown) => void)(
              harness.queue(queueIndex),
              harness.memory,
            );
            expect(() => harness.kick(queueIndex)).not.toThrow();
            expect(await harness.waitFor(() => harness.needsReset, timeoutMs)).toBe(true);
            expect(malformed.codes).toContain(faultCode(harness.controller.lastFault));
            expect(harness.interrupts.config).toBe(config + 1);
            // Only the corrupted queue is broken; the driver's reset brings everything back.
            harness.device.queueMaxSizes.forEach((_, index) => {
              if (index !== queueIndex)
                expect(harness.controller.runningQueue(index)?.broken).toBeUndefined();
            });
            expect(() => harness.kick(queueIndex)).not.toThrow();
            harness.restart();
            await exercise.prepare?.(harness);
            await serve(harness);
          });
        }

        it('a broken device does not disturb another instance', async () => {
          const broken = await start({ packed });
          const healthy = await start({ packed });
          (cases[0]!.corrupt as (q: unknown, m: unknown) => void)(broken.queue(queueIndex), broken.memory);
          broken.kick(queueIndex);
          expect(await broken.waitFor(() => broken.needsReset, timeoutMs)).toBe(true);
          await serve(healthy);
          expect(healthy.needsReset).toBe(false);
        });

        it('honours interrupt suppression (flags)', async () => {
          const harness = await start({ packed, withoutFeatures: VIRTIO_F_EVENT_IDX });
          const queue = harness.queue(queueIndex);
          queue.setInterruptSuppression(true);
          const before = harness.interrupts.queues[queueIndex]!;
          await serve(harness);
          await serve(harness);
          expect(harness.interrupts.queues[queueIndex]).toBe(before);
          queue.setInterruptSuppression(false);
          await serve(harness);
          expect(harness.interrupts.queues[queueIndex]).toBe(before + 1);
        });

        if (hasFeature(probe.features, VIRTIO_F_EVENT_IDX)) {
          it('honours the driver event index (EVENT_IDX)', async () => {
            const harness = await start({ packed });
            const queue = harness.queue(queueIndex);
            await serve(harness); // the first completion always interrupts
            const before = harness.interrupts.queues[queueIndex]!;
            if (queue.packed) {
              // Interrupt once the used descriptor after the next request's has been written.
              const slots = exercise.request().length;
              const { offset, wrap } = queue.usedPosition;
              const target = offset + slots;
              queue.setDriverEvent(
                RING_EVENT_FLAGS_DESC,
                target % queue.size,
                target >= queue.size ? wrap ^ 1 : wrap,
              );
            } else {
              // used_event = used.idx + 1: interrupt when used.idx passes it (2.7.10).
              queue.setUsedEvent((queue.usedIdx + 1) & 0xffff);
            }
            await serve(harness);
            expect(harness.interrupts.queues[queueIndex]).toBe(before);
            await serve(harness);
            expect(harness.interrupts.queues[queueIndex]).toBe(before + 1);
          });
        }
      });
    }
  });
}

/** Index of the first byte that differs, or -1 (a deep `toEqual` over megabytes is slow). */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}
