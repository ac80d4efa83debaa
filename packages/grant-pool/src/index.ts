export type {
  FenceOrder,
  GuestMemory,
  MappedRanges,
  MemoryAccess,
  MemoryCounters,
  MemoryRange,
} from './guest-memory.js';
export { MAX_RANGE_LENGTH } from './guest-memory.js';
export { GuestMemoryError, type MemoryFaultCode } from './memory-errors.js';
export { fence } from './memory-fence.js';
export {
  GRANT_ADDRESS_FLAG,
  PAGE_SHIFT,
  PAGE_SIZE,
  decodeGrantAddress,
  encodeGrantAddress,
  isGrantAddress,
} from './grant-address.js';
export { createTestMemory, type TestMemory, type TestMemoryOptions } from './test-memory.js';
export { createRegionsMemory, type MemoryRegion, type RegionsMemory } from './regions-memory.js';
