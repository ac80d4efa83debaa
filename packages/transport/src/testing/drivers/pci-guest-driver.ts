import type { InterruptEvent, PciAddress, SimVcpu, XenSimulator } from '@xvio/xen';
import {
  CAP_BAR,
  CAP_CFG_TYPE,
  CAP_LENGTH,
  CAP_NEXT,
  CAP_NOTIFY_OFF_MULTIPLIER,
  CAP_OFFSET,
  CAP_VNDR,
  COMMON_CONFIG_GENERATION,
  COMMON_CONFIG_MSIX_VECTOR,
  COMMON_DEVICE_FEATURE,
  COMMON_DEVICE_FEATURE_SELECT,
  COMMON_DEVICE_STATUS,
  COMMON_DRIVER_FEATURE,
  COMMON_DRIVER_FEATURE_SELECT,
  COMMON_NUM_QUEUES,
  COMMON_QUEUE_DESC,
  COMMON_QUEUE_DEVICE,
  COMMON_QUEUE_DRIVER,
  COMMON_QUEUE_ENABLE,
  COMMON_QUEUE_MSIX_VECTOR,
  COMMON_QUEUE_NOTIFY_OFF,
  COMMON_QUEUE_SELECT,
  COMMON_QUEUE_SIZE,
  ISR_CONFIG,
  ISR_QUEUE,
  MSIX_CONTROL,
  MSIX_CONTROL_ENABLE,
  MSIX_ENTRY_ADDRESS_HIGH,
  MSIX_ENTRY_ADDRESS_LOW,
  MSIX_ENTRY_DATA,
  MSIX_ENTRY_SIZE,
  MSIX_ENTRY_VECTOR_CONTROL,
  MSIX_TABLE,
  PCI_BAR0,
  PCI_BAR1,
  PCI_CAP_ID_MSIX,
  PCI_CAP_ID_VNDR,
  PCI_CAPABILITY_LIST,
  PCI_COMMAND,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_STATUS,
  PCI_STATUS_CAP_LIST,
  VIRTIO_MSI_NO_VECTOR,
  VIRTIO_PCI_CAP_COMMON_CFG,
  VIRTIO_PCI_CAP_DEVICE_CFG,
  VIRTIO_PCI_CAP_ISR_CFG,
  VIRTIO_PCI_CAP_NOTIFY_CFG,
  VIRTIO_PCI_DEVICE_BASE,
  VIRTIO_PCI_VENDOR,
} from '../../pci/pci-wire.js';
import { GuestDriverError, type GuestDriverOptions, GuestVirtioDriver } from './guest-driver.js';
import type { GuestSplitQueue } from './guest-split-queue.js';

/** x86's MSI address window (the local APIC, destination 0). */
export const MSI_ADDRESS = 0xfee0_0000n;

export interface PciGuestOptions extends GuestDriverOptions {
  readonly domid: number;
  readonly pci: PciAddress;
  /** Where the guest's "firmware" places BAR 0 (default 0xe000_0000). */
  readonly barAddress?: bigint;
  /** Use MSI-X (default true); false falls back to INTx like `pci=nomsi`. */
  readonly msix?: boolean;
  /** MSI data of vector 0; vector n uses `msiBase + n` (default 0x40). */
  readonly msiBase?: number;
  readonly vcpu?: number;
}

interface VirtioCap {
  readonly bar: number;
  readonly offset: number;
  readonly length: number;
}

/**
 * A guest driver for a modern virtio-pci function in the simulator, following Linux's
 * drivers/virtio/virtio_pci_modern(_dev).c: find the vendor capabilities, size and place
 * BAR 0 as firmware does, one MSI-X vector for config and one per queue (or INTx),
 * 64-bit queue addresses written as two 32-bit halves, notify at
 * notify base + queue_notify_off * notify_off_multiplier.
 */
export class PciGuestDriver extends GuestVirtioDriver {
  readonly pci: PciAddress;
  readonly vcpu: SimVcpu;
  barAddress = 0n;
  barSize = 0n;
  deviceId = 0;
  private common: VirtioCap | undefined;
  private isr: VirtioCap | undefined;
  private deviceCfg: VirtioCap | undefined;
  private notifyCap: VirtioCap | undefined;
  private notifyMultiplier = 0;
  private msixCap = 0;
  private readonly notifyOffsets: number[] = [];
  private readonly msix: boolean;
  private readonly msiBase: number;

