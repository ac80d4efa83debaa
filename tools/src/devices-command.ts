import type { CommandModule } from './cli-context.js';
import { CliError, describeError } from './cli-errors.js';
import { deviceEntry } from './device-registry.js';

export const devicesCommand: CommandModule = {
  name: 'devices',
  register(program, runtime) {
    program
      .command('devices')
      .description('list the devices this build contains and whether each can be loaded')
      .action(async () => {
        const { context } = runtime();
        const lines: string[] = [];
        let missing = 0;
        for (const name of context.registry.names) {
          const entry = deviceEntry(name);
          try {
            await context.registry.load(name);
            lines.push(`  ${name.padEnd(9)} ${entry.packageName.padEnd(19)} available`);
          } catch (error) {
            missing++;
            const reason = CliError.isInstance(error) ? error.message : describeError(error);
            lines.push(`  ${name.padEnd(9)} ${entry.packageName.padEnd(19)} unavailable: ${reason}`);
          }
        }
        context.stdout.write(`${lines.join('\n')}\n`);
        runtime().exitCode = missing > 0 ? 1 : 0;
      });
  },
};
