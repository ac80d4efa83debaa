export { GpuConfigError, type GpuConfig, type GpuConfigInput, gpuConfigSchema, parseGpuConfig } from './gpu-config.js';
export { GpuDevice, type GpuDeviceOptions, MAX_RESOURCE_SIDE, createGpuDevice } from './gpu-device.js';
export { EDID_MAX_HEIGHT, EDID_MAX_WIDTH, createEdid, type EdidOptions } from './gpu-edid.js';
export { FanOutGpuHost, type GpuCursor, type GpuFrame, type GpuHost, NullGpuHost } from './gpu-host.js';
export { GpuMetrics } from './gpu-metrics.js';
export { decodePng, encodePng } from './gpu-png.js';
export * from './gpu-wire.js';
export { GpuViewer, type GpuViewerOptions } from './gpu-viewer.js';
