export type { CliContext, CommandModule, CommandRuntime, OutputStream } from './cli-context.js';
export { CliError, type CliErrorCode } from './cli-errors.js';
export { createLogger, deviceLogger, type LogLevel } from './cli-logger.js';
export { CLI_VERSION, createProgram, runCli } from './cli-main.js';
export { Shutdown } from './cli-shutdown.js';
export {
  createDeviceRegistry,
  createWorkspaceRegistry,
  DEVICE_NAMES,
  type DeviceName,
  type DeviceRegistry,
  parseDeviceList,
} from './device-registry.js';
export { type CheckResult, runHostChecks } from './doctor-checks.js';
export { loadRunPlan, planRun, type RunPlan, runConfigSchema } from './run-config.js';
export { parseXlConfig, parseXlVirtioSpec, readLibxlVirtioNodes, readXlDomain } from './xl-config.js';
