// `xvio vhost-user net` over a TAP, as root, inside a network namespace this test creates:
// frontends connect one after another and the backend process keeps one TAP and a constant
// set of fds; SIGTERM takes the TAP away.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, spawnCli } from './testing/spawn-cli.js';

/** The transport's own vhost-user test frontend (QEMU's side of the protocol). */
interface FrontendModule {
  TestFrontend: new (
    socketPath: string,
  ) => {
    handshake(memory: unknown): Promise<{ status: bigint; table: bigint }>;
    close(): void;
  };
  createSharedGuestMemory(size: number): { close(): void };
}

const namespace = `xvio-cli-${randomBytes(3).toString('hex')}`;
const ifname = `xvc${randomBytes(3).toString('hex')}`;
let dir: string;

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

const tapsInNamespace = () =>
  ip('-n', namespace, '-o', 'link', 'show', 'type', 'tun').split('\n').filter(Boolean);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xvio-vu-net-'));
  ip('netns', 'add', namespace);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
  try {
    ip('netns', 'del', namespace);
  } catch {
    // already gone
  }
});

describe('xvio vhost-user net', () => {
  it('keeps one TAP and a constant set of fds across frontend connections, and removes the TAP on SIGTERM', async () => {
    const path: string = join(REPO_ROOT, 'packages/transport/src/vhost-user/vhost-user-frontend.ts');
    const frontend = (await import(path)) as FrontendModule;
    const socketPath = join(dir, 'net.sock');
    const cli = spawnCli([
      'vhost-user',
      'net',
      '-s',
      socketPath,
      '--set',
      'host.type=tap',
      '--set',
      `host.ifname=${ifname}`,
      '--set',
      `host.netns=${namespace}`,
    ]);
    const pid = cli.child.pid!;
    const openFds = () => readdirSync(`/proc/${pid}/fd`).length;
    try {
      await cli.waitFor(/serving net \(net0\) on /);
      expect(tapsInNamespace()).toHaveLength(1);
      const counts: number[] = [];
      for (let round = 0; round < 4; round++) {
        const connection = new frontend.TestFrontend(socketPath);
        const memory = frontend.createSharedGuestMemory(1 << 20);
        const { status, table } = await connection.handshake(memory);
        expect([status, table]).toEqual([0n, 0n]);
        connection.close();
        memory.close();
        // The backend ends the connection when it sees the socket close.
        await new Promise((resolve) => setTimeout(resolve, 300));
        counts.push(openFds());
        expect(tapsInNamespace()).toHaveLength(1);
      }
      // The first connection may open fds that stay (the poller's); after it nothing grows.
      expect(counts.slice(1)).toEqual([counts[1], counts[1], counts[1]]);
    } finally {
      cli.child.kill('SIGTERM');
    }
    expect(await cli.exited()).toBe(0);
    expect(tapsInNamespace()).toEqual([]);
  });
});
