import type { GuestMemory } from '@xvio/grant-pool';
import type { IoClaim, IoreqServer, MmioRequest, PciAddress, PciConfigRequest } from '@xvio/xen';
import { DeviceController } from '../device-controller.js';
import type { VirtioDevice } from '../virtio-device.js';
import { featureWord, setFeatureWord, VIRTIO_F_RING_PACKED } from '../virtio-features.js';
import { STATUS_DRIVER_OK, STATUS_FAILED, STATUS_FEATURES_OK } from '../virtio-status.js';
import { PCI_TRANSPORT_STATE_VERSION, PciStateError, type PciTransportState } from './pci-state.js';
import {
  BAR_COMMON_OFFSET,
  BAR_DEVICE_LENGTH,
  BAR_DEVICE_OFFSET,
  BAR_ISR_LENGTH,
  BAR_ISR_OFFSET,
  BAR_MSIX_PBA_OFFSET,
  BAR_MSIX_TABLE_OFFSET,
  BAR_NOTIFY_LENGTH,
  BAR_NOTIFY_OFFSET,
  BAR_SIZE,
  CAP_BAR,
  CAP_CFG_TYPE,
  CAP_COMMON_AT,
  CAP_DEVICE_AT,
  CAP_ISR_AT,
  CAP_LEN,
  CAP_LENGTH,
  CAP_MSIX_AT,
  CAP_NEXT,
  CAP_NOTIFY_AT,
  CAP_NOTIFY_OFF_MULTIPLIER,
  CAP_OFFSET,
  CAP_PCI_CFG_AT,
  CAP_PCI_CFG_DATA,
  CAP_VNDR,
  COMMON_CFG_SIZE,
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
  COMMON_QUEUE_NOTIFY_DATA,
  COMMON_QUEUE_NOTIFY_OFF,
  COMMON_QUEUE_RESET,
  COMMON_QUEUE_SELECT,
  COMMON_QUEUE_SIZE,
  ISR_CONFIG,
  ISR_QUEUE,
  MSIX_CONTROL,
  MSIX_CONTROL_ENABLE,
  MSIX_CONTROL_MASKALL,
  MSIX_ENTRY_ADDRESS_HIGH,
  MSIX_ENTRY_ADDRESS_LOW,
  MSIX_ENTRY_DATA,
  MSIX_ENTRY_MASKED,
  MSIX_ENTRY_SIZE,
  MSIX_ENTRY_VECTOR_CONTROL,
  MSIX_PBA,
  MSIX_TABLE,
  NOTIFY_OFF_MULTIPLIER,
  PCI_BAR_MEM_TYPE_64,
  PCI_BAR0,
  PCI_BAR1,
  PCI_CACHE_LINE_SIZE,
  PCI_CAP_ID_MSIX,
  PCI_CAP_ID_VNDR,
  PCI_CAPABILITY_LIST,
  PCI_CLASS_PROG,
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_COMMAND_MEMORY,
  PCI_CONFIG_SPACE_SIZE,
  PCI_DEVICE_ID,
  PCI_INTERRUPT_LINE,
  PCI_INTERRUPT_PIN,
  PCI_LATENCY_TIMER,
  PCI_REVISION_ID,
  PCI_STATUS,
  PCI_STATUS_CAP_LIST,
  PCI_STATUS_INTERRUPT,
  PCI_SUBSYSTEM_ID,
  PCI_SUBSYSTEM_VENDOR_ID,
  PCI_VENDOR_ID,
  pciClassFor,
  VIRTIO_MSI_NO_VECTOR,
  VIRTIO_PCI_CAP_COMMON_CFG,
  VIRTIO_PCI_CAP_DEVICE_CFG,
  VIRTIO_PCI_CAP_ISR_CFG,
  VIRTIO_PCI_CAP_NOTIFY_CFG,
  VIRTIO_PCI_CAP_PCI_CFG,
  VIRTIO_PCI_CAP_SIZE,
  VIRTIO_PCI_CFG_CAP_SIZE,
  VIRTIO_PCI_DEVICE_BASE,
  VIRTIO_PCI_NOTIFY_CAP_SIZE,
  VIRTIO_PCI_REVISION,
  VIRTIO_PCI_SUBSYSTEM_ID,
  VIRTIO_PCI_VENDOR,
} from './pci-wire.js';

export interface PciTransportOptions {
  readonly server: IoreqServer;
  readonly device: VirtioDevice;
  readonly memory: GuestMemory;
  /** Where the function sits (XEN_DMOP_map_io_range_to_ioreq_server with a PCI range). */
  readonly pci: PciAddress;
  /** INTx pin used when MSI-X is off (0..3 = INTA..INTD; default INTA). Set `false` for a PVH guest (no INTx). */
  readonly intx?: number | false;
  readonly platformFeatures?: bigint;
  readonly packed?: boolean;
  /** Host faults (claims and interrupt hypercalls that failed) and guest faults that set NEEDS_RESET. */
  readonly onError?: (error: unknown) => void;
  /**
   * Takes over the function from a previous backend process (`snapshot()` of its transport):
   * configuration space, BAR placement, MSI-X table, feature and queue setup, device status.
   * A running device resumes where the used rings say (`DeviceController.restore`). With an
   * adopted ioreq server the function and BAR are the server's already in Xen and are only
   * registered here. Throws `PciStateError` when the state is for another function or device.
   */
  readonly restore?: PciTransportState;
  /**
   * Called after every guest access that may have changed what `snapshot()` returns (writes
   * to configuration space and to the BAR other than notifications) and after a fault set
   * NEEDS_RESET: the moment to persist the state for a restarted backend.
   */
  readonly onStateChange?: (transport: PciTransport) => void;
}

