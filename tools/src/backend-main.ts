import type { CommandModule } from './cli-context.js';
import { runCli } from './cli-main.js';
import { createDeviceRegistry, type DeviceName } from './device-registry.js';
import { devicesCommand } from './devices-command.js';
import { doctorCommand } from './doctor-command.js';
import { provideOptionalModule } from './optional-modules.js';
import { runCommand } from './run-command.js';
import { vhostUserCommand } from './vhost-user-command.js';
import { xenstoredCommand } from './xenstored-command.js';

/** The commands a composed backend keeps: serving and checking, not building or scaffolding. */
export const BACKEND_COMMANDS: readonly CommandModule[] = [
  vhostUserCommand,
  runCommand,
  xenstoredCommand,
  devicesCommand,
  doctorCommand,
];

type ModuleLoader = () => Promise<Record<string, unknown>>;

export interface BackendOptions {
  readonly name: string;
  /** The device packages composed in, statically bundled. */
  readonly devices: Partial<Record<DeviceName, ModuleLoader>>;
  /** `null` when the build leaves the module out. */
  readonly xen: ModuleLoader | null;
  readonly vhostUser: ModuleLoader | null;
}

/** The entry point of a composed backend (`xvio compose` generates the call). */
export async function runBackend(options: BackendOptions): Promise<number> {
  provideOptionalModule('xen', options.xen);
  provideOptionalModule('vhost-user', options.vhostUser);
  return runCli(
    process.argv,
    {
      registry: createDeviceRegistry(options.devices),
      stdout: process.stdout,
      stderr: process.stderr,
      env: process.env,
      cwd: process.cwd(),
      handleSignals: true,
      programName: options.name,
    },
    BACKEND_COMMANDS,
  );
}
