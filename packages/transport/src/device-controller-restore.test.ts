import { describe, expect, it } from 'vitest';
import { DeviceController } from './device-controller.js';
import { activateForTest, type TestHarness } from './testing/activate-for-test.js';
import type { DeviceContext, VirtioDevice } from './virtio-device.js';
import { CORE_FEATURES } from './virtio-features.js';
import { STATUS_DEVICE_NEEDS_RESET, STATUS_DRIVER_OK } from './virtio-status.js';

/** Completes every chain it is given, in order, or (holding) takes them and completes none. */
class EchoDevice implements VirtioDevice {
  readonly deviceType = 0;
  readonly name = 'echo0';
  readonly queueMaxSizes = [16];
  readonly configSize = 0;
  readonly features = CORE_FEATURES;
  served = 0;
  private context: DeviceContext | undefined;
  constructor(private readonly holding = false) {}
  readConfig(): void {}
  writeConfig(): void {}
  activate(context: DeviceContext): void {
    this.context = context;
  }
  notify(index: number): void {
    const queue = this.context?.queues[index];
    if (!queue) return;
    for (let chain = queue.pop(); chain; chain = queue.pop()) {
      if (this.holding) continue;
      queue.addUsed(chain, 0);
      this.served++;
    }
    queue.publishUsed();
    this.context?.interrupt(index);
  }
  reset(): void {
    this.context = undefined;
  }
}

/** A second controller over the same guest memory, as a restarted backend would build it. */
function successor(harness: TestHarness, device: VirtioDevice) {
  const interrupts = { queue: 0, config: 0 };
  const controller = new DeviceController(device, {
    memory: harness.memory,
    hooks: {
      interruptQueue: () => interrupts.queue++,
      interruptConfig: () => interrupts.config++,
    },
  });
  return { controller, interrupts };
}

describe('DeviceController snapshot and restore', () => {
  it('resumes a split queue at used.idx: chains taken and not completed are served by the successor', async () => {
    const first = activateForTest(new EchoDevice(true));
    first.request(0, [{ writable: true, length: 8 }]);
    first.request(0, [{ writable: true, length: 8 }]);
    const snapshot = first.controller.snapshot();
    expect(snapshot.status & STATUS_DRIVER_OK).toBe(STATUS_DRIVER_OK);
    const device = new EchoDevice();
    const { controller, interrupts } = successor(first, device);
    controller.restore(snapshot);
    expect(controller.running).toBe(true);
    // No kick: the successor looked at the queue by itself.
    expect(device.served).toBe(2);
    // The device's own interrupt for its completions, and the one restore sends in case the
    // previous backend died between publishing and signalling.
    expect(interrupts.queue).toBe(2);
    expect(await first.waitForUsed(0, 2)).toHaveLength(2);
    expect(controller.status).toBe(snapshot.status);
    expect(controller.driverFeatures).toBe(snapshot.driverFeatures);
  });

  it('serves nothing twice: what the first device completed stays completed', async () => {
    const first = activateForTest(new EchoDevice());
    first.request(0, [{ writable: true, length: 8 }]);
    expect(await first.waitForUsed(0, 1)).toHaveLength(1);
    const device = new EchoDevice();
    const { controller, interrupts } = successor(first, device);
    controller.restore(first.controller.snapshot());
    expect(device.served).toBe(0);
    expect(interrupts.queue).toBe(2);
    first.request(0, [{ writable: true, length: 8 }]);
    controller.kick(0);
    expect(device.served).toBe(1);
  });

  it('sets NEEDS_RESET with a configuration interrupt for a packed ring (its position died with the process)', () => {
    const first = activateForTest(new EchoDevice(), { packed: true });
    const { controller, interrupts } = successor(first, new EchoDevice());
    controller.restore(first.controller.snapshot());
    expect(controller.status & STATUS_DEVICE_NEEDS_RESET).toBe(STATUS_DEVICE_NEEDS_RESET);
    expect(controller.running).toBe(false);
    expect(interrupts.config).toBe(1);
  });

  it('does not start a device the driver had not started, and keeps NEEDS_RESET', () => {
    const first = activateForTest(new EchoDevice());
    const snapshot = first.controller.snapshot();
    const { controller } = successor(first, new EchoDevice());
    controller.restore({ ...snapshot, status: snapshot.status & ~STATUS_DRIVER_OK });
    expect(controller.running).toBe(false);
    const failed = successor(first, new EchoDevice());
    failed.controller.restore({ ...snapshot, status: snapshot.status | STATUS_DEVICE_NEEDS_RESET });
    expect(failed.controller.running).toBe(false);
    expect(failed.controller.status & STATUS_DEVICE_NEEDS_RESET).toBe(STATUS_DEVICE_NEEDS_RESET);
  });
});