/** What the function did with accesses the specs do not allow: counted, never thrown. */
export interface PciCounters {
  configReads: number;
  configWrites: number;
  barReads: number;
  barWrites: number;
  notifies: number;
  /** Common-config accesses that were not the field's natural width (4.1.3.1). */
  wrongSize: number;
  /** Accesses to offsets that name nothing (holes in the BAR, reserved fields). */
  unknownRegister: number;
  ignoredQueueWrites: number;
  badQueueSel: number;
  ignoredWrites: number;
  /** MSI-X vectors the driver named that do not exist (read back as NO_VECTOR). */
  badVectors: number;
  /** BAR placements claimed, released, and claims Xen refused (overlap). */
  barClaims: number;
  barReleases: number;
  barClaimFailures: number;
  msiSent: number;
  msiPending: number;
  intxAsserted: number;
  interruptFailures: number;
}

interface QueueVectors {
  vector: number;
}

/**
 * A virtio device as a modern virtio-pci function (spec 4.1) emulated through an ioreq
 * server: its configuration space through PCI-config ioreqs, BAR 0 through an MMIO claim
 * that follows wherever the guest programs the BAR, MSI-X delivered with inject_msi and an
 * INTx fallback.
 */
export class PciTransport {
  readonly controller: DeviceController;
  readonly pci: PciAddress;
  readonly counters: PciCounters = {
    configReads: 0,
    configWrites: 0,
    barReads: 0,
    barWrites: 0,
    notifies: 0,
    wrongSize: 0,
    unknownRegister: 0,
    ignoredQueueWrites: 0,
    badQueueSel: 0,
    ignoredWrites: 0,
    badVectors: 0,
    barClaims: 0,
    barReleases: 0,
    barClaimFailures: 0,
    msiSent: 0,
    msiPending: 0,
    intxAsserted: 0,
    interruptFailures: 0,
  };
  /** Config space bytes, and which bits of each byte the guest may write. */
  private readonly config = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  private readonly writable = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  private readonly configView = new DataView(this.config.buffer);
  private readonly server: IoreqServer;
  private readonly intx: number | false;
  private configClaim: IoClaim | undefined;
  private barClaim: { claim: IoClaim; address: bigint } | undefined;
  // Common configuration state.
  private deviceFeatureSelect = 0;
  private driverFeatureSelect = 0;
  private queueSelect = 0;
  private configVector = VIRTIO_MSI_NO_VECTOR;
  private queueVectors: QueueVectors[];
  private isr = 0;
  private intxLevel = false;
  /** What we last told Xen about the INTx wire. */
  private intxWire = false;
  // MSI-X table and pending bits.
  private readonly vectorCount: number;
  private readonly msixTable: DataView;
  private readonly pending: boolean[];

  constructor(private readonly options: PciTransportOptions) {
    this.server = options.server;
    this.pci = options.pci;
    this.intx = options.intx ?? 0;
    this.controller = new DeviceController(options.device, {
      memory: options.memory,
      hooks: {
        interruptQueue: (index) => this.interruptQueue(index),
        interruptConfig: () => this.interruptConfig(),
      },
      transportMask: options.packed === false ? VIRTIO_F_RING_PACKED : 0n,
      platformFeatures: options.platformFeatures ?? 0n,
      onFault: (error) => {
        options.onError?.(error);
        options.onStateChange?.(this);
      },
    });
    // One vector for configuration changes and one per queue, as Linux asks for first.
    this.vectorCount = Math.min(this.controller.queueCount + 1, 64);
    this.msixTable = new DataView(new ArrayBuffer(this.vectorCount * MSIX_ENTRY_SIZE));
    for (let vector = 0; vector < this.vectorCount; vector++) {
      // PCI 3.0 6.8.2.9: every vector's mask bit is set after reset.
      this.msixTable.setUint32(vector * MSIX_ENTRY_SIZE + MSIX_ENTRY_VECTOR_CONTROL, MSIX_ENTRY_MASKED, true);
    }
    this.pending = new Array<boolean>(this.vectorCount).fill(false);
    this.queueVectors = this.freshVectors();
    this.buildConfigSpace(options.device);
    const restore = options.restore;
    // Xen still routes the function (and BAR) to an adopted server: register, do not map again.
    const adopt = restore !== undefined && options.server.adopted === true;
    if (restore) this.applyState(restore);
    this.configClaim = options.server.claimPciDevice(options.pci, (request) => this.handleConfig(request), {
      adopt,
    });
    if (restore) {
      this.updateBarClaim(adopt && restore.barClaim === this.barAddress);
      this.controller.restore(restore.controller);
    }
  }

  /** What a restarted backend needs to go on serving this function (see `PciTransportOptions.restore`). */
  snapshot(): PciTransportState {
    const pendingVectors: number[] = [];
    this.pending.forEach((pending, vector) => {
      if (pending) pendingVectors.push(vector);
    });
    return {
      version: PCI_TRANSPORT_STATE_VERSION,
      pci: { ...this.pci },
      deviceType: this.controller.device.deviceType,
      config: this.config.slice(),
      msixTable: new Uint8Array(this.msixTable.buffer.slice(0)),
      pendingVectors,
      isr: this.isr,
      intxLevel: this.intxLevel,
      intxWire: this.intxWire,
      deviceFeatureSelect: this.deviceFeatureSelect,
      driverFeatureSelect: this.driverFeatureSelect,
      queueSelect: this.queueSelect,
      configVector: this.configVector,
      queueVectors: this.queueVectors.map((entry) => entry.vector),
      barClaim: this.barClaim?.address,
      controller: this.controller.snapshot(),
    };
  }

