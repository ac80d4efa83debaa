import type { DeviceController } from '../device-controller.js';
import { featureWord, hasFeature, setFeatureWord, VIRTIO_F_RING_RESET } from '../virtio-features.js';
import { STATUS_DRIVER_OK, STATUS_FAILED, STATUS_FEATURES_OK } from '../virtio-status.js';
import {
  MMIO_CONFIG,
  MMIO_CONFIG_GENERATION,
  MMIO_CONFIG_MAX,
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
  MMIO_QUEUE_RESET,
  MMIO_QUEUE_SEL,
  MMIO_SHM_ABSENT,
  MMIO_SHM_BASE_HIGH,
  MMIO_SHM_BASE_LOW,
  MMIO_SHM_LEN_HIGH,
  MMIO_SHM_LEN_LOW,
  MMIO_SHM_SEL,
  MMIO_STATUS,
  MMIO_VENDOR_ID,
  MMIO_VENDOR_XVIO,
  MMIO_VERSION,
  MMIO_VERSION_2,
  MMIO_WINDOW_SIZE,
} from './mmio-wire.js';

/** What the register file did with accesses the spec does not allow; each is counted, none throws. */
export interface MmioCounters {
  reads: number;
  writes: number;
  notifies: number;
  /** Register accesses that were not 32-bit and aligned (4.2.2.2): reads answer 0, writes are dropped. */
  wrongSize: number;
  /** Writes to read-only registers and reads of write-only ones. */
  wrongDirection: number;
  /** Offsets that name no register (reserved holes, beyond the window). */
  unknownRegister: number;
  /** Queue register writes outside the setup phase, or to a queue that is ready (4.2.3.2). */
  ignoredQueueWrites: number;
  /** Queue register accesses with a QueueSel naming no queue. */
  badQueueSel: number;
  /** Feature writes after FEATURES_OK (3.1.1) and refused status transitions. */
  ignoredWrites: number;
  /** Config space accesses beyond the device's configuration. */
  configOutOfRange: number;
}

export interface MmioRegisterOptions {
  /** Raises the interrupt line (an event was added to InterruptStatus). */
  raise(): void;
  /** Lowers it (InterruptStatus became 0). */
  lower(): void;
  /** Vendor ID to report (default 0x1af4). */
  vendorId?: number;
  /** Called after every Status write with the status the device now reports. */
  statusChanged?(status: number): void;
}

/**
 * The device side of one virtio-mmio window (spec 4.2, version 2). Transport-independent of
 * how accesses arrive: `read`/`write` take an offset in the window, an access size and a
 * value, and always answer. Every value is the guest's: bounded before use.
 */
export class MmioRegisters {
  readonly counters: MmioCounters = {
    reads: 0,
    writes: 0,
    notifies: 0,
    wrongSize: 0,
    wrongDirection: 0,
    unknownRegister: 0,
    ignoredQueueWrites: 0,
    badQueueSel: 0,
    ignoredWrites: 0,
    configOutOfRange: 0,
  };
  private deviceFeaturesSel = 0;
  private driverFeaturesSel = 0;
  private queueSel = 0;
  private shmSel = 0;
  private interruptStatus = 0;

  constructor(
    readonly controller: DeviceController,
    private readonly options: MmioRegisterOptions,
  ) {}

  /** InterruptStatus as the driver would read it. */
  get pendingInterrupts(): number {
    return this.interruptStatus;
  }

  /** Used-buffer notification for any queue: one line, one bit (4.2.3.4). */
  interruptQueue(): void {
    this.setInterrupt(MMIO_INT_VRING);
  }

  /** Configuration change notification (also NEEDS_RESET). */
  interruptConfig(): void {
    this.setInterrupt(MMIO_INT_CONFIG);
  }

  private setInterrupt(bit: number): void {
    this.interruptStatus |= bit;
    this.options.raise();
  }

  read(offset: number, size: number): bigint {
    this.counters.reads++;
    if (offset >= MMIO_CONFIG && offset < MMIO_WINDOW_SIZE)
      return this.readConfig(offset - MMIO_CONFIG, size);
    // 4.2.2.2: "The driver MUST only use 32 bit wide and aligned reads and writes to access
    // the control registers"; the device side is undefined, we answer 0.
    if (size !== 4 || offset % 4 !== 0) {
      this.counters.wrongSize++;
      return 0n;
    }
    return BigInt(this.readRegister(offset) >>> 0);
  }

  write(offset: number, size: number, value: bigint): void {
    this.counters.writes++;
    if (offset >= MMIO_CONFIG && offset < MMIO_WINDOW_SIZE) {
      this.writeConfig(offset - MMIO_CONFIG, size, value);
      return;
    }
    if (size !== 4 || offset % 4 !== 0) {
      this.counters.wrongSize++;
      return;
    }
    this.writeRegister(offset, Number(value & 0xffff_ffffn));
  }

