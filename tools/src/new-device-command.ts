import { resolve } from 'node:path';
import type { CommandModule } from './cli-context.js';
import { findWorkspaceRoot, scaffoldDevice } from './new-device.js';

export const newDeviceCommand: CommandModule = {
  name: 'new-device',
  register(program, runtime) {
    program
      .command('new-device')
      .description(
        'scaffold packages/dev-NAME from packages/dev-template (renamed, with README, CODEOWNERS line, changeset)',
      )
      .argument('<name>', 'device name: lower-case words joined by hyphens (e.g. sound or sound-card)')
      .option('--root <dir>', 'workspace root (default: the nearest directory with pnpm-workspace.yaml)')
      .option('--owner <owner>', 'CODEOWNERS owner of the new package', '@xvio/maintainers')
      .action(async (name: string, options: { root?: string; owner: string }) => {
        const { context } = runtime();
        const root = options.root ? resolve(context.cwd, options.root) : await findWorkspaceRoot(context.cwd);
        const result = await scaffoldDevice({ root, name, owner: options.owner });
        context.stdout.write(
          [
            `created @xvio/dev-${name}:`,
            ...result.files.map((file) => `  ${file}`),
            'next:',
            '  pnpm install',
            `  pnpm --filter @xvio/dev-${name} test`,
            '',
          ].join('\n'),
        );
      });
  },
};