  private applyState(state: PciTransportState): void {
    const same = (a: PciAddress, b: PciAddress) =>
      a.segment === b.segment && a.bus === b.bus && a.device === b.device && a.function === b.function;
    if (!same(state.pci, this.pci) || state.deviceType !== this.controller.device.deviceType) {
      throw new PciStateError(
        'state-mismatch',
        `the state is for device type ${state.deviceType} at ${state.pci.bus}:${state.pci.device}.${state.pci.function}`,
      );
    }
    if (state.msixTable.length !== this.vectorCount * MSIX_ENTRY_SIZE) {
      throw new PciStateError(
        'state-mismatch',
        `the state has ${state.msixTable.length / MSIX_ENTRY_SIZE} MSI-X vectors, this device ${this.vectorCount}`,
      );
    }
    // Only the bits the guest could have written come from the state; the rest is what this
    // device is (a tampered state cannot change the vendor, capabilities or BAR size).
    for (let offset = 0; offset < PCI_CONFIG_SPACE_SIZE; offset++) {
      const mask = this.writable[offset] as number;
      this.config[offset] =
        ((this.config[offset] as number) & ~mask) | ((state.config[offset] as number) & mask);
    }
    new Uint8Array(this.msixTable.buffer).set(state.msixTable);
    for (const vector of state.pendingVectors) if (vector < this.vectorCount) this.pending[vector] = true;
    this.isr = state.isr;
    this.intxLevel = state.intxLevel;
    this.intxWire = state.intxWire;
    this.deviceFeatureSelect = state.deviceFeatureSelect;
    this.driverFeatureSelect = state.driverFeatureSelect;
    this.queueSelect = state.queueSelect;
    this.configVector = this.checkVector(state.configVector);
    this.queueVectors.forEach((entry, index) => {
      entry.vector = this.checkVector(state.queueVectors[index] ?? VIRTIO_MSI_NO_VECTOR);
    });
  }

  private freshVectors(): QueueVectors[] {
    return Array.from({ length: this.controller.queueCount }, () => ({ vector: VIRTIO_MSI_NO_VECTOR }));
  }

  // --- configuration space ---

  private buildConfigSpace(device: VirtioDevice): void {
    const view = this.configView;
    view.setUint16(PCI_VENDOR_ID, VIRTIO_PCI_VENDOR, true);
    view.setUint16(PCI_DEVICE_ID, VIRTIO_PCI_DEVICE_BASE + device.deviceType, true);
    view.setUint16(PCI_STATUS, PCI_STATUS_CAP_LIST, true);
    view.setUint8(PCI_REVISION_ID, VIRTIO_PCI_REVISION);
    const classCode = pciClassFor(device.deviceType);
    view.setUint8(PCI_CLASS_PROG, classCode & 0xff);
    view.setUint8(PCI_CLASS_PROG + 1, (classCode >> 8) & 0xff);
    view.setUint8(PCI_CLASS_PROG + 2, (classCode >> 16) & 0xff);
    view.setUint32(PCI_BAR0, PCI_BAR_MEM_TYPE_64, true);
    view.setUint16(PCI_SUBSYSTEM_VENDOR_ID, VIRTIO_PCI_VENDOR, true);
    view.setUint16(PCI_SUBSYSTEM_ID, VIRTIO_PCI_SUBSYSTEM_ID, true);
    view.setUint8(PCI_CAPABILITY_LIST, CAP_COMMON_AT);
    view.setUint8(PCI_INTERRUPT_PIN, this.intx === false ? 0 : this.intx + 1);
    // Writable bits: command (I/O, memory, bus master, INTx disable), cache line, latency,
    // BAR 0 address bits above its size (this is what makes BAR sizing read back the size),
    // BAR 1 (the high half), interrupt line.
    this.mask(PCI_COMMAND, 2, 0x0407);
    this.mask(PCI_CACHE_LINE_SIZE, 1, 0xff);
    this.mask(PCI_LATENCY_TIMER, 1, 0xff);
    this.mask(PCI_BAR0, 4, ~(BAR_SIZE - 1) >>> 0);
    this.mask(PCI_BAR1, 4, 0xffff_ffff);
    this.mask(PCI_INTERRUPT_LINE, 1, 0xff);
    const vendorCap = (
      at: number,
      next: number,
      type: number,
      length: number,
      offset: number,
      size: number,
    ) => {
      view.setUint8(at + CAP_VNDR, PCI_CAP_ID_VNDR);
      view.setUint8(at + CAP_NEXT, next);
      view.setUint8(at + CAP_LEN, length);
      view.setUint8(at + CAP_CFG_TYPE, type);
      view.setUint8(at + CAP_BAR, 0);
      view.setUint32(at + CAP_OFFSET, offset, true);
      view.setUint32(at + CAP_LENGTH, size, true);
    };
    vendorCap(
      CAP_COMMON_AT,
      CAP_NOTIFY_AT,
      VIRTIO_PCI_CAP_COMMON_CFG,
      VIRTIO_PCI_CAP_SIZE,
      BAR_COMMON_OFFSET,
      COMMON_CFG_SIZE,
    );
    vendorCap(
      CAP_NOTIFY_AT,
      CAP_ISR_AT,
      VIRTIO_PCI_CAP_NOTIFY_CFG,
      VIRTIO_PCI_NOTIFY_CAP_SIZE,
      BAR_NOTIFY_OFFSET,
      BAR_NOTIFY_LENGTH,
    );
    view.setUint32(CAP_NOTIFY_AT + CAP_NOTIFY_OFF_MULTIPLIER, NOTIFY_OFF_MULTIPLIER, true);
    vendorCap(
      CAP_ISR_AT,
      CAP_DEVICE_AT,
      VIRTIO_PCI_CAP_ISR_CFG,
      VIRTIO_PCI_CAP_SIZE,
      BAR_ISR_OFFSET,
      BAR_ISR_LENGTH,
    );
    vendorCap(
      CAP_DEVICE_AT,
      CAP_PCI_CFG_AT,
      VIRTIO_PCI_CAP_DEVICE_CFG,
      VIRTIO_PCI_CAP_SIZE,
      BAR_DEVICE_OFFSET,
      BAR_DEVICE_LENGTH,
    );
    // The PCI configuration access capability: bar/offset/length are the driver's to write.
    vendorCap(CAP_PCI_CFG_AT, CAP_MSIX_AT, VIRTIO_PCI_CAP_PCI_CFG, VIRTIO_PCI_CFG_CAP_SIZE, 0, 0);
    this.mask(CAP_PCI_CFG_AT + CAP_BAR, 1, 0xff);
    this.mask(CAP_PCI_CFG_AT + CAP_OFFSET, 4, 0xffff_ffff);
    this.mask(CAP_PCI_CFG_AT + CAP_LENGTH, 4, 0xffff_ffff);
    view.setUint8(CAP_MSIX_AT + CAP_VNDR, PCI_CAP_ID_MSIX);
    view.setUint8(CAP_MSIX_AT + CAP_NEXT, 0);
    view.setUint16(CAP_MSIX_AT + MSIX_CONTROL, this.vectorCount - 1, true);
    view.setUint32(CAP_MSIX_AT + MSIX_TABLE, BAR_MSIX_TABLE_OFFSET | 0, true);
    view.setUint32(CAP_MSIX_AT + MSIX_PBA, BAR_MSIX_PBA_OFFSET | 0, true);
    this.mask(CAP_MSIX_AT + MSIX_CONTROL, 2, MSIX_CONTROL_ENABLE | MSIX_CONTROL_MASKALL);
  }

