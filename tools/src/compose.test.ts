import { spawn } from 'node:child_process';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compose, composeEntry, KOFFI_ASSET } from './compose.js';
import { runForTest } from './testing/run-cli.js';
import { requestEntropy } from './testing/vhost-user-driver.js';

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xvio-compose-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Runs a composed backend from a directory with nothing else in it, serving one rng request. */
async function serveOnce(command: string, args: readonly string[], cwd: string): Promise<void> {
  const socketPath = join(cwd, 'rng.sock');
  const child = spawn(
    command,
    [...args, 'vhost-user', 'rng', '-s', socketPath, '--once', '--set', 'source=seeded:5'],
    {
      cwd,
      env: { PATH: process.env.PATH ?? '', TMPDIR: cwd },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  let err = '';
  child.stdout.on('data', (data: Buffer) => (out += data.toString()));
  child.stderr.on('data', (data: Buffer) => (err += data.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  for (let i = 0; i < 200 && !out.includes('serving rng'); i++) {
    if (child.exitCode !== null) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  expect(out, err).toBe(`serving rng (rng0) on ${socketPath}\n`);
  const result = await requestEntropy(socketPath);
  expect(result.usedLength).toBe(512);
  expect(result.untouched).toBeLessThan(32);
  expect(await exited, err).toBe(0);
}

describe('compose entry', () => {
  it('imports exactly the chosen device packages', () => {
    const entry = composeEntry({ devices: ['console', 'net'], name: 'edge', xen: false });
    expect(entry).toContain('import * as device_console from "@xvio/dev-console";');
    expect(entry).toContain('import * as device_net from "@xvio/dev-net";');
    expect(entry).not.toContain('dev-rng');
    expect(entry).not.toContain('@xvio/xen');
    expect(entry).toContain('  xen: null,');
  });
});

describe('xvio compose', () => {
  it('builds a bundle that serves rng with no node_modules beside it', async () => {
    const out = join(dir, 'bundle');
    const result = await runForTest([
      '--log-level',
      'silent',
      'compose',
      '--devices',
      'rng,console',
      '--out',
      out,
      '--no-xen',
    ]);
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(result.stdout).toMatch(
      /^composed rng, console\n {2}bundle: .*xvio-backend\.cjs \(sha256 [0-9a-f]{16}\)\n/,
    );
    const text = await readFile(join(out, 'xvio-backend.cjs'), 'utf8');
    expect(text).toContain('dev-rng/src/');
    expect(text).not.toContain('dev-net/src/');
    // Only the bundle and koffi's native module, in a directory of their own.
    const alone = join(dir, 'alone');
    await mkdir(alone);
    await copyFile(join(out, 'xvio-backend.cjs'), join(alone, 'xvio-backend.cjs'));
    await copyFile(join(out, KOFFI_ASSET), join(alone, KOFFI_ASSET));
    await serveOnce(process.execPath, [join(alone, 'xvio-backend.cjs')], alone);
  }, 120_000);

  it('builds a single executable that serves rng with nothing beside it', async () => {
    const out = join(dir, 'sea');
    const result = await compose({
      devices: ['rng'],
      outDir: out,
      name: 'rng-backend',
      sea: true,
      xen: true,
    });
    expect(result.executable).toBe(join(out, 'rng-backend'));
    expect(result.bytes).toBeGreaterThan(50 * 1024 * 1024);
    const alone = join(dir, 'sea-alone');
    await mkdir(alone);
    await copyFile(result.executable!, join(alone, 'rng-backend'));
    await chmod(join(alone, 'rng-backend'), 0o755);
    await serveOnce(join(alone, 'rng-backend'), [], alone);
  }, 300_000);

  it('rejects bad flags with exact messages', async () => {
    expect((await runForTest(['compose'])).stderr).toBe(
      "error: required option '--devices <list>' not specified\n(run 'xvio compose --help' for usage)\n",
    );
    expect((await runForTest(['compose', '--devices', 'rng,sound'])).stderr).toBe(
      "error: option '--devices <list>' argument 'rng,sound' is invalid. --devices: unknown device 'sound' (allowed: console, rng, net, gpu, template)\n(run 'xvio compose --help' for usage)\n",
    );
    expect(await runForTest(['compose', '--devices', 'rng', '--name', '../x'])).toEqual({
      status: 2,
      stdout: '',
      stderr: "xvio: --name '../x': use letters, digits, '.', '_' and '-'\n",
    });
  });
});
