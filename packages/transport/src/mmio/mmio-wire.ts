// virtio-MMIO register layout, version 2 (virtio spec 1.2 section 4.2.2, "MMIO Device
// Register Layout"). Offsets are from the start of the device's window; every register but
// the configuration space is 32 bits wide, little-endian (4.2.2: "all register values are
// organized as Little Endian").

export const MMIO_MAGIC_VALUE = 0x000; // R: 0x74726976 ("virt")
export const MMIO_VERSION = 0x004; // R: 2 for the non-legacy layout
export const MMIO_DEVICE_ID = 0x008; // R: virtio device type (spec 5)
export const MMIO_VENDOR_ID = 0x00c; // R
export const MMIO_DEVICE_FEATURES = 0x010; // R: 32 feature bits selected by DeviceFeaturesSel
export const MMIO_DEVICE_FEATURES_SEL = 0x014; // W
export const MMIO_DRIVER_FEATURES = 0x020; // W: 32 feature bits selected by DriverFeaturesSel
export const MMIO_DRIVER_FEATURES_SEL = 0x024; // W
export const MMIO_QUEUE_SEL = 0x030; // W
export const MMIO_QUEUE_NUM_MAX = 0x034; // R: 0 when the selected queue does not exist
export const MMIO_QUEUE_NUM = 0x038; // W
export const MMIO_QUEUE_READY = 0x044; // RW
export const MMIO_QUEUE_NOTIFY = 0x050; // W: queue index (no VIRTIO_F_NOTIFICATION_DATA)
export const MMIO_INTERRUPT_STATUS = 0x060; // R
export const MMIO_INTERRUPT_ACK = 0x064; // W
export const MMIO_STATUS = 0x070; // RW: device status (2.1); writing 0 resets
export const MMIO_QUEUE_DESC_LOW = 0x080; // W
export const MMIO_QUEUE_DESC_HIGH = 0x084; // W
export const MMIO_QUEUE_DRIVER_LOW = 0x090; // W
export const MMIO_QUEUE_DRIVER_HIGH = 0x094; // W
export const MMIO_QUEUE_DEVICE_LOW = 0x0a0; // W
export const MMIO_QUEUE_DEVICE_HIGH = 0x0a4; // W
export const MMIO_SHM_SEL = 0x0ac; // W
export const MMIO_SHM_LEN_LOW = 0x0b0; // R
export const MMIO_SHM_LEN_HIGH = 0x0b4; // R
export const MMIO_SHM_BASE_LOW = 0x0b8; // R
export const MMIO_SHM_BASE_HIGH = 0x0bc; // R
export const MMIO_QUEUE_RESET = 0x0c0; // RW (VIRTIO_F_RING_RESET)
export const MMIO_CONFIG_GENERATION = 0x0fc; // R
export const MMIO_CONFIG = 0x100; // device-specific configuration space

export const MMIO_MAGIC = 0x74726976;
export const MMIO_VERSION_2 = 2;
/** Vendor ID we report: "XVIO" would do, but QEMU and rust-vmm use the PCI vendor 0x1af4 too. */
export const MMIO_VENDOR_XVIO = 0x1af4;

/** InterruptStatus bits (4.2.2). */
export const MMIO_INT_VRING = 1 << 0; // used buffer notification
export const MMIO_INT_CONFIG = 1 << 1; // configuration change notification

/**
 * Shared memory regions the device does not have read as length -1 (4.2.2: "reading from a
 * non-existent region ... SHMLenLow and SHMLenHigh ... return 0xffffffff").
 */
export const MMIO_SHM_ABSENT = 0xffff_ffff;

/** The window one device occupies. libxl on Arm spaces devices 0x200 apart (GUEST_VIRTIO_MMIO_SIZE). */
export const MMIO_WINDOW_SIZE = 0x200;
/** Bytes of configuration space in a window: from 0x100 to the end of the 0x200 window. */
export const MMIO_CONFIG_MAX = MMIO_WINDOW_SIZE - MMIO_CONFIG;

