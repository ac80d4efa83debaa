export {
  MAX_POLL_US,
  OFFERED_PROTOCOL_FEATURES,
  type SendMessage,
  VhostUserBackend,
  type VhostUserBackendOptions,
  type VhostUserLogger,
  type VhostUserMetrics,
} from './vhost-user-backend.js';
export { VhostUserError, type VhostUserErrorCode } from './vhost-user-errors.js';
export { mapFdRegion, type XenRegionMapper, type XenRegionRequest } from './vhost-user-memory.js';
export {
  type ServeVhostUserOptions,
  serveVhostUser,
  type VhostUserServer,
  type VhostUserServerEvents,
} from './vhost-user-server.js';
export type { ChannelEnd } from './vhost-user-socket.js';
export * as vhostUserWire from './vhost-user-wire.js';
export {
  createXenRegionMapper,
  DEFAULT_MAX_ADVANCE_PAGES,
  GrantRegionMemory,
  type XenGrantStrategy,
  type XenRegionMapperOptions,
} from './vhost-user-xen.js';
