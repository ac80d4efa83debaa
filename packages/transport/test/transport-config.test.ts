// Configuration space across transports: a device-initiated change reaches the driver as a
// configuration interrupt with a new generation, and driver writes reach the device.
import { afterEach, describe, expect, it } from 'vitest';
import type { MmioGuestDriver, XenbusGuestDriver } from '../src/testing/drivers/index.js';
import type { DeviceContext, VirtioDevice } from '../src/virtio-device.js';
import { CORE_FEATURES } from '../src/virtio-features.js';
import { createRig, type Rig, TRANSPORTS } from './transport-rig.js';

/** A device whose config is `value` (le32, driver-writable) and `changes` (le32, read-only). */
class KnobDevice implements VirtioDevice {
  readonly deviceType = 42;
  readonly name = 'knob';
  readonly queueMaxSizes = [8];
  readonly features = CORE_FEATURES;
  readonly configSize = 8;
  private readonly config = new DataView(new ArrayBuffer(8));
  private context: DeviceContext | undefined;

  readConfig(offset: number, target: Uint8Array): void {
    target.set(new Uint8Array(this.config.buffer, offset, target.length));
  }

  writeConfig(offset: number, source: Uint8Array): void {
    if (offset + source.length > 4) return; // `changes` is read-only
    new Uint8Array(this.config.buffer, offset, source.length).set(source);
  }

  activate(context: DeviceContext): void {
    this.context = context;
  }

  notify(): void {}

  reset(): void {
    this.context = undefined;
  }

  /** The host changes the configuration (e.g. a link went down) and tells the driver. */
  change(): void {
    this.config.setUint32(4, this.config.getUint32(4, true) + 1, true);
    this.context?.configChanged();
  }
}

let rig: Rig | undefined;
afterEach(async () => {
  await rig?.close();
  rig = undefined;
});

describe.each(TRANSPORTS)('%s configuration space', (transport) => {
  it('delivers a device configuration change with a new generation', async () => {
    const device = new KnobDevice();
    rig = await createRig(transport, 'foreign', { device });
    const driver = rig.driver;
    const before = await driver.configGeneration();
    const interrupt = driver.nextInterrupt();
    device.change();
    await interrupt;
    await driver.quiesce();
    expect(driver.interrupts.config).toBe(1);
    expect(await driver.configGeneration()).not.toBe(before);
    const bytes = await driver.readConfig(4, 4);
    expect(new DataView(bytes.buffer).getUint32(0, true)).toBe(1);
  });
});

describe('driver writes to configuration space', () => {
  it('reach the device over MMIO (byte accesses)', async () => {
    const device = new KnobDevice();
    rig = await createRig('mmio', 'foreign', { device });
    const driver = rig.driver as MmioGuestDriver;
    await driver.writeConfig(0, Uint8Array.of(0x78, 0x56, 0x34, 0x12));
    await driver.writeConfig(4, Uint8Array.of(9)); // read-only field: ignored by the device
    const bytes = await driver.readConfig(0, 8);
    expect(Array.from(bytes)).toEqual([0x78, 0x56, 0x34, 0x12, 0, 0, 0, 0]);
  });

  it('reach the device over XenBus (config-write) and show in the granted page', async () => {
    const device = new KnobDevice();
    rig = await createRig('xenbus', 'foreign', { device });
    const driver = rig.driver as XenbusGuestDriver;
    const before = await driver.configGeneration();
    await driver.writeConfig(0, Uint8Array.of(1, 2, 3, 4));
    for (let i = 0; i < 200 && (await driver.configGeneration()) === before; i++) {
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    expect(Array.from(await driver.readConfig(0, 4))).toEqual([1, 2, 3, 4]);
  });
});
