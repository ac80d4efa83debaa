// Debian's real xenstore-utils (libxenstore) against our simulated xenstored on a socket.
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectXenStore } from './xenstore-client.js';
import { startXenstoredServer, type XenstoredServer } from './xenstored-server.js';

const run = promisify(execFile);
let directory: string;
let server: XenstoredServer;

async function tool(name: string, ...args: string[]): Promise<{ stdout: string; code: number }> {
  try {
    const { stdout } = await run(name, args, {
      env: { ...process.env, XENSTORED_PATH: server.socketPath },
      timeout: 10_000,
    });
    return { stdout, code: 0 };
  } catch (error) {
    const failed = error as { stdout?: string; code?: number };
    return { stdout: failed.stdout ?? '', code: typeof failed.code === 'number' ? failed.code : -1 };
  }
}

beforeAll(async () => {
  directory = mkdtempSync(join(tmpdir(), 'xvio-xenstored-'));
  server = await startXenstoredServer({ socketPath: join(directory, 'socket') });
});

afterAll(async () => {
  await server.close();
  rmSync(directory, { recursive: true, force: true });
});

describe('Debian xenstore-utils against the simulated xenstored', () => {
  it('xenstore-write then xenstore-read', async () => {
    expect((await tool('xenstore-write', '/vm/a', 'hello', '/vm/b', 'world')).code).toBe(0);
    expect((await tool('xenstore-read', '/vm/a')).stdout).toBe('hello\n');
    expect(server.xenstored.readNode('/vm/b')).toBe('world');
  });

  it('xenstore-read fails on a missing node', async () => {
    expect((await tool('xenstore-read', '/vm/missing')).code).toBe(1);
  });

  it('xenstore-list and xenstore-ls', async () => {
    await tool('xenstore-write', '/tree/x/y', '1', '/tree/z', '2');
    expect((await tool('xenstore-list', '/tree')).stdout).toBe('x\nz\n');
    expect((await tool('xenstore-ls', '-f', '/tree')).stdout).toBe(
      '/tree/x = ""\n/tree/x/y = "1"\n/tree/z = "2"\n',
    );
  });

  it('xenstore-exists', async () => {
    await tool('xenstore-write', '/e/here', 'x');
    expect((await tool('xenstore-exists', '/e/here')).code).toBe(0);
    expect((await tool('xenstore-exists', '/e/absent')).code).toBe(1);
  });

  it('xenstore-rm removes a subtree', async () => {
    await tool('xenstore-write', '/r/a/b', '1', '/r/c', '2');
    expect((await tool('xenstore-rm', '/r/a')).code).toBe(0);
    expect((await tool('xenstore-list', '/r')).stdout).toBe('c\n');
  });

  it('xenstore-chmod sets permissions that xenstore-ls -p shows', async () => {
    await tool('xenstore-write', '/p/node', 'v');
    expect((await tool('xenstore-chmod', '/p/node', 'n0', 'r5', 'b7')).code).toBe(0);
    expect((await tool('xenstore-ls', '-p', '/p')).stdout).toMatch(/node = "v"\s+[ .]*\(n0,r5,b7\)/);
    const store = await connectXenStore(server.socketPath);
    expect(await store.getPermissions('/p/node')).toEqual([
      { domid: 0, access: 'none' },
      { domid: 5, access: 'read' },
      { domid: 7, access: 'both' },
    ]);
    await store.close();
  });

  it('xenstore-watch sees the initial fire and a later write', async () => {
    await tool('xenstore-write', '/w/start', '0');
    const watcher = spawn('xenstore-watch', ['-n', '2', '/w'], {
      env: { ...process.env, XENSTORED_PATH: server.socketPath },
    });
    let output = '';
    watcher.stdout.on('data', (data: Buffer) => {
      output += data.toString();
    });
    const exited = new Promise<number | null>((resolve) => watcher.on('exit', resolve));
    // Wait for the initial fire before writing, so the write is the second event.
    for (let i = 0; i < 200 && !output.includes('/w'); i++)
      await new Promise((resolve) => setTimeout(resolve, 10));
    await tool('xenstore-write', '/w/changed', '1');
    expect(await exited).toBe(0);
    expect(output).toBe('/w\n/w/changed\n');
  });
});
