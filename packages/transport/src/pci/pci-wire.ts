// Virtio over PCI, modern interface (virtio spec 1.2 section 4.1) and the PCI structures it
// lives in (PCI Local Bus 3.0 type-0 header, MSI-X capability). Offsets are named; values
// are little-endian like all of PCI.

// --- Type-0 configuration header (PCI 3.0 section 6.1) ---
export const PCI_VENDOR_ID = 0x00; // u16
export const PCI_DEVICE_ID = 0x02; // u16
export const PCI_COMMAND = 0x04; // u16
export const PCI_STATUS = 0x06; // u16
export const PCI_REVISION_ID = 0x08; // u8
export const PCI_CLASS_PROG = 0x09; // u8
export const PCI_CLASS_DEVICE = 0x0a; // u16: subclass, class
export const PCI_CACHE_LINE_SIZE = 0x0c;
export const PCI_LATENCY_TIMER = 0x0d;
export const PCI_HEADER_TYPE = 0x0e;
export const PCI_BAR0 = 0x10;
export const PCI_BAR1 = 0x14;
export const PCI_BAR5 = 0x24;
export const PCI_SUBSYSTEM_VENDOR_ID = 0x2c; // u16
export const PCI_SUBSYSTEM_ID = 0x2e; // u16
export const PCI_ROM_ADDRESS = 0x30;
export const PCI_CAPABILITY_LIST = 0x34; // u8
export const PCI_INTERRUPT_LINE = 0x3c; // u8
export const PCI_INTERRUPT_PIN = 0x3d; // u8: 1 = INTA#

/** Conventional PCI config space; registers above (PCIe extended space) read 0 here. */
export const PCI_CONFIG_SPACE_SIZE = 256;
export const PCI_EXTENDED_CONFIG_SIZE = 4096;

export const PCI_COMMAND_IO = 1 << 0;
export const PCI_COMMAND_MEMORY = 1 << 1;
export const PCI_COMMAND_MASTER = 1 << 2;
export const PCI_COMMAND_INTX_DISABLE = 1 << 10;
export const PCI_STATUS_INTERRUPT = 1 << 3;
export const PCI_STATUS_CAP_LIST = 1 << 4;

/** BAR type bits: memory, 64-bit (bits 2:1 = 10b); not prefetchable (bit 3 clear). */
export const PCI_BAR_MEM_TYPE_64 = 0x4;
export const PCI_BAR_FLAGS_MASK = 0xf;

export const PCI_CAP_ID_VNDR = 0x09;
export const PCI_CAP_ID_MSIX = 0x11;

// --- virtio (4.1.2) ---
export const VIRTIO_PCI_VENDOR = 0x1af4;
/** 4.1.2.1: modern devices are 0x1040 + device type. */
export const VIRTIO_PCI_DEVICE_BASE = 0x1040;
/** 4.1.2.1: a non-transitional device SHOULD have a Revision ID of 1 or higher. */
export const VIRTIO_PCI_REVISION = 1;
export const VIRTIO_PCI_SUBSYSTEM_ID = 0x1100;

/** struct virtio_pci_cap (4.1.4): cap_vndr, cap_next, cap_len, cfg_type, bar, id, padding[2], offset, length. */
export const CAP_VNDR = 0;
export const CAP_NEXT = 1;
export const CAP_LEN = 2;
export const CAP_CFG_TYPE = 3;
export const CAP_BAR = 4;
export const CAP_ID = 5;
export const CAP_OFFSET = 8; // le32
export const CAP_LENGTH = 12; // le32
export const VIRTIO_PCI_CAP_SIZE = 16;
/** struct virtio_pci_notify_cap: the cap plus le32 notify_off_multiplier. */
export const CAP_NOTIFY_OFF_MULTIPLIER = 16;
export const VIRTIO_PCI_NOTIFY_CAP_SIZE = 20;
/** struct virtio_pci_cfg_cap: the cap plus u8 pci_cfg_data[4]. */
export const CAP_PCI_CFG_DATA = 16;
export const VIRTIO_PCI_CFG_CAP_SIZE = 20;

export const VIRTIO_PCI_CAP_COMMON_CFG = 1;
export const VIRTIO_PCI_CAP_NOTIFY_CFG = 2;
export const VIRTIO_PCI_CAP_ISR_CFG = 3;
export const VIRTIO_PCI_CAP_DEVICE_CFG = 4;
export const VIRTIO_PCI_CAP_PCI_CFG = 5;

