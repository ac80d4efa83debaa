export { InterruptLine, type InterruptRoute } from './mmio-interrupt.js';
export {
  LIBXL_VIRTIO_KIND,
  LIBXL_VIRTIO_TYPE_PREFIX,
  LibxlBackendNode,
  LibxlDeviceError,
  type LibxlDeviceErrorCode,
  LibxlMmioDevice,
  type LibxlMmioDeviceOptions,
  type LibxlVirtioDevice,
  libxlBackendPath,
  listLibxlVirtioDevices,
  readLibxlVirtioDevice,
} from './mmio-libxl.js';
export { type MmioCounters, type MmioRegisterOptions, MmioRegisters } from './mmio-registers.js';
export { MmioTransport, type MmioTransportOptions } from './mmio-transport.js';
export * as mmioRegister from './mmio-wire.js';
export { libxlMmioSlot, MMIO_WINDOW_SIZE } from './mmio-wire.js';