  private mask(offset: number, size: number, bits: number): void {
    for (let i = 0; i < size; i++) this.writable[offset + i] = (bits >>> (i * 8)) & 0xff;
  }

  private handleConfig(request: PciConfigRequest): bigint | undefined {
    const { register, size } = request;
    if (request.direction === 'read') {
      this.counters.configReads++;
      return this.readConfigSpace(register, size);
    }
    this.counters.configWrites++;
    this.writeConfigSpace(register, size, request.value);
    this.options.onStateChange?.(this);
    return undefined;
  }

  /** A config-space read of `size` bytes at `register`; beyond the 256 conventional bytes reads 0. */
  readConfigSpace(register: number, size: number): bigint {
    if (register < 0 || size < 1 || size > 4 || register + size > PCI_CONFIG_SPACE_SIZE) return 0n;
    const data = CAP_PCI_CFG_AT + CAP_PCI_CFG_DATA;
    if (register >= data && register < data + 4) return this.readCfgWindow();
    let value = 0n;
    for (let i = size - 1; i >= 0; i--) value = (value << 8n) | BigInt(this.configByte(register + i));
    return value;
  }

  private configByte(register: number): number {
    if (register === PCI_STATUS) {
      return (this.config[register] as number) | (this.intxLevel ? PCI_STATUS_INTERRUPT : 0);
    }
    return this.config[register] as number;
  }

  writeConfigSpace(register: number, size: number, value: bigint): void {
    if (register < 0 || size < 1 || size > 4 || register + size > PCI_CONFIG_SPACE_SIZE) {
      this.counters.unknownRegister++;
      return;
    }
    const data = CAP_PCI_CFG_AT + CAP_PCI_CFG_DATA;
    if (register >= data && register < data + 4) {
      this.writeCfgWindow(value);
      return;
    }
    const before = {
      command: this.configView.getUint16(PCI_COMMAND, true),
      msix: this.configView.getUint16(CAP_MSIX_AT + MSIX_CONTROL, true),
    };
    for (let i = 0; i < size; i++) {
      const offset = register + i;
      const mask = this.writable[offset] as number;
      const byte = Number((value >> BigInt(i * 8)) & 0xffn);
      this.config[offset] = ((this.config[offset] as number) & ~mask) | (byte & mask);
    }
    const touches = (start: number, length: number) => register < start + length && start < register + size;
    if (touches(PCI_COMMAND, 2) || touches(PCI_BAR0, 8)) this.updateBarClaim();
    const command = this.configView.getUint16(PCI_COMMAND, true);
    if ((command ^ before.command) & PCI_COMMAND_INTX_DISABLE) this.updateIntx();
    if (touches(CAP_MSIX_AT + MSIX_CONTROL, 2)) {
      const msix = this.configView.getUint16(CAP_MSIX_AT + MSIX_CONTROL, true);
      if (msix !== before.msix) {
        if (msix & MSIX_CONTROL_ENABLE) this.lowerIntx();
        this.deliverPending();
      }
    }
  }

  /** The guest-physical address BAR 0 decodes at, or undefined while memory decoding is off or the BAR is unset. */
  get barAddress(): bigint | undefined {
    const command = this.configView.getUint16(PCI_COMMAND, true);
    if (!(command & PCI_COMMAND_MEMORY)) return undefined;
    const low = BigInt((this.configView.getUint32(PCI_BAR0, true) & ~0xf) >>> 0);
    const high = BigInt(this.configView.getUint32(PCI_BAR1, true));
    const address = (high << 32n) | low;
    if (address === 0n) return undefined;
    return address;
  }

