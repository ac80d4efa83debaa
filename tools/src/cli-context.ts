import type { Command } from 'commander';
import type { Logger, LogLevel } from './cli-logger.js';
import type { Shutdown } from './cli-shutdown.js';
import type { DeviceRegistry } from './device-registry.js';

/** Where a command writes its results (logs go to the logger). */
export interface OutputStream {
  write(text: string): unknown;
  readonly isTTY?: boolean;
  readonly columns?: number;
}

/** Everything a command reaches outside itself; tests pass stand-ins. */
export interface CliContext {
  readonly registry: DeviceRegistry;
  readonly stdout: OutputStream;
  readonly stderr: OutputStream;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly cwd: string;
  /** Installs SIGINT/SIGTERM handlers for long-running commands (tests leave them out). */
  readonly handleSignals: boolean;
  /** The program name shown in help (`xvio`, or a composed backend's name). */
  readonly programName: string;
}

/** What an action gets besides its own options: the root logger and the shutdown sequence. */
export interface CommandRuntime {
  readonly context: CliContext;
  readonly log: Logger;
  readonly logLevel: LogLevel;
  readonly shutdown: Shutdown;
  /** The status the CLI exits with when the action returns (e.g. 1 when doctor found a problem). */
  exitCode: number;
}

/** One subcommand: adds itself to the program; its action receives the runtime. */
export interface CommandModule {
  readonly name: string;
  register(program: Command, runtime: () => CommandRuntime): void;
}
