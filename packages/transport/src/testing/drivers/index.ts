export {
  type DmaDirection,
  type DmaMapping,
  DmaRevokeError,
  type GuestDma,
  grantDma,
  physicalDma,
  poolDma,
} from './guest-dma.js';
export {
  GuestDriverError,
  type GuestDriverErrorCode,
  type GuestDriverOptions,
  GuestVirtioDriver,
} from './guest-driver.js';
export { type GuestBuffer, GuestSplitQueue, type GuestUsed } from './guest-split-queue.js';
export { MmioGuestDriver, type MmioGuestOptions } from './mmio-guest-driver.js';
export { MSI_ADDRESS, PciGuestDriver, type PciGuestOptions } from './pci-guest-driver.js';
export {
  attachSimGuest,
  type SimGuest,
  type SimGuestDevice,
  type SimGuestOptions,
  type SimMemoryKind,
  type SimTransportKind,
} from './sim-guest.js';
export { XenbusGuestDriver, type XenbusGuestOptions } from './xenbus-guest-driver.js';