  /** Claims BAR 0 where the guest put it (memory decoding on); releases it when moved or disabled. */
  private updateBarClaim(adopt = false): void {
    const address = this.barAddress;
    if (this.barClaim && this.barClaim.address === address) return;
    if (this.barClaim) {
      this.barClaim.claim.close();
      this.barClaim = undefined;
      this.counters.barReleases++;
    }
    if (address === undefined || address + BigInt(BAR_SIZE) > 1n << 64n) return;
    try {
      const claim = this.server.claimMmio(address, BigInt(BAR_SIZE), (request) => this.handleBar(request), {
        adopt,
      });
      this.barClaim = { claim, address };
      this.counters.barClaims++;
    } catch (error) {
      // Overlapping another claim: the guest put the BAR on top of something else. The BAR
      // then decodes nothing of ours (reads float), as on a real bus with a conflict.
      this.counters.barClaimFailures++;
      this.options.onError?.(error);
    }
  }

  // --- BAR 0 ---

  private handleBar(request: MmioRequest): bigint | undefined {
    if (request.direction === 'read') {
      this.counters.barReads++;
      return this.readBar(request.offset, request.size);
    }
    this.counters.barWrites++;
    this.writeBar(request.offset, request.size, request.value);
    const notify =
      request.offset >= BAR_NOTIFY_OFFSET && request.offset < BAR_NOTIFY_OFFSET + BAR_NOTIFY_LENGTH;
    if (!notify) this.options.onStateChange?.(this);
    return undefined;
  }

  readBar(offset: number, size: number): bigint {
    if (offset >= BAR_COMMON_OFFSET && offset < BAR_COMMON_OFFSET + COMMON_CFG_SIZE) {
      return this.readCommon(offset - BAR_COMMON_OFFSET, size);
    }
    if (offset >= BAR_ISR_OFFSET && offset < BAR_ISR_OFFSET + BAR_ISR_LENGTH) {
      // 4.1.4.5: reading the ISR returns the bits and resets them (and deasserts INTx).
      const value = this.isr;
      this.isr = 0;
      this.lowerIntx();
      return BigInt(value);
    }
    if (offset >= BAR_DEVICE_OFFSET && offset < BAR_DEVICE_OFFSET + BAR_DEVICE_LENGTH) {
      const bytes = this.controller.readConfig(offset - BAR_DEVICE_OFFSET, size);
      let value = 0n;
      for (let i = bytes.length - 1; i >= 0; i--) value = (value << 8n) | BigInt(bytes[i] as number);
      return value;
    }
    if (
      offset >= BAR_MSIX_TABLE_OFFSET &&
      offset < BAR_MSIX_TABLE_OFFSET + this.vectorCount * MSIX_ENTRY_SIZE
    ) {
      const at = offset - BAR_MSIX_TABLE_OFFSET;
      if (size !== 4 && size !== 8) {
        this.counters.wrongSize++;
        return 0n;
      }
      if (at % 4 !== 0 || at + size > this.vectorCount * MSIX_ENTRY_SIZE) return 0n;
      return size === 8 ? this.msixTable.getBigUint64(at, true) : BigInt(this.msixTable.getUint32(at, true));
    }
    if (offset >= BAR_MSIX_PBA_OFFSET && offset < BAR_MSIX_PBA_OFFSET + 8) {
      let bits = 0n;
      this.pending.forEach((pending, vector) => {
        if (pending) bits |= 1n << BigInt(vector);
      });
      const shift = BigInt((offset - BAR_MSIX_PBA_OFFSET) * 8);
      return (bits >> shift) & ((1n << BigInt(size * 8)) - 1n);
    }
    this.counters.unknownRegister++;
    return 0n;
  }

  writeBar(offset: number, size: number, value: bigint): void {
    if (offset >= BAR_COMMON_OFFSET && offset < BAR_COMMON_OFFSET + COMMON_CFG_SIZE) {
      this.writeCommon(offset - BAR_COMMON_OFFSET, size, value);
      return;
    }
    if (offset >= BAR_NOTIFY_OFFSET && offset < BAR_NOTIFY_OFFSET + BAR_NOTIFY_LENGTH) {
      // 4.1.4.4: the queue is the one whose queue_notify_off * multiplier is this offset;
      // without VIRTIO_F_NOTIFICATION_DATA the 16-bit value is the queue index as well.
      const at = offset - BAR_NOTIFY_OFFSET;
      this.counters.notifies++;
      if (at % NOTIFY_OFF_MULTIPLIER !== 0) {
        this.counters.unknownRegister++;
        return;
      }
      // The vCPU that wrote the notify register waits for the ioreq's answer, but serving the
      // queue need not keep it waiting: like an ioeventfd, the write is answered first and the
      // queue served right after, in a microtask, so it still runs before any later ioreq is
      // handled and the order of the guest's accesses is kept. (On Xen under TCG a guest
      // transmitting TCP otherwise waited for each frame to be sent before queueing the next.)
      const queueIndex = at / NOTIFY_OFF_MULTIPLIER;
      queueMicrotask(() => this.controller.kick(queueIndex));
      return;
    }
    if (offset >= BAR_DEVICE_OFFSET && offset < BAR_DEVICE_OFFSET + BAR_DEVICE_LENGTH) {
      const bytes = new Uint8Array(size);
      for (let i = 0; i < size; i++) bytes[i] = Number((value >> BigInt(i * 8)) & 0xffn);
      if (!this.controller.writeConfig(offset - BAR_DEVICE_OFFSET, bytes)) this.counters.unknownRegister++;
      return;
    }
    if (
      offset >= BAR_MSIX_TABLE_OFFSET &&
      offset < BAR_MSIX_TABLE_OFFSET + this.vectorCount * MSIX_ENTRY_SIZE
    ) {
      const at = offset - BAR_MSIX_TABLE_OFFSET;
      if ((size !== 4 && size !== 8) || at % size !== 0) {
        this.counters.wrongSize++;
        return;
      }
      if (size === 8) this.msixTable.setBigUint64(at, BigInt.asUintN(64, value), true);
      else this.msixTable.setUint32(at, Number(value & 0xffff_ffffn), true);
      // Unmasking a vector with its pending bit set sends the message now (PCI 3.0 6.8.2.9).
      this.deliverPending();
      return;
    }
    // ISR and PBA are read-only; anything else is a hole.
    this.counters.unknownRegister++;
  }