/** Names of the registers, for counters and diagnostics. */
export const MMIO_REGISTER_NAMES: Readonly<Record<number, string>> = {
  [MMIO_MAGIC_VALUE]: 'MagicValue',
  [MMIO_VERSION]: 'Version',
  [MMIO_DEVICE_ID]: 'DeviceID',
  [MMIO_VENDOR_ID]: 'VendorID',
  [MMIO_DEVICE_FEATURES]: 'DeviceFeatures',
  [MMIO_DEVICE_FEATURES_SEL]: 'DeviceFeaturesSel',
  [MMIO_DRIVER_FEATURES]: 'DriverFeatures',
  [MMIO_DRIVER_FEATURES_SEL]: 'DriverFeaturesSel',
  [MMIO_QUEUE_SEL]: 'QueueSel',
  [MMIO_QUEUE_NUM_MAX]: 'QueueNumMax',
  [MMIO_QUEUE_NUM]: 'QueueNum',
  [MMIO_QUEUE_READY]: 'QueueReady',
  [MMIO_QUEUE_NOTIFY]: 'QueueNotify',
  [MMIO_INTERRUPT_STATUS]: 'InterruptStatus',
  [MMIO_INTERRUPT_ACK]: 'InterruptACK',
  [MMIO_STATUS]: 'Status',
  [MMIO_QUEUE_DESC_LOW]: 'QueueDescLow',
  [MMIO_QUEUE_DESC_HIGH]: 'QueueDescHigh',
  [MMIO_QUEUE_DRIVER_LOW]: 'QueueDriverLow',
  [MMIO_QUEUE_DRIVER_HIGH]: 'QueueDriverHigh',
  [MMIO_QUEUE_DEVICE_LOW]: 'QueueDeviceLow',
  [MMIO_QUEUE_DEVICE_HIGH]: 'QueueDeviceHigh',
  [MMIO_SHM_SEL]: 'SHMSel',
  [MMIO_SHM_LEN_LOW]: 'SHMLenLow',
  [MMIO_SHM_LEN_HIGH]: 'SHMLenHigh',
  [MMIO_SHM_BASE_LOW]: 'SHMBaseLow',
  [MMIO_SHM_BASE_HIGH]: 'SHMBaseHigh',
  [MMIO_QUEUE_RESET]: 'QueueReset',
  [MMIO_CONFIG_GENERATION]: 'ConfigGeneration',
};

// Placement libxl uses for virtio-mmio on Arm (xen/include/public/arch-arm.h):
// GUEST_VIRTIO_MMIO_BASE 0x02000000, GUEST_VIRTIO_MMIO_SIZE 1 MiB, one 0x200 window per
// device; SPIs GUEST_VIRTIO_MMIO_SPI_FIRST 33 .. GUEST_VIRTIO_MMIO_SPI_LAST 43.
export const LIBXL_VIRTIO_MMIO_BASE = 0x0200_0000n;
export const LIBXL_VIRTIO_MMIO_SIZE = 0x0010_0000n;
export const LIBXL_VIRTIO_MMIO_SPI_FIRST = 33;
export const LIBXL_VIRTIO_MMIO_SPI_LAST = 43;

/** Where libxl puts the `index`th virtio-mmio device of a guest on Arm, or undefined past the SPI range. */
export function libxlMmioSlot(index: number): { base: bigint; irq: number } | undefined {
  if (!Number.isInteger(index) || index < 0) return undefined;
  const irq = LIBXL_VIRTIO_MMIO_SPI_FIRST + index;
  const base = LIBXL_VIRTIO_MMIO_BASE + BigInt(index * MMIO_WINDOW_SIZE);
  if (
    irq > LIBXL_VIRTIO_MMIO_SPI_LAST ||
    base + BigInt(MMIO_WINDOW_SIZE) > LIBXL_VIRTIO_MMIO_BASE + LIBXL_VIRTIO_MMIO_SIZE
  ) {
    return undefined;
  }
  return { base, irq };
}
