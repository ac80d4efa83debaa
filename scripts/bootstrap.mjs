#!/usr/bin/env node
// The README's commands run through here so that a machine with only node and npm needs
// nothing else: it brings the pinned pnpm, installs the workspace, then runs the job.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const pinned = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).packageManager; // pnpm@x.y.z
const env = { ...process.env, TURBO_TELEMETRY_DISABLED: '1', COREPACK_INTEGRITY_KEYS: '0' };

function run(command, args, options = {}) {
  const result = spawnSync(command, args, { stdio: 'inherit', cwd: root, env, ...options });
  if (result.error) throw result.error;
  return result.status ?? 1;
}

function pnpm(args) {
  const version = pinned.split('@')[1];
  const local = spawnSync('pnpm', ['--version'], { encoding: 'utf8', env });
  if (local.status === 0 && local.stdout.trim() === version) return run('pnpm', args);
  return run('npx', ['--yes', pinned, ...args]);
}

function ensureInstalled() {
  const marker = join(root, 'node_modules', '.modules.yaml');
  const lock = join(root, 'pnpm-lock.yaml');
  if (existsSync(marker) && statSync(marker).mtimeMs >= statSync(lock).mtimeMs) return;
  const status = pnpm(['install', '--frozen-lockfile']);
  if (status !== 0) process.exit(status);
}

/** One closing line any CI can read: 'tests: N passed, N failed'. */
function printSummary(report) {
  if (!existsSync(report)) return;
  const result = JSON.parse(readFileSync(report, 'utf8'));
  const skipped = (result.numPendingTests ?? 0) + (result.numTodoTests ?? 0);
  console.log(
    `tests: ${result.numPassedTests} passed, ${result.numFailedTests} failed${skipped ? `, ${skipped} skipped` : ''}`,
  );
}

const job = process.argv[2];
const rest = process.argv.slice(3);
ensureInstalled();
switch (job) {
  case 'start':
    process.exit(pnpm(['run', 'xvio', 'demo', ...rest]));
    break;
  case 'test': {
    const report = join(root, 'node_modules', '.cache', 'xvio-test-report.json');
    const status = pnpm([
      'run',
      'test:unit',
      '--reporter=default',
      '--reporter=json',
      `--outputFile.json=${report}`,
      ...rest,
    ]);
    printSummary(report);
    process.exit(status);
    break;
  }
  case 'bench':
    process.exit(pnpm(['exec', 'turbo', 'run', 'bench', '--concurrency=1', ...rest]));
    break;
  default:
    console.error(`bootstrap: unknown job '${job}' (expected start, test or bench)`);
    process.exit(2);
}
