export { ChainReader, ChainWriter, openChain, type ChainIo } from './chain-io.js';
export { DescriptorChain } from './descriptor-chain.js';
export {
  DeviceController,
  type ControllerHooks,
  type ControllerMetrics,
  type ControllerOptions,
  type QueueSetup,
} from './device-controller.js';
export { serviceQueue, type ChainResult, type ServiceResult } from './queue-service.js';
export { PackedQueue, checkPackedQueueConfig } from './packed-queue.js';
export { SplitQueue, checkSplitQueueConfig } from './split-queue.js';
export * as splitRing from './split-ring-wire.js';
export * as packedRing from './packed-ring-wire.js';
export { vringNeedEvent, MAX_QUEUE_SIZE } from './split-ring-wire.js';
export type { DeviceContext, VirtioDevice } from './virtio-device.js';
export {
  DeviceError,
  VirtioError,
  VirtqueueError,
  type DeviceErrorCode,
  type VirtqueueErrorCode,
} from './virtio-errors.js';
export * from './virtio-features.js';
export * from './virtio-status.js';
export { createVirtqueue } from './virtqueue-factory.js';
export type { Virtqueue, VirtqueueConfig, VirtqueueState, VirtqueueStats } from './virtqueue.js';
