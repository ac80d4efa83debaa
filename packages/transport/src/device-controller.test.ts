import { describe, expect, it } from 'vitest';
import { PackedQueue } from './packed-queue.js';
import { SplitQueue } from './split-queue.js';
import { activateForTest } from './testing/activate-for-test.js';
import type { DeviceContext, VirtioDevice } from './virtio-device.js';
import { CORE_FEATURES, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1 } from './virtio-features.js';
import {
  STATUS_ACKNOWLEDGE,
  STATUS_DEVICE_NEEDS_RESET,
  STATUS_DRIVER,
  STATUS_DRIVER_OK,
  STATUS_FAILED,
  STATUS_FEATURES_OK,
} from './virtio-status.js';

class ProbeDevice implements VirtioDevice {
  readonly deviceType = 0;
  readonly name = 'probe0';
  readonly queueMaxSizes = [16, 16];
  readonly configSize = 8;
  context: DeviceContext | undefined;
  resets = 0;
  failActivation = false;
  config = Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8);

  constructor(readonly features = CORE_FEATURES | (1n << 3n)) {}

  acceptFeatures(features: bigint): boolean {
    return features !== (VIRTIO_F_VERSION_1 | (1n << 3n)); // refuses one combination, to test refusal
  }
  readConfig(offset: number, target: Uint8Array): void {
    target.set(this.config.subarray(offset, offset + target.length));
  }
  writeConfig(offset: number, source: Uint8Array): void {
    this.config.set(source, offset);
  }
  activate(context: DeviceContext): void {
    if (this.failActivation) throw new Error('no host');
    this.context = context;
  }
  notify(): void {}
  reset(): void {
    this.resets++;
    this.context = undefined;
  }
}

const ACK_DRIVER = STATUS_ACKNOWLEDGE | STATUS_DRIVER;

describe('DeviceController', () => {
  it('creates split or packed queues from the negotiated features', () => {
    const split = activateForTest(new ProbeDevice());
    expect(split.controller.runningQueue(0)).toBeInstanceOf(SplitQueue);
    const packed = activateForTest(new ProbeDevice(), { packed: true });
    expect(packed.controller.runningQueue(0)).toBeInstanceOf(PackedQueue);
    expect(packed.controller.runningQueue(0)!.packed).toBe(true);
  });

  it('leaves disabled queues undefined and ignores their kicks', () => {
    const harness = activateForTest(new ProbeDevice(), { disabledQueues: [1] });
    expect(harness.controller.runningQueue(1)).toBeUndefined();
    harness.kick(1);
    expect(harness.controller.metrics.ignoredKicks).toBe(1);
  });

  it('lets the device refuse FEATURES_OK', () => {
    const harness = activateForTest(new ProbeDevice());
    const { controller } = harness;
    controller.setStatus(0);
    controller.setStatus(STATUS_ACKNOWLEDGE);
    controller.setStatus(ACK_DRIVER);
    controller.setDriverFeatures(VIRTIO_F_VERSION_1 | (1n << 3n));
    expect(controller.setStatus(ACK_DRIVER | STATUS_FEATURES_OK)).toBe(false);
    expect(controller.metrics.rejectedFeatures).toBe(1);
  });

  it('masks packed rings when the transport cannot carry them', () => {
    const harness = activateForTest(new ProbeDevice(), {
      controller: { transportMask: VIRTIO_F_RING_PACKED },
    });
    expect(harness.controller.offeredFeatures & VIRTIO_F_RING_PACKED).toBe(0n);
    expect(() =>
      activateForTest(new ProbeDevice(), {
        packed: true,
        controller: { transportMask: VIRTIO_F_RING_PACKED },
      }),
    ).toThrow('does not offer VIRTIO_F_RING_PACKED');
  });

  it('sets NEEDS_RESET with a config interrupt when activation fails, and recovers after reset', () => {
    const device = new ProbeDevice();
    device.failActivation = true;
    expect(() => activateForTest(device)).toThrow('failed to activate');
    device.failActivation = false;
    const harness = activateForTest(device);
    expect(harness.controller.status).toBe(ACK_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
  });

  it('reports a device fault once, stops the device and aborts its signal', () => {
    const device = new ProbeDevice();
    const harness = activateForTest(device);
    const context = device.context!;
    context.fail(new Error('ring corrupted'));
    context.fail(new Error('again'));
    expect(harness.controller.status & STATUS_DEVICE_NEEDS_RESET).toBe(STATUS_DEVICE_NEEDS_RESET);
    expect(harness.interrupts.config).toBe(1);
    expect(harness.controller.metrics.needsReset).toBe(1);
    expect(context.signal.aborted).toBe(true);
    // A stopped device's interrupts no longer reach the driver.
    context.interrupt(0);
    expect(harness.interrupts.queues[0]).toBe(0);
    // The driver may acknowledge by rewriting its bits; NEEDS_RESET stays until reset.
    expect(harness.controller.setStatus(ACK_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK)).toBe(true);
    expect(harness.controller.status & STATUS_DEVICE_NEEDS_RESET).toBe(STATUS_DEVICE_NEEDS_RESET);
    harness.restart();
    expect(harness.controller.status & STATUS_DEVICE_NEEDS_RESET).toBe(0);
    expect(device.resets).toBe(1);
  });

  it('stops on FAILED and resets everything on status 0', () => {
    const device = new ProbeDevice();
    const harness = activateForTest(device);
    expect(
      harness.controller.setStatus(ACK_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK | STATUS_FAILED),
    ).toBe(true);
    expect(harness.controller.running).toBe(false);
    harness.controller.setStatus(0);
    expect(harness.controller.status).toBe(0);
    expect(harness.controller.driverFeatures).toBe(0n);
    expect(harness.memory.liveMappings()).toBe(0);
  });

  it('clamps configuration space accesses', () => {
    const harness = activateForTest(new ProbeDevice());
    expect(Array.from(harness.controller.readConfig(6, 4))).toEqual([7, 8, 0, 0]);
    expect(harness.controller.writeConfig(6, Uint8Array.of(9, 9, 9))).toBe(true);
    expect(Array.from(harness.controller.readConfig(6, 2))).toEqual([9, 9]);
    expect(harness.controller.writeConfig(8, Uint8Array.of(1))).toBe(false);
    expect(Array.from(harness.controller.readConfig(-1, 2))).toEqual([0, 0]);
  });
});