  // --- common configuration (4.1.4.3) ---

  private readCommon(offset: number, size: number): bigint {
    const controller = this.controller;
    const field = commonField(offset, size);
    if (!field) {
      this.counters.wrongSize++;
      return 0n;
    }
    const setup = controller.queue(this.queueSelect);
    const queueField = (read: () => number | bigint): bigint => {
      if (!setup) {
        this.counters.badQueueSel++;
        return 0n;
      }
      return BigInt(read());
    };
    switch (field.offset) {
      case COMMON_DEVICE_FEATURE_SELECT:
        return BigInt(this.deviceFeatureSelect);
      case COMMON_DEVICE_FEATURE:
        return BigInt(featureWord(controller.offeredFeatures, this.deviceFeatureSelect));
      case COMMON_DRIVER_FEATURE_SELECT:
        return BigInt(this.driverFeatureSelect);
      case COMMON_DRIVER_FEATURE:
        return BigInt(featureWord(controller.driverFeatures, this.driverFeatureSelect));
      case COMMON_CONFIG_MSIX_VECTOR:
        return BigInt(this.configVector);
      case COMMON_NUM_QUEUES:
        return BigInt(controller.queueCount);
      case COMMON_DEVICE_STATUS:
        return BigInt(controller.status);
      case COMMON_CONFIG_GENERATION:
        return BigInt(controller.configGeneration & 0xff);
      case COMMON_QUEUE_SELECT:
        return BigInt(this.queueSelect);
      case COMMON_QUEUE_SIZE:
        // 4.1.4.3: "queue_size ... 0 if the queue is unavailable".
        return setup ? BigInt(setup.size) : 0n;
      case COMMON_QUEUE_MSIX_VECTOR:
        return queueField(() => this.queueVectors[this.queueSelect]?.vector ?? VIRTIO_MSI_NO_VECTOR);
      case COMMON_QUEUE_ENABLE:
        return queueField(() => (setup?.ready ? 1 : 0));
      case COMMON_QUEUE_NOTIFY_OFF:
        return queueField(() => this.queueSelect);
      case COMMON_QUEUE_DESC:
        return queueField(() => part(setup?.desc ?? 0n, field, offset, size));
      case COMMON_QUEUE_DRIVER:
        return queueField(() => part(setup?.driver ?? 0n, field, offset, size));
      case COMMON_QUEUE_DEVICE:
        return queueField(() => part(setup?.device ?? 0n, field, offset, size));
      case COMMON_QUEUE_NOTIFY_DATA:
        return queueField(() => this.queueSelect);
      case COMMON_QUEUE_RESET:
        return 0n;
      default:
        this.counters.unknownRegister++;
        return 0n;
    }
  }

  private writeCommon(offset: number, size: number, value: bigint): void {
    const controller = this.controller;
    const field = commonField(offset, size);
    if (!field) {
      this.counters.wrongSize++;
      return;
    }
    const number = Number(value & 0xffff_ffffn);
    switch (field.offset) {
      case COMMON_DEVICE_FEATURE_SELECT:
        this.deviceFeatureSelect = number;
        return;
      case COMMON_DRIVER_FEATURE_SELECT:
        this.driverFeatureSelect = number;
        return;
      case COMMON_DRIVER_FEATURE:
        if (
          !controller.setDriverFeatures(
            setFeatureWord(controller.driverFeatures, this.driverFeatureSelect, number),
          )
        ) {
          this.counters.ignoredWrites++;
        }
        return;
      case COMMON_CONFIG_MSIX_VECTOR:
        this.configVector = this.checkVector(number);
        return;
      case COMMON_DEVICE_STATUS: {
        if (!controller.setStatus(number & 0xff)) this.counters.ignoredWrites++;
        if ((number & 0xff) === 0) this.resetTransport();
        return;
      }
      case COMMON_QUEUE_SELECT:
        this.queueSelect = number & 0xffff;
        return;
      case COMMON_QUEUE_SIZE:
        this.queueWrite((setup) => {
          setup.size = number & 0xffff;
        });
        return;
      case COMMON_QUEUE_MSIX_VECTOR: {
        const entry = this.queueVectors[this.queueSelect];
        if (!entry) {
          this.counters.badQueueSel++;
          return;
        }
        entry.vector = this.checkVector(number);
        return;
      }
      case COMMON_QUEUE_ENABLE: {
        // 4.1.4.3.2: the driver MUST NOT write 0 to queue_enable; only 1 is meaningful.
        this.queueWrite((setup) => {
          if ((number & 1) === 1) setup.ready = true;
          else this.counters.ignoredQueueWrites++;
        });
        return;
      }
      case COMMON_QUEUE_DESC:
        this.queueWrite((setup) => {
          setup.desc = merge(setup.desc, field, offset, size, value);
        });
        return;
      case COMMON_QUEUE_DRIVER:
        this.queueWrite((setup) => {
          setup.driver = merge(setup.driver, field, offset, size, value);
        });
        return;
      case COMMON_QUEUE_DEVICE:
        this.queueWrite((setup) => {
          setup.device = merge(setup.device, field, offset, size, value);
        });
        return;
      case COMMON_QUEUE_RESET:
        // VIRTIO_F_RING_RESET is not offered.
        this.counters.ignoredWrites++;
        return;
      default:
        // Read-only fields.
        this.counters.ignoredWrites++;
    }
  }

