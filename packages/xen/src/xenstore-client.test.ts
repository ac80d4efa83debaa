import { execFileSync } from 'node:child_process';
import { lstatSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { XenError } from './xen-errors.js';
import { connectXenStore } from './xenstore-client.js';
import { startXenstoredServer } from './xenstored-server.js';

let directory: string;

beforeEach(() => {
  directory = mkdtempSync(join(tmpdir(), 'xvio-xs-client-'));
});

afterEach(() => {
  rmSync(directory, { recursive: true, force: true });
});

const codeOf = (error: unknown) => (XenError.isInstance(error) ? error.code : String(error));

it('ends watches and fails later requests with ENOTCONN when xenstored goes away', async () => {
  const server = await startXenstoredServer({ socketPath: join(directory, 'socket') });
  const client = await connectXenStore(server.socketPath);
  const watch = await client.watch('/gone');
  const iterator = watch[Symbol.asyncIterator]();
  expect((await iterator.next()).value?.path).toBe('/gone');
  const next = iterator.next();
  await server.close();
  expect((await next).done).toBe(true);
  expect(codeOf(await client.read('/x').catch((error: unknown) => error))).toBe('ENOTCONN');
});

it('reports a missing socket as ENOENT, and refuses to replace a file that is not a socket', async () => {
  expect(codeOf(await connectXenStore(join(directory, 'absent')).catch((error: unknown) => error))).toBe(
    'ENOENT',
  );
  const file = join(directory, 'file');
  writeFileSync(file, 'not a socket');
  expect(codeOf(await startXenstoredServer({ socketPath: file }).catch((error: unknown) => error))).toBe(
    'EEXIST',
  );
});

it('replaces a stale socket and serves several clients at once', async () => {
  const socketPath = join(directory, 'socket');
  // A socket file left behind by a process that exited without closing it.
  execFileSync(process.execPath, [
    '-e',
    `require('net').createServer().listen(${JSON.stringify(socketPath)}, () => process.exit(0))`,
  ]);
  expect(lstatSync(socketPath).isSocket()).toBe(true);
  const server = await startXenstoredServer({ socketPath });
  const clients = await Promise.all([1, 2, 3].map(() => connectXenStore(socketPath)));
  await Promise.all(clients.map((client, i) => client.write(`/many/${i}`, String(i))));
  expect(await clients[0]?.directory('/many')).toEqual(['0', '1', '2']);
  expect(server.connections()).toBe(3);
  await Promise.all(clients.map((client) => client.close()));
  await server.close();
});
