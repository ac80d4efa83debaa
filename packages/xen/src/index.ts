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
export {
  type FdStreamOptions,
  type FdStreamWatch,
  type FdWaitPath,
  type FdWatch,
  pollerSettled,
  watchEventFd,
  watchFdStream,
  watchReadable,
} from './xen-fd-watcher.js';
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
  ClaimOptions,
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
export { adoptIoreqServer, createIoreqServer, type IoreqServerServices } from './xen-ioreq-server.js';
export * from './xen-ioreq-wire.js';
export {
  openNativeDeviceModel,
  openNativeEventChannels,
  openNativeForeignMemory,
  openNativeGrantTables,
  openNativeXenServices,
  openNativeXenStore,
} from './xen-native.js';
export {
  bindXenLibrary,
  describeXenHost,
  probeXenHost,
  XEN_LIBRARIES,
  type XenHostProbe,
  type XenLibraryName,
  type XenLibrarySpec,
  xenstoredPaths,
} from './xen-native-libs.js';
export { LibXenStore, openLibXenStore } from './xen-native-xenstore.js';
export type { XenServices } from './xen-services.js';
export {
  createXenSimulator,
  SIM_INTERRUPT_LOG_LIMIT,
  type SimDomain,
  type SimDomainOptions,
  type SimDomainType,
  type SimVcpu,
  type XenSimulator,
  type XenSimulatorOptions,
} from './xen-sim.js';
export { GNTTAB_NR_RESERVED_ENTRIES, SimGrantTables } from './xen-sim-grants.js';
export type { SimAccessOptions, SimPendingIoreq } from './xen-sim-ioreq.js';
export type {
  XenStore,
  XenStoreOps,
  XenStoreTransaction,
  XenStoreTransactionOptions,
  XenStoreWatch,
  XenStoreWatchEvent,
  XenStoreWatchOptions,
} from './xenstore.js';
export { connectXenStore, XenStoreClient, type XenStoreTransport } from './xenstore-client.js';
export * from './xenstore-wire.js';
export {
  DEFAULT_XENSTORED_QUOTA,
  SimXenstored,
  XenstoredConnection,
  type XenstoredOptions,
  type XenstoredQuota,
} from './xenstored.js';
export {
  startXenstoredServer,
  type XenstoredServer,
  type XenstoredServerOptions,
} from './xenstored-server.js';
