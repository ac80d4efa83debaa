export {
  PCI_TRANSPORT_STATE_VERSION,
  PciStateError,
  type PciStateErrorCode,
  type PciTransportState,
  parsePciTransportState,
  serializePciTransportState,
} from './pci-state.js';
export { type PciCounters, PciTransport, type PciTransportOptions } from './pci-transport.js';
export * as pciRegister from './pci-wire.js';
export { pciClassFor, VIRTIO_PCI_DEVICE_BASE, VIRTIO_PCI_VENDOR } from './pci-wire.js';
