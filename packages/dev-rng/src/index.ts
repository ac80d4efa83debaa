export {
  parseRngConfig,
  type RngConfig,
  RngConfigError,
  type RngConfigInput,
  type RngSourceConfig,
  rngConfigSchema,
} from './rng-config.js';
export {
  createEntropySource,
  createRngDevice,
  RateLimiter,
  type RngClock,
  RngDevice,
  type RngDeviceOptions,
  systemClock,
} from './rng-device.js';
export {
  createFileEntropySource,
  createOsEntropySource,
  createSeededEntropySource,
  type EntropySource,
  EntropySourceError,
  type EntropySourceErrorCode,
  FileEntropySource,
  type FileEntropySourceOptions,
  SeededEntropySource,
  type SeededEntropySourceOptions,
} from './rng-host.js';
export { RngMetrics } from './rng-metrics.js';
export * from './rng-wire.js';
