import { Command, CommanderError, Option } from 'commander';
import type { CliContext, CommandModule, CommandRuntime } from './cli-context.js';
import { CliError, describeError } from './cli-errors.js';
import { createLogger, LOG_LEVELS, type LogLevel } from './cli-logger.js';
import { Shutdown } from './cli-shutdown.js';

export const CLI_VERSION = '0.1.0';

/**
 * Builds the program: global options, then each command module. Commands read the runtime
 * (logger, shutdown) lazily because commander parses global options before running actions.
 */
export function createProgram(
  context: CliContext,
  commands: readonly CommandModule[],
): {
  program: Command;
  runtime: () => CommandRuntime;
} {
  const program = new Command(context.programName)
    .description('VirtIO device backends for Xen guests and vhost-user')
    .version(CLI_VERSION, '-V, --version')
    .addOption(
      new Option('--log-level <level>', 'log verbosity (logs go to standard error)')
        .choices([...LOG_LEVELS])
        .default('info'),
    )
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput({
      writeOut: (text) => void context.stdout.write(text),
      writeErr: (text) => void context.stderr.write(text),
    });
  let current: CommandRuntime | undefined;
  const runtime = (): CommandRuntime => {
    if (current) return current;
    const logLevel = program.opts<{ logLevel: LogLevel }>().logLevel;
    const log = createLogger({ level: logLevel, destination: context.stderr });
    current = { context, log, logLevel, shutdown: new Shutdown(log), exitCode: 0 };
    return current;
  };
  for (const command of commands) command.register(program, runtime);
  // Every subcommand reports bad flags the same way and never calls process.exit itself.
  for (const sub of program.commands) {
    sub.exitOverride().showHelpAfterError(`(run '${context.programName} ${sub.name()} --help' for usage)`);
    sub.configureOutput({
      writeOut: (text) => void context.stdout.write(text),
      writeErr: (text) => void context.stderr.write(text),
    });
  }
  return { program, runtime };
}

/**
 * Runs the CLI and returns the exit status: 0 on success, commander's status for bad flags,
 * the CliError's status for a refused command, 1 for anything unexpected. Never throws.
 */
export async function runCli(
  argv: readonly string[],
  context: CliContext,
  commands: readonly CommandModule[],
) {
  const { program, runtime } = createProgram(context, commands);
  try {
    await program.parseAsync([...argv]);
    return runtime().exitCode;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and version end with code 0; bad flags were already printed by commander.
      return error.exitCode === 0 ? 0 : 2;
    }
    if (CliError.isInstance(error)) {
      context.stderr.write(`${context.programName}: ${error.message}\n`);
      return error.exitCode;
    }
    context.stderr.write(`${context.programName}: unexpected failure: ${describeError(error)}\n`);
    try {
      runtime().log.debug({ err: error }, 'unexpected failure');
    } catch {
      // the logger itself failed: the line above is all we can say
    }
    return 1;
  } finally {
    try {
      await runtime().shutdown.run();
    } catch {
      // cleanups log their own failures
    }
  }
}
