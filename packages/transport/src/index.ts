export { type ChainIo, ChainReader, ChainWriter, openChain } from './chain-io.js';
export { DescriptorChain, DescriptorRange } from './descriptor-chain.js';
export {
  type ControllerHooks,
  type ControllerMetrics,
  type ControllerOptions,
  type ControllerSnapshot,
  DeviceController,
  type QueueSetup,
} from './device-controller.js';
export { checkPackedQueueConfig, PackedQueue } from './packed-queue.js';
export * as packedRing from './packed-ring-wire.js';
export { type ChainResult, type ServiceResult, serviceQueue } from './queue-service.js';
export { checkSplitQueueConfig, SplitQueue } from './split-queue.js';
export * as splitRing from './split-ring-wire.js';
export { MAX_QUEUE_SIZE, vringNeedEvent } from './split-ring-wire.js';
export type { DeviceContext, VirtioDevice } from './virtio-device.js';
export {
  DeviceError,
  type DeviceErrorCode,
  VirtioError,
  VirtqueueError,
  type VirtqueueErrorCode,
} from './virtio-errors.js';
export * from './virtio-features.js';
export * from './virtio-status.js';
export type { Virtqueue, VirtqueueConfig, VirtqueueState, VirtqueueStats } from './virtqueue.js';
export { createVirtqueue } from './virtqueue-factory.js';
