export type {
  BufferedIoreqMode,
  DeviceModel,
  InterruptEvent,
  IoRangeKind,
  PciAddress,
} from './xen-device-model.js';
export {
  errnoName,
  GrantError,
  isXenErrno,
  XEN_ERRNO,
  type XenErrno,
  XenError,
  type XenMissing,
  type XenService,
  XenUnavailableError,
} from './xen-errors.js';
export type { EventChannel, EventChannelBindOptions, EventChannels } from './xen-event-channels.js';
export type {
  ForeignMapOptions,
  ForeignMapping,
  ForeignMemory,
  ForeignResource,
} from './xen-foreign-memory.js';
export {
  GRANT_PAGE_BYTES,
  type GrantCopyEndpoint,
  type GrantCopySegment,
  type GrantMapping,
  type GrantMapRequest,
  type GrantShareOptions,
  type GrantTables,
  type SharedGrantPages,
} from './xen-grant-tables.js';
export * from './xen-grant-wire.js';
export type {
  IoClaim,
  IoHandler,
  IoRequest,
  IoRequestBase,
  IoreqServer,
  IoreqServerOptions,
  IoreqServerStats,
  MmioRequest,
  PciConfigRequest,
  PortRequest,
} from './xen-ioreq-server.js';
export * from './xen-ioreq-wire.js';
export type { XenServices } from './xen-services.js';
export type {
  XenStore,
  XenStoreOps,
  XenStoreTransaction,
  XenStoreTransactionOptions,
  XenStoreWatch,
  XenStoreWatchEvent,
  XenStoreWatchOptions,
} from './xenstore.js';
export * from './xenstore-wire.js';