  private constructor(
    sim: XenSimulator,
    private readonly pciOptions: PciGuestOptions,
  ) {
    super(sim, pciOptions.domid, pciOptions);
    this.pci = pciOptions.pci;
    this.vcpu = sim.domain(pciOptions.domid).vcpu(pciOptions.vcpu ?? 0);
    this.msix = pciOptions.msix ?? true;
    this.msiBase = pciOptions.msiBase ?? 0x40;
  }

  /** Enumerates the function, places its BAR, sets up interrupts and brings the device to DRIVER_OK. */
  static async probe(sim: XenSimulator, options: PciGuestOptions): Promise<PciGuestDriver> {
    const driver = new PciGuestDriver(sim, options);
    await driver.enumerate();
    await driver.initialize();
    return driver;
  }

  configRead(register: number, size: number): Promise<number> {
    return this.vcpu.pciConfigRead(this.pci, register, size).then(Number);
  }

  configWrite(register: number, size: number, value: number): Promise<void> {
    return this.vcpu.pciConfigWrite(this.pci, register, size, BigInt(value >>> 0));
  }

  private async enumerate(): Promise<void> {
    const vendor = await this.configRead(0, 2);
    const device = await this.configRead(2, 2);
    // Linux's virtio_pci_modern_probe takes 0x1040..0x107f (device types below 64); we also
    // take the types above (0x10ff for the template device's experimental id 0xbf), which a
    // stock Linux would not bind.
    if (vendor !== VIRTIO_PCI_VENDOR || device < VIRTIO_PCI_DEVICE_BASE || device > 0x10ff) {
      throw new GuestDriverError(
        'no-device',
        `no virtio function at ${describe(this.pci)} (${hex(vendor)}:${hex(device)})`,
      );
    }
    this.deviceId = device - VIRTIO_PCI_DEVICE_BASE;
    if (!((await this.configRead(PCI_STATUS, 2)) & PCI_STATUS_CAP_LIST)) {
      throw new GuestDriverError('no-device', 'function has no capability list');
    }
    let at = (await this.configRead(PCI_CAPABILITY_LIST, 1)) & 0xfc;
    // A hostile loop in the list must not hang enumeration: at most 48 capabilities (Linux's PCI_FIND_CAP_TTL).
    for (let ttl = 0; at !== 0 && ttl < 48; ttl++) {
      const id = await this.configRead(at + CAP_VNDR, 1);
      if (id === PCI_CAP_ID_VNDR) {
        const type = await this.configRead(at + CAP_CFG_TYPE, 1);
        const cap = {
          bar: await this.configRead(at + CAP_BAR, 1),
          offset: await this.configRead(at + CAP_OFFSET, 4),
          length: await this.configRead(at + CAP_LENGTH, 4),
        };
        // virtio_pci_find_capability keeps the first of each type.
        if (type === VIRTIO_PCI_CAP_COMMON_CFG) this.common ??= cap;
        else if (type === VIRTIO_PCI_CAP_ISR_CFG) this.isr ??= cap;
        else if (type === VIRTIO_PCI_CAP_DEVICE_CFG) this.deviceCfg ??= cap;
        else if (type === VIRTIO_PCI_CAP_NOTIFY_CFG && !this.notifyCap) {
          this.notifyCap = cap;
          this.notifyMultiplier = await this.configRead(at + CAP_NOTIFY_OFF_MULTIPLIER, 4);
        }
      } else if (id === PCI_CAP_ID_MSIX) {
        this.msixCap = at;
      }
      at = (await this.configRead(at + CAP_NEXT, 1)) & 0xfc;
    }
    if (!this.common || !this.isr || !this.notifyCap) {
      throw new GuestDriverError('no-device', 'missing virtio common, ISR or notify capability');
    }
    await this.placeBar(this.pciOptions.barAddress ?? 0xe000_0000n);
    if (this.msix && this.msixCap !== 0) await this.setupMsix();
  }