  private readRegister(offset: number): number {
    const controller = this.controller;
    switch (offset) {
      case MMIO_MAGIC_VALUE:
        return MMIO_MAGIC;
      case MMIO_VERSION:
        return MMIO_VERSION_2;
      case MMIO_DEVICE_ID:
        return controller.device.deviceType;
      case MMIO_VENDOR_ID:
        return this.options.vendorId ?? MMIO_VENDOR_XVIO;
      case MMIO_DEVICE_FEATURES:
        return featureWord(controller.offeredFeatures, this.deviceFeaturesSel);
      case MMIO_QUEUE_NUM_MAX: {
        // 4.2.2: "Reading from the register returns ... zero (0x0) if the queue is not available."
        const setup = controller.queue(this.queueSel);
        if (!setup) return 0;
        return controller.queueMaxSize(this.queueSel);
      }
      case MMIO_QUEUE_READY: {
        const setup = controller.queue(this.queueSel);
        if (!setup) {
          this.counters.badQueueSel++;
          return 0;
        }
        return setup.ready ? 1 : 0;
      }
      case MMIO_INTERRUPT_STATUS:
        return this.interruptStatus;
      case MMIO_STATUS:
        return controller.status;
      case MMIO_SHM_LEN_LOW:
      case MMIO_SHM_LEN_HIGH:
      case MMIO_SHM_BASE_LOW:
      case MMIO_SHM_BASE_HIGH:
        // No device of ours has shared memory regions: every SHMSel names a missing one.
        return MMIO_SHM_ABSENT;
      case MMIO_QUEUE_RESET:
        return 0;
      case MMIO_CONFIG_GENERATION:
        return controller.configGeneration;
      case MMIO_DEVICE_FEATURES_SEL:
      case MMIO_DRIVER_FEATURES:
      case MMIO_DRIVER_FEATURES_SEL:
      case MMIO_QUEUE_SEL:
      case MMIO_QUEUE_NUM:
      case MMIO_QUEUE_NOTIFY:
      case MMIO_INTERRUPT_ACK:
      case MMIO_QUEUE_DESC_LOW:
      case MMIO_QUEUE_DESC_HIGH:
      case MMIO_QUEUE_DRIVER_LOW:
      case MMIO_QUEUE_DRIVER_HIGH:
      case MMIO_QUEUE_DEVICE_LOW:
      case MMIO_QUEUE_DEVICE_HIGH:
      case MMIO_SHM_SEL:
        this.counters.wrongDirection++;
        return 0;
      default:
        this.counters.unknownRegister++;
        return 0;
    }
  }

