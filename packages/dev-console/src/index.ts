export {
  type ConsoleConfig,
  ConsoleConfigError,
  type ConsoleConfigInput,
  type ConsoleHostConfig,
  type ConsolePortConfig,
  type ConsolePortInput,
  consoleConfigSchema,
  consoleHostSchema,
  consolePortSchema,
  parseConsoleConfig,
  parseConsolePort,
} from './console-config.js';
export {
  ConsoleDevice,
  type ConsoleDeviceOptions,
  createConsoleDevice,
  createConsoleHost,
  openConsoleDevice,
} from './console-device.js';
export {
  type ConsoleHost,
  ConsoleHostError,
  type ConsoleHostErrorCode,
  type ConsoleHostEvents,
  type ConsoleHostStats,
  FileConsoleHost,
  type FileConsoleHostOptions,
  MemoryConsoleHost,
  type MemoryConsoleHostOptions,
  NullConsoleHost,
  type SocketConsoleHostOptions,
  StdioConsoleHost,
  type StdioConsoleHostOptions,
  TcpConsoleHost,
  type TcpConsoleHostOptions,
  TeeConsoleHost,
  UnixSocketConsoleHost,
  type UnixSocketConsoleHostOptions,
} from './console-host.js';
export { ConsoleMetrics, ConsolePortMetrics } from './console-metrics.js';
export { PtyConsoleHost, type PtyConsoleHostOptions } from './console-pty.js';
export * from './console-wire.js';
