export {
  type ActivateForTestOptions,
  activateForTest,
  type InterruptLog,
  type MockQueue,
  type TestHarness,
} from './activate-for-test.js';
export {
  type ConformanceExercise,
  type ConformanceOptions,
  runConformanceSuite,
} from './conformance-suite.js';
export { type MalformedRingCase, packedMalformedCases, splitMalformedCases } from './malformed-rings.js';
export { BufferArena, type MockBuffer, seededRandom, type UsedElement } from './mock-buffers.js';
export { MockPackedQueue, type RawPackedDescriptor } from './mock-packed-queue.js';
export {
  type ChainOptions,
  type MockQueueOptions,
  MockSplitQueue,
  type PlacedBuffer,
  type RawDescriptor,
} from './mock-split-queue.js';
