export {
  addXenbusDevice,
  type PoolLoader,
  XenbusBackend,
  type XenbusBackendCounters,
  type XenbusBackendOptions,
  type XenbusGoneReason,
  xenbusPaths,
} from './xenbus-backend.js';
export * from './xenbus-state.js';
export * as xenbusWire from './xenbus-wire.js';
export { XENBUS_VIRTIO_KIND } from './xenbus-wire.js';
