export {
  createForeignMappingMemory,
  DEFAULT_CHUNK_PAGES,
  DEFAULT_MAX_CHUNKS,
  ForeignMappingMemory,
  type ForeignMappingMemoryOptions,
} from './foreign-mapping-memory.js';
export {
  decodeGrantAddress,
  encodeGrantAddress,
  GRANT_ADDRESS_FLAG,
  isGrantAddress,
  PAGE_SHIFT,
  PAGE_SIZE,
} from './grant-address.js';
export {
  createGrantCopyMemory,
  DEFAULT_BOUNCE_CACHE_BYTES,
  GrantCopyMemory,
  type GrantCopyMemoryOptions,
  MAX_COPY_BATCH,
} from './grant-copy-memory.js';
export {
  clampWritten,
  createGrantMapMemory,
  DEFAULT_MAX_REQUEST_PAGES,
  GrantMapMemory,
  type GrantMapMemoryOptions,
  type XenGuestMemory,
} from './grant-map-memory.js';
export { grantSpanOfHalves, MAX_GRANT_REF } from './grant-span.js';
export type {
  FenceOrder,
  GuestMemory,
  MappedRanges,
  MemoryAccess,
  MemoryCounters,
  MemoryRange,
} from './guest-memory.js';
export { MAX_RANGE_LENGTH } from './guest-memory.js';
export {
  createGuestMemory,
  type GuestMemoryConfig,
  type GuestMemoryConfigInput,
  type GuestMemoryServices,
  type GuestMemoryStrategy,
  guestMemoryConfigSchema,
  parseGuestMemoryConfig,
} from './memory-config.js';
export { newStrategyCounters, type StrategyCounters } from './memory-counters.js';
export { GuestMemoryError, type MemoryFaultCode } from './memory-errors.js';
export { fence } from './memory-fence.js';
export {
  createPersistentPoolMemory,
  DEFAULT_MAX_PERSISTENT_PAGES,
  PersistentPoolMemory,
  type PersistentPoolMemoryOptions,
} from './persistent-pool-memory.js';
export {
  decodePoolTable,
  encodePoolTable,
  POOL_TABLE_MAGIC,
  POOL_TABLE_MAX_REFS,
  POOL_TABLE_XENSTORE_KEY,
} from './pool-table-wire.js';
export { createRegionsMemory, type MemoryRegion, type RegionsMemory, regionSize } from './regions-memory.js';
export { createTestMemory, type TestMemory, type TestMemoryOptions } from './test-memory.js';
