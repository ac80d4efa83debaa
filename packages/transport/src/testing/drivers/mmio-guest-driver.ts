import type { InterruptEvent, SimVcpu, XenSimulator } from '@xvio/xen';
import {
  MMIO_CONFIG,
  MMIO_CONFIG_GENERATION,
  MMIO_DEVICE_FEATURES,
  MMIO_DEVICE_FEATURES_SEL,
  MMIO_DEVICE_ID,
  MMIO_DRIVER_FEATURES,
  MMIO_DRIVER_FEATURES_SEL,
  MMIO_INT_CONFIG,
  MMIO_INT_VRING,
  MMIO_INTERRUPT_ACK,
  MMIO_INTERRUPT_STATUS,
  MMIO_MAGIC,
  MMIO_MAGIC_VALUE,
  MMIO_QUEUE_DESC_HIGH,
  MMIO_QUEUE_DESC_LOW,
  MMIO_QUEUE_DEVICE_HIGH,
  MMIO_QUEUE_DEVICE_LOW,
  MMIO_QUEUE_DRIVER_HIGH,
  MMIO_QUEUE_DRIVER_LOW,
  MMIO_QUEUE_NOTIFY,
  MMIO_QUEUE_NUM,
  MMIO_QUEUE_NUM_MAX,
  MMIO_QUEUE_READY,
  MMIO_QUEUE_SEL,
  MMIO_STATUS,
  MMIO_VERSION,
  MMIO_VERSION_2,
} from '../../mmio/mmio-wire.js';
import { GuestDriverError, type GuestDriverOptions, GuestVirtioDriver } from './guest-driver.js';
import type { GuestSplitQueue } from './guest-split-queue.js';

export interface MmioGuestOptions extends GuestDriverOptions {
  readonly domid: number;
  /** Base of the device's window (libxl on Arm: 0x02000000 + 0x200 * n). */
  readonly base: bigint;
  /** The interrupt the driver listens for: an SPI/ISA irq number, or an MSI data value. */
  readonly irq?: number;
  /** Which vCPU issues the accesses (default 0). */
  readonly vcpu?: number;
}

/**
 * A guest virtio-mmio driver for the simulator, following Linux's drivers/virtio/virtio_mmio.c:
 * magic and version checks, DeviceID 0 means "no device here", 32-bit register accesses,
 * queue setup with QueueReady checked first, InterruptStatus read then acknowledged.
 */
export class MmioGuestDriver extends GuestVirtioDriver {
  readonly base: bigint;
  readonly vcpu: SimVcpu;
  deviceId = 0;
  vendorId = 0;

  private constructor(
    sim: XenSimulator,
    private readonly mmio: MmioGuestOptions,
  ) {
    super(sim, mmio.domid, mmio);
    this.base = mmio.base;
    this.vcpu = sim.domain(mmio.domid).vcpu(mmio.vcpu ?? 0);
  }

  /** virtio_mmio_probe + virtio_dev_probe: finds the device at `base` and brings it to DRIVER_OK. */
  static async probe(sim: XenSimulator, options: MmioGuestOptions): Promise<MmioGuestDriver> {
    const driver = new MmioGuestDriver(sim, options);
    const magic = await driver.read32(MMIO_MAGIC_VALUE);
    if (magic !== MMIO_MAGIC)
      throw new GuestDriverError('no-device', `wrong magic value 0x${magic.toString(16)}`);
    const version = await driver.read32(MMIO_VERSION);
    if (version !== MMIO_VERSION_2)
      throw new GuestDriverError('no-device', `version ${version} not supported`);
    driver.deviceId = await driver.read32(MMIO_DEVICE_ID);
    // "virtio-mmio device with ID 0 is a (dummy) placeholder": -ENODEV.
    if (driver.deviceId === 0) throw new GuestDriverError('no-device', 'device id 0');
    driver.vendorId = await driver.read32(0x00c);
    await driver.initialize();
    return driver;
  }

  async read32(offset: number): Promise<number> {
    return Number(await this.vcpu.mmioRead(this.base + BigInt(offset), 4));
  }

  async write32(offset: number, value: number): Promise<void> {
    await this.vcpu.mmioWrite(this.base + BigInt(offset), 4, BigInt(value >>> 0));
  }

  protected readStatus(): Promise<number> {
    return this.read32(MMIO_STATUS);
  }

  protected writeStatus(status: number): Promise<void> {
    return this.write32(MMIO_STATUS, status);
  }

