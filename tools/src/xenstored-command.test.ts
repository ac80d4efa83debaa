import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runForTest } from './testing/run-cli.js';
import { spawnCli } from './testing/spawn-cli.js';

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xvio-xenstored-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('xvio xenstored', () => {
  it("serves Debian's xenstore tools and removes its socket on SIGTERM", async () => {
    const socketPath = join(dir, 'xs.sock');
    const cli = spawnCli(['xenstored', '--socket-path', socketPath]);
    try {
      await cli.waitFor(/xenstored listening on /);
      const env = { ...process.env, XENSTORED_PATH: socketPath };
      execFileSync('xenstore-write', ['/local/domain/1/name', 'guest1'], { env });
      expect(execFileSync('xenstore-read', ['/local/domain/1/name'], { env, encoding: 'utf8' })).toBe(
        'guest1\n',
      );
      expect(execFileSync('xenstore-read', ['/local/domain/0/name'], { env, encoding: 'utf8' })).toBe(
        'Domain-0\n',
      );
    } finally {
      cli.child.kill('SIGTERM');
    }
    expect(await cli.exited()).toBe(0);
    expect(existsSync(socketPath)).toBe(false);
    expect(cli.stdout()).toBe(`xenstored listening on ${socketPath}\nexport XENSTORED_PATH=${socketPath}\n`);
  });

  it('requires --socket-path', async () => {
    const result = await runForTest(['xenstored']);
    expect(result.status).toBe(2);
    expect(result.stderr).toBe(
      "error: required option '--socket-path <path>' not specified\n(run 'xvio xenstored --help' for usage)\n",
    );
  });

  it('says when it cannot listen', async () => {
    const result = await runForTest([
      'xenstored',
      '--socket-path',
      join(dir, 'no', 'such', 'dir', 'xs.sock'),
    ]);
    expect(result.status).toBe(7);
    expect(result.stderr).toMatch(/^xvio: cannot listen on .*xs\.sock: /);
  });
});