  private queueWrite(apply: (setup: NonNullable<ReturnType<DeviceController['queue']>>) => void): void {
    const setup = this.controller.queue(this.queueSelect);
    if (!setup) {
      this.counters.badQueueSel++;
      return;
    }
    const status = this.controller.status;
    const setupPhase =
      (status & STATUS_FEATURES_OK) !== 0 && (status & (STATUS_DRIVER_OK | STATUS_FAILED)) === 0;
    if (!setupPhase || setup.ready) {
      this.counters.ignoredQueueWrites++;
      return;
    }
    apply(setup);
  }

  /** 4.1.4.3.2 / 4.1.5.1.2: a vector the function does not have reads back NO_VECTOR. */
  private checkVector(vector: number): number {
    const value = vector & 0xffff;
    if (value === VIRTIO_MSI_NO_VECTOR) return value;
    if (value >= this.vectorCount) {
      this.counters.badVectors++;
      return VIRTIO_MSI_NO_VECTOR;
    }
    return value;
  }

  private resetTransport(): void {
    this.isr = 0;
    this.lowerIntx();
    this.configVector = VIRTIO_MSI_NO_VECTOR;
    this.queueVectors = this.freshVectors();
    this.deviceFeatureSelect = 0;
    this.driverFeatureSelect = 0;
    this.queueSelect = 0;
    this.pending.fill(false);
  }

  // --- PCI configuration access capability (4.1.4.9) ---

  private cfgWindow(): { bar: number; offset: number; length: number } {
    return {
      bar: this.configView.getUint8(CAP_PCI_CFG_AT + CAP_BAR),
      offset: this.configView.getUint32(CAP_PCI_CFG_AT + CAP_OFFSET, true),
      length: this.configView.getUint32(CAP_PCI_CFG_AT + CAP_LENGTH, true),
    };
  }

  /** 4.1.4.9.1: length 1, 2 or 4, offset a multiple of length, BAR 0 only; anything else reads 0. */
  private cfgWindowValid(window: { bar: number; offset: number; length: number }): boolean {
    return (
      window.bar === 0 &&
      (window.length === 1 || window.length === 2 || window.length === 4) &&
      window.offset % window.length === 0 &&
      window.offset + window.length <= BAR_SIZE
    );
  }

  private readCfgWindow(): bigint {
    const window = this.cfgWindow();
    if (!this.cfgWindowValid(window)) {
      this.counters.unknownRegister++;
      return 0n;
    }
    return this.readBar(window.offset, window.length);
  }

  private writeCfgWindow(value: bigint): void {
    const window = this.cfgWindow();
    if (!this.cfgWindowValid(window)) {
      this.counters.unknownRegister++;
      return;
    }
    this.writeBar(window.offset, window.length, value & ((1n << BigInt(window.length * 8)) - 1n));
  }

  // --- interrupts ---

  private get msixEnabled(): boolean {
    return (this.configView.getUint16(CAP_MSIX_AT + MSIX_CONTROL, true) & MSIX_CONTROL_ENABLE) !== 0;
  }

  private interruptQueue(index: number): void {
    this.isr |= ISR_QUEUE;
    if (this.msixEnabled) this.signalVector(this.queueVectors[index]?.vector ?? VIRTIO_MSI_NO_VECTOR);
    else this.raiseIntx();
  }

  private interruptConfig(): void {
    this.isr |= ISR_CONFIG;
    if (this.msixEnabled) this.signalVector(this.configVector);
    else this.raiseIntx();
  }

  private signalVector(vector: number): void {
    if (vector === VIRTIO_MSI_NO_VECTOR || vector >= this.vectorCount) return;
    const control = this.configView.getUint16(CAP_MSIX_AT + MSIX_CONTROL, true);
    const masked = (control & MSIX_CONTROL_MASKALL) !== 0 || this.vectorMasked(vector);
    if (masked) {
      // PCI 3.0 6.8.2.9: a masked vector's message is held as a pending bit.
      if (!this.pending[vector]) this.counters.msiPending++;
      this.pending[vector] = true;
      return;
    }
    this.sendMsi(vector);
  }

  /**
   * The vector's own mask bit, except for Xen pirq MSIs: a Linux HVM guest on Xen with
   * XENFEAT_hvm_pirqs writes a message whose vector field (data bits 0-7) is 0 and whose
   * address carries a pirq, and masks and unmasks that interrupt through its event channel,
   * never through the table, so the table's mask bit stays set (seen on Xen 4.17 with a
   * stock Debian guest). QEMU's MSI-X emulation ignores the bit for such messages too.
   */
  private vectorMasked(vector: number): boolean {
    const at = vector * MSIX_ENTRY_SIZE;
    const pirq =
      (this.msixTable.getUint32(at + MSIX_ENTRY_DATA, true) & 0xff) === 0 &&
      this.msixTable.getUint32(at + MSIX_ENTRY_ADDRESS_LOW, true) !== 0;
    if (pirq) return false;
    return (this.msixTable.getUint32(at + MSIX_ENTRY_VECTOR_CONTROL, true) & MSIX_ENTRY_MASKED) !== 0;
  }