  protected async readDeviceFeatures(): Promise<bigint> {
    await this.write32(MMIO_DEVICE_FEATURES_SEL, 1);
    const high = await this.read32(MMIO_DEVICE_FEATURES);
    await this.write32(MMIO_DEVICE_FEATURES_SEL, 0);
    const low = await this.read32(MMIO_DEVICE_FEATURES);
    return (BigInt(high) << 32n) | BigInt(low);
  }

  protected async writeDriverFeatures(features: bigint): Promise<void> {
    await this.write32(MMIO_DRIVER_FEATURES_SEL, 1);
    await this.write32(MMIO_DRIVER_FEATURES, Number(features >> 32n) >>> 0);
    await this.write32(MMIO_DRIVER_FEATURES_SEL, 0);
    await this.write32(MMIO_DRIVER_FEATURES, Number(features & 0xffff_ffffn));
  }

  protected async queueMaxSize(index: number): Promise<number> {
    await this.write32(MMIO_QUEUE_SEL, index);
    // vm_setup_vq: a queue already in use is an error.
    if ((await this.read32(MMIO_QUEUE_READY)) !== 0) return 0;
    return this.read32(MMIO_QUEUE_NUM_MAX);
  }

  protected async enableQueue(index: number, queue: GuestSplitQueue): Promise<void> {
    await this.write32(MMIO_QUEUE_SEL, index);
    await this.write32(MMIO_QUEUE_NUM, queue.size);
    await this.write64(MMIO_QUEUE_DESC_LOW, MMIO_QUEUE_DESC_HIGH, queue.descAddress);
    await this.write64(MMIO_QUEUE_DRIVER_LOW, MMIO_QUEUE_DRIVER_HIGH, queue.driverAddress);
    await this.write64(MMIO_QUEUE_DEVICE_LOW, MMIO_QUEUE_DEVICE_HIGH, queue.deviceAddress);
    await this.write32(MMIO_QUEUE_READY, 1);
  }

  private async write64(lowOffset: number, highOffset: number, value: bigint): Promise<void> {
    await this.write32(lowOffset, Number(value & 0xffff_ffffn));
    await this.write32(highOffset, Number(value >> 32n));
  }

  protected notify(index: number): Promise<void> {
    return this.write32(MMIO_QUEUE_NOTIFY, index);
  }

  protected async readConfigRaw(offset: number, length: number): Promise<Uint8Array> {
    // vm_get: 1/2/4-byte fields in one access, 8-byte ones as two 32-bit halves; others bytewise.
    const out = new Uint8Array(length);
    const view = new DataView(out.buffer);
    const address = this.base + BigInt(MMIO_CONFIG + offset);
    if (length === 1 || length === 2 || length === 4) {
      const value = Number(await this.vcpu.mmioRead(address, length));
      if (length === 1) view.setUint8(0, value);
      else if (length === 2) view.setUint16(0, value, true);
      else view.setUint32(0, value, true);
      return out;
    }
    if (length === 8) {
      view.setUint32(0, Number(await this.vcpu.mmioRead(address, 4)), true);
      view.setUint32(4, Number(await this.vcpu.mmioRead(address + 4n, 4)), true);
      return out;
    }
    for (let i = 0; i < length; i++) out[i] = Number(await this.vcpu.mmioRead(address + BigInt(i), 1));
    return out;
  }

  /** Writes configuration space bytewise (vm_set for odd lengths). */
  async writeConfig(offset: number, bytes: Uint8Array): Promise<void> {
    const address = this.base + BigInt(MMIO_CONFIG + offset);
    for (let i = 0; i < bytes.length; i++)
      await this.vcpu.mmioWrite(address + BigInt(i), 1, BigInt(bytes[i] as number));
  }

  configGeneration(): Promise<number> {
    return this.read32(MMIO_CONFIG_GENERATION);
  }

  protected matches(event: InterruptEvent): boolean {
    const irq = this.mmio.irq;
    if (irq === undefined) return false;
    if (event.kind === 'irq' || event.kind === 'isa-irq') return event.irq === irq;
    if (event.kind === 'msi') return event.data === irq;
    return false;
  }

  /** vm_interrupt: read InterruptStatus, acknowledge exactly those bits. */
  protected async acknowledge(): Promise<{ queue: boolean; config: boolean }> {
    let queue = false;
    let config = false;
    // A level line stays high while bits remain: loop until InterruptStatus reads 0.
    for (let round = 0; round < 4; round++) {
      const status = await this.read32(MMIO_INTERRUPT_STATUS);
      if (status === 0) break;
      await this.write32(MMIO_INTERRUPT_ACK, status);
      queue ||= (status & MMIO_INT_VRING) !== 0;
      config ||= (status & MMIO_INT_CONFIG) !== 0;
    }
    return { queue, config };
  }
}
