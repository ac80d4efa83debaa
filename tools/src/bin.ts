#!/usr/bin/env node
import { runCli } from './cli-main.js';
import { ALL_COMMANDS } from './commands.js';
import { createWorkspaceRegistry } from './device-registry.js';

const status = await runCli(
  process.argv,
  {
    registry: createWorkspaceRegistry(),
    stdout: process.stdout,
    stderr: process.stderr,
    env: process.env,
    cwd: process.cwd(),
    handleSignals: true,
    programName: 'xvio',
  },
  ALL_COMMANDS,
);
process.exitCode = status;