  private writeRegister(offset: number, value: number): void {
    const controller = this.controller;
    switch (offset) {
      case MMIO_DEVICE_FEATURES_SEL:
        this.deviceFeaturesSel = value;
        return;
      case MMIO_DRIVER_FEATURES_SEL:
        this.driverFeaturesSel = value;
        return;
      case MMIO_DRIVER_FEATURES: {
        // featureWord/setFeatureWord ignore selectors beyond the 128 bits virtio defines.
        const updated = setFeatureWord(controller.driverFeatures, this.driverFeaturesSel, value);
        if (!controller.setDriverFeatures(updated)) this.counters.ignoredWrites++;
        return;
      }
      case MMIO_QUEUE_SEL:
        this.queueSel = value;
        return;
      case MMIO_SHM_SEL:
        this.shmSel = value;
        return;
      case MMIO_QUEUE_NUM:
        this.queueWrite((setup) => {
          setup.size = value;
        });
        return;
      case MMIO_QUEUE_READY: {
        const setup = controller.queue(this.queueSel);
        if (!setup) {
          this.counters.badQueueSel++;
          return;
        }
        if (!this.inSetupPhase()) {
          this.counters.ignoredQueueWrites++;
          return;
        }
        setup.ready = (value & 1) === 1;
        return;
      }
      case MMIO_QUEUE_DESC_LOW:
        this.queueWrite((setup) => {
          setup.desc = low(setup.desc, value);
        });
        return;
      case MMIO_QUEUE_DESC_HIGH:
        this.queueWrite((setup) => {
          setup.desc = high(setup.desc, value);
        });
        return;
      case MMIO_QUEUE_DRIVER_LOW:
        this.queueWrite((setup) => {
          setup.driver = low(setup.driver, value);
        });
        return;
      case MMIO_QUEUE_DRIVER_HIGH:
        this.queueWrite((setup) => {
          setup.driver = high(setup.driver, value);
        });
        return;
      case MMIO_QUEUE_DEVICE_LOW:
        this.queueWrite((setup) => {
          setup.device = low(setup.device, value);
        });
        return;
      case MMIO_QUEUE_DEVICE_HIGH:
        this.queueWrite((setup) => {
          setup.device = high(setup.device, value);
        });
        return;
      case MMIO_QUEUE_NOTIFY:
        // Without VIRTIO_F_NOTIFICATION_DATA the value is the queue index (4.2.2); the
        // controller ignores kicks for queues that are not running.
        this.counters.notifies++;
        controller.kick(value & 0xffff);
        return;
      case MMIO_INTERRUPT_ACK:
        this.interruptStatus &= ~value;
        if (this.interruptStatus === 0) this.options.lower();
        return;
      case MMIO_STATUS: {
        const accepted = controller.setStatus(value);
        if (!accepted) this.counters.ignoredWrites++;
        if ((value & 0xff) === 0) {
          // 4.2.2.1: "Upon reset, the device MUST clear all bits in InterruptStatus and ready
          // bits in the QueueReady register for all queues" (the controller cleared the queues).
          this.interruptStatus = 0;
          this.options.lower();
          this.deviceFeaturesSel = 0;
          this.driverFeaturesSel = 0;
          this.queueSel = 0;
        }
        this.options.statusChanged?.(controller.status);
        return;
      }
      case MMIO_QUEUE_RESET:
        // Only with VIRTIO_F_RING_RESET, which xvio does not offer: ignored.
        if (!hasFeature(controller.driverFeatures, VIRTIO_F_RING_RESET)) this.counters.ignoredWrites++;
        return;
      case MMIO_MAGIC_VALUE:
      case MMIO_VERSION:
      case MMIO_DEVICE_ID:
      case MMIO_VENDOR_ID:
      case MMIO_DEVICE_FEATURES:
      case MMIO_QUEUE_NUM_MAX:
      case MMIO_INTERRUPT_STATUS:
      case MMIO_SHM_LEN_LOW:
      case MMIO_SHM_LEN_HIGH:
      case MMIO_SHM_BASE_LOW:
      case MMIO_SHM_BASE_HIGH:
      case MMIO_CONFIG_GENERATION:
        this.counters.wrongDirection++;
        return;
      default:
        this.counters.unknownRegister++;
    }
  }

  /**
   * Queues are configured after FEATURES_OK and before DRIVER_OK (3.1.1 step 7), and a
   * queue's registers only while QueueReady is 0 (4.2.3.2: "check that the queue is not
   * already in use"). Anything else is ignored and counted.
   */
  private queueWrite(apply: (setup: NonNullable<ReturnType<DeviceController['queue']>>) => void): void {
    const setup = this.controller.queue(this.queueSel);
    if (!setup) {
      this.counters.badQueueSel++;
      return;
    }
    if (!this.inSetupPhase() || setup.ready) {
      this.counters.ignoredQueueWrites++;
      return;
    }
    apply(setup);
  }

  private inSetupPhase(): boolean {
    const status = this.controller.status;
    return (status & STATUS_FEATURES_OK) !== 0 && (status & (STATUS_DRIVER_OK | STATUS_FAILED)) === 0;
  }

  private readConfig(offset: number, size: number): bigint {
    // 4.2.2.2: the device-specific configuration may be accessed with any width the field
    // needs (8/16/32 bits; 64-bit fields as two 32-bit accesses, which we also accept whole).
    if (offset + size > MMIO_CONFIG_MAX || offset + size > this.controller.device.configSize) {
      this.counters.configOutOfRange++;
    }
    const bytes = this.controller.readConfig(offset, size);
    let value = 0n;
    for (let i = bytes.length - 1; i >= 0; i--) value = (value << 8n) | BigInt(bytes[i] as number);
    return value;
  }

  private writeConfig(offset: number, size: number, value: bigint): void {
    const bytes = new Uint8Array(size);
    for (let i = 0; i < size; i++) bytes[i] = Number((value >> BigInt(i * 8)) & 0xffn);
    if (offset + size > MMIO_CONFIG_MAX || !this.controller.writeConfig(offset, bytes)) {
      this.counters.configOutOfRange++;
    }
  }

  /** The SHM selector last written (no device has regions; kept for diagnostics). */
  get selectedSharedMemory(): number {
    return this.shmSel;
  }
}

function low(current: bigint, value: number): bigint {
  return (current & 0xffff_ffff_0000_0000n) | BigInt(value >>> 0);
}

function high(current: bigint, value: number): bigint {
  return (current & 0xffff_ffffn) | (BigInt(value >>> 0) << 32n);
}
