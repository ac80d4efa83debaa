export {
  type GpuConfig,
  GpuConfigError,
  type GpuConfigInput,
  gpuConfigSchema,
  parseGpuConfig,
} from './gpu-config.js';
export { createGpuDevice, GpuDevice, type GpuDeviceOptions, MAX_RESOURCE_SIDE } from './gpu-device.js';
export { createEdid, EDID_MAX_HEIGHT, EDID_MAX_WIDTH, type EdidOptions } from './gpu-edid.js';
export { FanOutGpuHost, type GpuCursor, type GpuFrame, type GpuHost, NullGpuHost } from './gpu-host.js';
export { GpuMetrics } from './gpu-metrics.js';
export { decodePng, encodePng } from './gpu-png.js';
export { GpuViewer, type GpuViewerOptions } from './gpu-viewer.js';
export * from './gpu-wire.js';
export {
  type QemuDisplayMode,
  VhostUserGpuDisplay,
  type VhostUserGpuDisplayCounters,
  type VhostUserGpuDisplayOptions,
} from './vhost-user-gpu-display.js';
export * as vhostUserGpuWire from './vhost-user-gpu-wire.js';