/** struct virtio_pci_common_cfg (4.1.4.3). */
export const COMMON_DEVICE_FEATURE_SELECT = 0x00; // le32 RW
export const COMMON_DEVICE_FEATURE = 0x04; // le32 R
export const COMMON_DRIVER_FEATURE_SELECT = 0x08; // le32 RW
export const COMMON_DRIVER_FEATURE = 0x0c; // le32 RW
export const COMMON_CONFIG_MSIX_VECTOR = 0x10; // le16 RW
export const COMMON_NUM_QUEUES = 0x12; // le16 R
export const COMMON_DEVICE_STATUS = 0x14; // u8 RW
export const COMMON_CONFIG_GENERATION = 0x15; // u8 R
export const COMMON_QUEUE_SELECT = 0x16; // le16 RW
export const COMMON_QUEUE_SIZE = 0x18; // le16 RW
export const COMMON_QUEUE_MSIX_VECTOR = 0x1a; // le16 RW
export const COMMON_QUEUE_ENABLE = 0x1c; // le16 RW
export const COMMON_QUEUE_NOTIFY_OFF = 0x1e; // le16 R
export const COMMON_QUEUE_DESC = 0x20; // le64 RW
export const COMMON_QUEUE_DRIVER = 0x28; // le64 RW
export const COMMON_QUEUE_DEVICE = 0x30; // le64 RW
export const COMMON_QUEUE_NOTIFY_DATA = 0x38; // le16 R
export const COMMON_QUEUE_RESET = 0x3a; // le16 RW
export const COMMON_CFG_SIZE = 0x3c;

/** 4.1.4.3: "NO_VECTOR": no MSI-X vector for this event. */
export const VIRTIO_MSI_NO_VECTOR = 0xffff;

/** ISR status bits (4.1.4.5). */
export const ISR_QUEUE = 1 << 0;
export const ISR_CONFIG = 1 << 1;

// --- MSI-X capability (PCI 3.0 section 6.8.2) ---
export const MSIX_CONTROL = 2; // le16: table size - 1 (bits 10:0), function mask (14), enable (15)
export const MSIX_TABLE = 4; // le32: offset | BIR
export const MSIX_PBA = 8; // le32: offset | BIR
export const MSIX_CAP_SIZE = 12;
export const MSIX_CONTROL_MASKALL = 1 << 14;
export const MSIX_CONTROL_ENABLE = 1 << 15;
/** One table entry: le32 address low, le32 address high, le32 data, le32 vector control (bit 0 masked). */
export const MSIX_ENTRY_SIZE = 16;
export const MSIX_ENTRY_ADDRESS_LOW = 0;
export const MSIX_ENTRY_ADDRESS_HIGH = 4;
export const MSIX_ENTRY_DATA = 8;
export const MSIX_ENTRY_VECTOR_CONTROL = 12;
export const MSIX_ENTRY_MASKED = 1;

// --- Where xvio puts things: capabilities in config space, regions in BAR 0 ---
export const CAP_COMMON_AT = 0x40;
export const CAP_NOTIFY_AT = 0x50;
export const CAP_ISR_AT = 0x64;
export const CAP_DEVICE_AT = 0x74;
export const CAP_PCI_CFG_AT = 0x84;
export const CAP_MSIX_AT = 0x98;

/** BAR 0 (64-bit memory) layout; regions are page-aligned so a guest can map them apart. */
export const BAR_COMMON_OFFSET = 0x0000;
export const BAR_ISR_OFFSET = 0x1000;
export const BAR_ISR_LENGTH = 4;
export const BAR_DEVICE_OFFSET = 0x2000;
export const BAR_DEVICE_LENGTH = 0x1000;
export const BAR_NOTIFY_OFFSET = 0x3000;
/** Each queue notifies at notify base + queue_notify_off * multiplier; queue_notify_off = queue index. */
export const NOTIFY_OFF_MULTIPLIER = 4;
export const BAR_NOTIFY_LENGTH = 0x1000;
export const BAR_MSIX_TABLE_OFFSET = 0x4000;
export const BAR_MSIX_PBA_OFFSET = 0x5000;
/** A power of two, as every BAR is. */
export const BAR_SIZE = 0x8000;

/** PCI class code (class << 16 | subclass << 8 | prog-if) for a virtio device type, as QEMU assigns them. */
export function pciClassFor(deviceType: number): number {
  switch (deviceType) {
    case 1:
      return 0x02_00_00; // network controller, ethernet
    case 2:
      return 0x01_00_00; // mass storage, SCSI
    case 3:
      return 0x07_80_00; // communication, other
    case 16:
      return 0x03_80_00; // display, other
    case 18:
      return 0x09_80_00; // input, other
    default:
      return 0xff_00_00; // "device does not fit any defined class" (entropy and the rest)
  }
}
