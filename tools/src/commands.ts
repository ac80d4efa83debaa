import type { CommandModule } from './cli-context.js';
import { composeCommand } from './compose-command.js';
import { demoCommand } from './demo-command.js';
import { devicesCommand } from './devices-command.js';
import { doctorCommand } from './doctor-command.js';
import { newDeviceCommand } from './new-device-command.js';
import { runCommand } from './run-command.js';
import { vhostUserCommand } from './vhost-user-command.js';
import { xenstoredCommand } from './xenstored-command.js';

/** Every command of the workspace CLI, in help order. */
export const ALL_COMMANDS: readonly CommandModule[] = [
  demoCommand,
  runCommand,
  vhostUserCommand,
  composeCommand,
  devicesCommand,
  newDeviceCommand,
  xenstoredCommand,
  doctorCommand,
];