  /** Firmware-style BAR sizing and placement: decoding off, write all ones, read the size, program, decoding on. */
  async placeBar(address: bigint): Promise<void> {
    const command = await this.configRead(PCI_COMMAND, 2);
    await this.configWrite(PCI_COMMAND, 2, command & ~PCI_COMMAND_MEMORY);
    await this.configWrite(PCI_BAR0, 4, 0xffff_ffff);
    await this.configWrite(PCI_BAR1, 4, 0xffff_ffff);
    const low = BigInt(((await this.configRead(PCI_BAR0, 4)) & ~0xf) >>> 0);
    const high = BigInt(await this.configRead(PCI_BAR1, 4));
    this.barSize = (~((high << 32n) | low) & 0xffff_ffff_ffff_ffffn) + 1n;
    await this.configWrite(PCI_BAR0, 4, Number(address & 0xffff_ffffn));
    await this.configWrite(PCI_BAR1, 4, Number(address >> 32n));
    await this.configWrite(PCI_COMMAND, 2, command | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    this.barAddress = address;
  }

  /** Moves BAR 0 (as a hotplug resource rebalance would): decoding off, new address, decoding on. */
  async moveBar(address: bigint): Promise<void> {
    const command = await this.configRead(PCI_COMMAND, 2);
    await this.configWrite(PCI_COMMAND, 2, command & ~PCI_COMMAND_MEMORY);
    await this.configWrite(PCI_BAR0, 4, Number(address & 0xffff_ffffn));
    await this.configWrite(PCI_BAR1, 4, Number(address >> 32n));
    await this.configWrite(PCI_COMMAND, 2, command | PCI_COMMAND_MEMORY);
    this.barAddress = address;
  }

  private async setupMsix(): Promise<void> {
    const table = (await this.configRead(this.msixCap + MSIX_TABLE, 4)) & ~0x7;
    const control = await this.configRead(this.msixCap + MSIX_CONTROL, 2);
    const vectors = (control & 0x7ff) + 1;
    for (let vector = 0; vector < vectors; vector++) {
      const entry = this.barAddress + BigInt(table + vector * MSIX_ENTRY_SIZE);
      await this.vcpu.mmioWrite(entry + BigInt(MSIX_ENTRY_ADDRESS_LOW), 4, MSI_ADDRESS & 0xffff_ffffn);
      await this.vcpu.mmioWrite(entry + BigInt(MSIX_ENTRY_ADDRESS_HIGH), 4, MSI_ADDRESS >> 32n);
      await this.vcpu.mmioWrite(entry + BigInt(MSIX_ENTRY_DATA), 4, BigInt(this.msiBase + vector));
      await this.vcpu.mmioWrite(entry + BigInt(MSIX_ENTRY_VECTOR_CONTROL), 4, 0n);
    }
    await this.configWrite(this.msixCap + MSIX_CONTROL, 2, control | MSIX_CONTROL_ENABLE);
  }

  /** Masks or unmasks one MSI-X vector (per-vector mask bit in the table). */
  async maskVector(vector: number, masked: boolean): Promise<void> {
    const table = (await this.configRead(this.msixCap + MSIX_TABLE, 4)) & ~0x7;
    const entry = this.barAddress + BigInt(table + vector * MSIX_ENTRY_SIZE + MSIX_ENTRY_VECTOR_CONTROL);
    await this.vcpu.mmioWrite(entry, 4, masked ? 1n : 0n);
  }

  private commonAddress(field: number): bigint {
    return this.barAddress + BigInt((this.common as VirtioCap).offset + field);
  }

  read(field: number, size: number): Promise<number> {
    return this.vcpu.mmioRead(this.commonAddress(field), size).then(Number);
  }

  write(field: number, size: number, value: number): Promise<void> {
    return this.vcpu.mmioWrite(this.commonAddress(field), size, BigInt(value >>> 0));
  }

  protected readStatus(): Promise<number> {
    return this.read(COMMON_DEVICE_STATUS, 1);
  }

  protected writeStatus(status: number): Promise<void> {
    return this.write(COMMON_DEVICE_STATUS, 1, status);
  }

  protected async readDeviceFeatures(): Promise<bigint> {
    await this.write(COMMON_DEVICE_FEATURE_SELECT, 4, 0);
    const low = await this.read(COMMON_DEVICE_FEATURE, 4);
    await this.write(COMMON_DEVICE_FEATURE_SELECT, 4, 1);
    const high = await this.read(COMMON_DEVICE_FEATURE, 4);
    return (BigInt(high) << 32n) | BigInt(low);
  }

  protected async writeDriverFeatures(features: bigint): Promise<void> {
    await this.write(COMMON_DRIVER_FEATURE_SELECT, 4, 0);
    await this.write(COMMON_DRIVER_FEATURE, 4, Number(features & 0xffff_ffffn));
    await this.write(COMMON_DRIVER_FEATURE_SELECT, 4, 1);
    await this.write(COMMON_DRIVER_FEATURE, 4, Number(features >> 32n));
  }

  protected async queueMaxSize(index: number): Promise<number> {
    if (index === 0 && this.msix && this.msixCap !== 0) {
      // vp_find_vqs_msix: vector 0 for configuration changes.
      await this.write(COMMON_CONFIG_MSIX_VECTOR, 2, 0);
      if ((await this.read(COMMON_CONFIG_MSIX_VECTOR, 2)) === VIRTIO_MSI_NO_VECTOR) {
        throw new GuestDriverError('queue-unavailable', 'device refused the config vector');
      }
    }
    if (index >= (await this.read(COMMON_NUM_QUEUES, 2))) return 0;
    await this.write(COMMON_QUEUE_SELECT, 2, index);
    if ((await this.read(COMMON_QUEUE_ENABLE, 2)) !== 0) return 0;
    return this.read(COMMON_QUEUE_SIZE, 2);
  }

  protected async enableQueue(index: number, queue: GuestSplitQueue): Promise<void> {
    await this.write(COMMON_QUEUE_SELECT, 2, index);
    await this.write(COMMON_QUEUE_SIZE, 2, queue.size);
    await this.write64(COMMON_QUEUE_DESC, queue.descAddress);
    await this.write64(COMMON_QUEUE_DRIVER, queue.driverAddress);
    await this.write64(COMMON_QUEUE_DEVICE, queue.deviceAddress);
    if (this.msix && this.msixCap !== 0) {
      await this.write(COMMON_QUEUE_MSIX_VECTOR, 2, index + 1);
      if ((await this.read(COMMON_QUEUE_MSIX_VECTOR, 2)) === VIRTIO_MSI_NO_VECTOR) {
        throw new GuestDriverError(
          'queue-unavailable',
          `device refused vector ${index + 1} for queue ${index}`,
        );
      }
    }
    this.notifyOffsets[index] = await this.read(COMMON_QUEUE_NOTIFY_OFF, 2);
    await this.write(COMMON_QUEUE_ENABLE, 2, 1);
  }

  /** vp_iowrite64_twopart: low half then high half. */
  private async write64(field: number, value: bigint): Promise<void> {
    await this.write(field, 4, Number(value & 0xffff_ffffn));
    await this.write(field + 4, 4, Number(value >> 32n));
  }

  protected notify(index: number): Promise<void> {
    const cap = this.notifyCap as VirtioCap;
    const offset = cap.offset + (this.notifyOffsets[index] ?? 0) * this.notifyMultiplier;
    return this.vcpu.mmioWrite(this.barAddress + BigInt(offset), 2, BigInt(index));
  }

  protected async readConfigRaw(offset: number, length: number): Promise<Uint8Array> {
    const cap = this.deviceCfg;
    const out = new Uint8Array(length);
    if (!cap) return out;
    const base = this.barAddress + BigInt(cap.offset + offset);
    for (let i = 0; i < length; ) {
      const size = length - i >= 4 && (offset + i) % 4 === 0 ? 4 : 1;
      const value = Number(await this.vcpu.mmioRead(base + BigInt(i), size));
      for (let b = 0; b < size; b++) out[i + b] = (value >>> (b * 8)) & 0xff;
      i += size;
    }
    return out;
  }

  configGeneration(): Promise<number> {
    return this.read(COMMON_CONFIG_GENERATION, 1);
  }

  protected matches(event: InterruptEvent): boolean {
    if (event.kind === 'msi')
      return event.data >= this.msiBase && event.data <= this.msiBase + this.queueCount + 1;
    if (event.kind === 'pci-intx') {
      return (
        event.pci.segment === this.pci.segment &&
        event.pci.bus === this.pci.bus &&
        event.pci.device === this.pci.device &&
        event.pci.function === this.pci.function
      );
    }
    return false;
  }

  protected async acknowledge(event: InterruptEvent): Promise<{ queue: boolean; config: boolean }> {
    if (event.kind === 'msi') {
      // With MSI-X the vector says why; the ISR is not read (vp_vring_interrupt).
      const vector = event.data - this.msiBase;
      return { queue: vector > 0, config: vector === 0 };
    }
    const isr = Number(await this.vcpu.mmioRead(this.barAddress + BigInt((this.isr as VirtioCap).offset), 1));
    return { queue: (isr & ISR_QUEUE) !== 0, config: (isr & ISR_CONFIG) !== 0 };
  }
}

function hex(value: number): string {
  return value.toString(16).padStart(4, '0');
}

function describe(pci: PciAddress): string {
  return `${hex(pci.segment)}:${pci.bus.toString(16).padStart(2, '0')}:${pci.device.toString(16).padStart(2, '0')}.${pci.function}`;
}
