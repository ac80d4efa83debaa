import type { CliContext, CommandModule } from '../cli-context.js';
import { runCli } from '../cli-main.js';
import { ALL_COMMANDS } from '../commands.js';
import { createWorkspaceRegistry, type DeviceRegistry } from '../device-registry.js';

export interface CliResult {
  status: number;
  stdout: string;
  stderr: string;
}

export interface TestRunOptions {
  registry?: DeviceRegistry;
  cwd?: string;
  env?: Record<string, string | undefined>;
  commands?: readonly CommandModule[];
}

/** Runs the CLI in-process with captured output (no signal handlers, no process.exit). */
export async function runForTest(args: readonly string[], options: TestRunOptions = {}): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  const context: CliContext = {
    registry: options.registry ?? createWorkspaceRegistry(),
    stdout: { write: (text: string) => (stdout += text) },
    stderr: { write: (text: string) => (stderr += text) },
    env: options.env ?? {},
    cwd: options.cwd ?? process.cwd(),
    handleSignals: false,
    programName: 'xvio',
  };
  const status = await runCli(['node', 'xvio', ...args], context, options.commands ?? ALL_COMMANDS);
  return { status, stdout, stderr };
}