  private sendMsi(vector: number): void {
    const at = vector * MSIX_ENTRY_SIZE;
    const address =
      (BigInt(this.msixTable.getUint32(at + MSIX_ENTRY_ADDRESS_HIGH, true)) << 32n) |
      BigInt(this.msixTable.getUint32(at + MSIX_ENTRY_ADDRESS_LOW, true));
    const data = this.msixTable.getUint32(at + MSIX_ENTRY_DATA, true);
    try {
      this.server.injectMsi(address, data);
      this.counters.msiSent++;
    } catch (error) {
      this.counters.interruptFailures++;
      this.options.onError?.(error);
    }
  }

  private deliverPending(): void {
    if (!this.msixEnabled) return;
    const control = this.configView.getUint16(CAP_MSIX_AT + MSIX_CONTROL, true);
    if (control & MSIX_CONTROL_MASKALL) return;
    for (let vector = 0; vector < this.vectorCount; vector++) {
      if (!this.pending[vector]) continue;
      if (this.vectorMasked(vector)) continue;
      this.pending[vector] = false;
      this.sendMsi(vector);
    }
  }

  private raiseIntx(): void {
    this.intxLevel = true;
    this.updateIntx();
  }

  private lowerIntx(): void {
    if (!this.intxLevel) return;
    this.intxLevel = false;
    this.updateIntx();
  }

  /** Drives the INTx wire: asserted while ISR bits are set, MSI-X is off and INTx is not disabled. */
  private updateIntx(): void {
    if (this.intx === false) return;
    const disabled = (this.configView.getUint16(PCI_COMMAND, true) & PCI_COMMAND_INTX_DISABLE) !== 0;
    const level = this.intxLevel && !disabled && !this.msixEnabled;
    if (level === this.intxWire) return;
    this.intxWire = level;
    if (level) this.counters.intxAsserted++;
    try {
      this.server.setPciIntxLevel(this.pci, this.intx, level ? 1 : 0);
    } catch (error) {
      this.counters.interruptFailures++;
      this.options.onError?.(error);
    }
  }

  /** Releases the BAR and the function, resets the device. Idempotent. */
  close(): void {
    if (!this.configClaim) return;
    const claims = [this.barClaim?.claim, this.configClaim];
    this.barClaim = undefined;
    this.configClaim = undefined;
    // When the guest is gone, Xen has destroyed the server with the domain and giving a claim
    // back fails (ENOENT): report it, but never skip the reset that unmaps guest memory.
    for (const claim of claims) {
      try {
        claim?.close();
      } catch (error) {
        this.options.onError?.(error);
      }
    }
    this.controller.reset();
    this.resetTransport();
  }
}

interface CommonField {
  readonly offset: number;
  readonly size: number;
}

const COMMON_FIELDS: readonly CommonField[] = [
  { offset: COMMON_DEVICE_FEATURE_SELECT, size: 4 },
  { offset: COMMON_DEVICE_FEATURE, size: 4 },
  { offset: COMMON_DRIVER_FEATURE_SELECT, size: 4 },
  { offset: COMMON_DRIVER_FEATURE, size: 4 },
  { offset: COMMON_CONFIG_MSIX_VECTOR, size: 2 },
  { offset: COMMON_NUM_QUEUES, size: 2 },
  { offset: COMMON_DEVICE_STATUS, size: 1 },
  { offset: COMMON_CONFIG_GENERATION, size: 1 },
  { offset: COMMON_QUEUE_SELECT, size: 2 },
  { offset: COMMON_QUEUE_SIZE, size: 2 },
  { offset: COMMON_QUEUE_MSIX_VECTOR, size: 2 },
  { offset: COMMON_QUEUE_ENABLE, size: 2 },
  { offset: COMMON_QUEUE_NOTIFY_OFF, size: 2 },
  { offset: COMMON_QUEUE_DESC, size: 8 },
  { offset: COMMON_QUEUE_DRIVER, size: 8 },
  { offset: COMMON_QUEUE_DEVICE, size: 8 },
  { offset: COMMON_QUEUE_NOTIFY_DATA, size: 2 },
  { offset: COMMON_QUEUE_RESET, size: 2 },
];

/**
 * 4.1.3.1: each field is accessed with its natural width; 64-bit fields also as two 32-bit
 * halves (4.1.3.1: "the driver MAY ... two 32-bit accesses"). Anything else matches nothing.
 */
function commonField(offset: number, size: number): CommonField | undefined {
  for (const field of COMMON_FIELDS) {
    if (field.offset === offset && field.size === size) return field;
    if (field.size === 8 && size === 4 && (offset === field.offset || offset === field.offset + 4))
      return field;
  }
  return undefined;
}

function part(value: bigint, field: CommonField, offset: number, size: number): bigint {
  if (size === 8) return value;
  return offset === field.offset ? value & 0xffff_ffffn : value >> 32n;
}

function merge(current: bigint, field: CommonField, offset: number, size: number, value: bigint): bigint {
  if (size === 8) return BigInt.asUintN(64, value);
  const half = value & 0xffff_ffffn;
  return offset === field.offset
    ? (current & 0xffff_ffff_0000_0000n) | half
    : (current & 0xffff_ffffn) | (half << 32n);
}
