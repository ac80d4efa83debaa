import { resolve } from 'node:path';
import type { CommandModule } from './cli-context.js';
import { startSimulatedXenstored } from './xen-services.js';

export const xenstoredCommand: CommandModule = {
  name: 'xenstored',
  register(program, runtime) {
    program
      .command('xenstored')
      .description(
        "the simulator's xenstored on a unix socket (point libxenstore tools at it with XENSTORED_PATH)",
      )
      .requiredOption('--socket-path <path>', 'unix socket to listen on (a stale socket there is replaced)')
      .action(async (options: { socketPath: string }) => {
        const { context, log, shutdown } = runtime();
        const socketPath = resolve(context.cwd, options.socketPath);
        const server = await startSimulatedXenstored(socketPath, log.child({ component: 'xenstored' }));
        shutdown.add('xenstored', () => server.close());
        if (context.handleSignals) shutdown.install();
        log.info({ socketPath }, 'xenstored listening');
        context.stdout.write(`xenstored listening on ${socketPath}\nexport XENSTORED_PATH=${socketPath}\n`);
        await shutdown.whenStopRequested();
      });
  },
};
