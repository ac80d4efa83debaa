export { BufferArena, seededRandom, type MockBuffer, type UsedElement } from './mock-buffers.js';
export {
  MockSplitQueue,
  type ChainOptions,
  type MockQueueOptions,
  type PlacedBuffer,
  type RawDescriptor,
} from './mock-split-queue.js';
