// koffi -> Debian's libxenstore.so.4 -> our simulated xenstored on a unix socket: the native
// xenstore binding exercised end to end on a host without Xen.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { XenError } from './xen-errors.js';
import { openLibXenStore } from './xen-native-xenstore.js';
import type { XenStore, XenStoreWatchEvent } from './xenstore.js';
import { startXenstoredServer, type XenstoredServer } from './xenstored-server.js';

let directory: string;
let server: XenstoredServer;
let store: XenStore;
const savedPath = process.env.XENSTORED_PATH;

beforeAll(async () => {
  directory = mkdtempSync(join(tmpdir(), 'xvio-libxenstore-'));
  server = await startXenstoredServer({ socketPath: join(directory, 'socket') });
  // libxenstore reads the real environment, which process.env writes through to.
  process.env.XENSTORED_PATH = server.socketPath;
  store = await openLibXenStore();
});

afterAll(async () => {
  await store.close();
  await server.close();
  if (savedPath === undefined) delete process.env.XENSTORED_PATH;
  else process.env.XENSTORED_PATH = savedPath;
  rmSync(directory, { recursive: true, force: true });
});

describe('libxenstore through koffi', () => {
  it('writes, reads, lists and removes', async () => {
    await store.write('/lib/a', 'one');
    await store.write('/lib/b', new Uint8Array([0, 1, 2]));
    expect(await store.read('/lib/a')).toBe('one');
    expect([...(await store.readBytes('/lib/b'))]).toEqual([0, 1, 2]);
    expect(await store.directory('/lib')).toEqual(['a', 'b']);
    await store.mkdir('/lib/dir');
    await store.rm('/lib/a');
    expect(await store.exists('/lib/a')).toBe(false);
    expect(await store.getDomainPath(7)).toBe('/local/domain/7');
  });

  it('turns errno into XenError codes', async () => {
    const error = await store.read('/lib/missing').catch((caught: unknown) => caught);
    expect(XenError.isInstance(error) && error.code).toBe('ENOENT');
    const invalid = await store.write('/bad path', 'x').catch((caught: unknown) => caught);
    expect(XenError.isInstance(invalid) && invalid.code).toBe('EINVAL');
  });

  it('gets and sets permissions', async () => {
    await store.write('/lib/perm', 'x');
    await store.setPermissions('/lib/perm', [
      { domid: 0, access: 'none' },
      { domid: 4, access: 'read' },
      { domid: 9, access: 'both' },
    ]);
    expect(await store.getPermissions('/lib/perm')).toEqual([
      { domid: 0, access: 'none' },
      { domid: 4, access: 'read' },
      { domid: 9, access: 'both' },
    ]);
  });

  it('commits transactions and reports conflicts as EAGAIN', async () => {
    await store.write('/lib/n', '0');
    const tx = await store.startTransaction();
    await tx.read('/lib/n');
    await store.write('/lib/n', '5');
    await tx.write('/lib/n', '1');
    const error = await tx.commit().catch((caught: unknown) => caught);
    expect(XenError.isInstance(error) && error.code).toBe('EAGAIN');
    await store.transaction(async (retry) => {
      await retry.write('/lib/n', String(Number(await retry.read('/lib/n')) + 1));
    });
    expect(await store.read('/lib/n')).toBe('6');
  });

  it('delivers watch events without blocking the event loop', async () => {
    const events: XenStoreWatchEvent[] = [];
    const watch = await store.watch('/lib/w', { token: 'tok', onEvent: (event) => events.push(event) });
    const iterator = watch[Symbol.asyncIterator]();
    expect((await iterator.next()).value).toEqual({ path: '/lib/w', token: 'tok' });
    await store.write('/lib/w/x', '1');
    expect((await iterator.next()).value).toEqual({ path: '/lib/w/x', token: 'tok' });
    await watch.close();
    expect(events.map((e) => e.path)).toEqual(['/lib/w', '/lib/w/x']);
  });
});
