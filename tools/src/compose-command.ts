import { resolve } from 'node:path';
import type { CommandModule } from './cli-context.js';
import { CliError } from './cli-errors.js';
import { bundleDigest, compose } from './compose.js';
import { deviceListOption } from './device-options.js';
import type { DeviceName } from './device-registry.js';

interface ComposeFlags {
  devices: DeviceName[];
  out: string;
  name: string;
  sea?: boolean;
  xen: boolean;
}

function megabytes(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}

export const composeCommand: CommandModule = {
  name: 'compose',
  register(program, runtime) {
    program
      .command('compose')
      .description(
        'build one backend holding only the chosen devices: a bundle that needs no node_modules, or a single executable',
      )
      .requiredOption(
        '--devices <list>',
        'devices to compose in (console, rng, net, gpu, template)',
        deviceListOption,
      )
      .option('--out <dir>', 'output directory', 'dist/backend')
      .option('--name <name>', 'file name of the backend', 'xvio-backend')
      .option('--sea', 'also build a Node single-executable application (~100 MiB)')
      .option('--no-xen', 'leave the Xen services out (vhost-user only)')
      .action(async (options: ComposeFlags) => {
        const { context, log } = runtime();
        if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(options.name)) {
          throw new CliError(
            'invalid-arguments',
            `--name '${options.name}': use letters, digits, '.', '_' and '-'`,
          );
        }
        const outDir = resolve(context.cwd, options.out);
        log.info({ devices: options.devices, sea: options.sea === true }, 'composing');
        const result = await compose({
          devices: options.devices,
          outDir,
          name: options.name,
          sea: options.sea === true,
          xen: options.xen,
        });
        const lines = [
          `composed ${options.devices.join(', ')}${options.xen ? ' (with Xen services)' : ''}`,
          `  bundle: ${result.bundle} (sha256 ${await bundleDigest(result.bundle)})`,
          `  native: ${result.nativeModule} (keep beside the bundle)`,
        ];
        if (result.executable)
          lines.push(
            `  executable: ${result.executable} (${megabytes(result.bytes)}, needs nothing beside it)`,
          );
        context.stdout.write(`${lines.join('\n')}\n`);
      });
  },
};
