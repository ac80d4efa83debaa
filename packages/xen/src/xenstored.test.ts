import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { XenError } from './xen-errors.js';
import type { XenStore, XenStoreWatchEvent } from './xenstore.js';
import {
  encodeString,
  encodeXsMessage,
  joinNulTerminated,
  readXsHeader,
  splitNulTerminated,
  XSD_SOCKMSG_SIZE,
  XsType,
} from './xenstore-wire.js';
import { SimXenstored } from './xenstored.js';

let daemon: SimXenstored;
let dom0: XenStore;
let guest: XenStore;

beforeEach(() => {
  daemon = new SimXenstored({
    quota: { entriesPerDomain: 20, maxEntrySize: 64, watchesPerDomain: 2, transactionsPerDomain: 2 },
  });
  daemon.introduceDomain(0, 'Domain-0');
  daemon.introduceDomain(5, 'guest');
  dom0 = daemon.connect(0);
  guest = daemon.connect(5);
});

afterEach(async () => {
  await daemon.close();
});

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    return XenError.isInstance(error) ? error.code : `not a XenError: ${String(error)}`;
  }
  return 'no error';
}

/** A raw wire connection: send bytes, collect replies. */
function rawConnection(domid: number) {
  const replies: { type: number; reqId: number; txId: number; payload: Uint8Array }[] = [];
  let closed = false;
  let buffer = new Uint8Array(0);
  const connection = daemon.openConnection(
    domid,
    (bytes) => {
      const joined = new Uint8Array(buffer.length + bytes.length);
      joined.set(buffer);
      joined.set(bytes, buffer.length);
      buffer = joined;
      while (buffer.length >= XSD_SOCKMSG_SIZE) {
        const header = readXsHeader(buffer);
        if (buffer.length < XSD_SOCKMSG_SIZE + header.len) break;
        replies.push({ ...header, payload: buffer.slice(XSD_SOCKMSG_SIZE, XSD_SOCKMSG_SIZE + header.len) });
        buffer = buffer.slice(XSD_SOCKMSG_SIZE + header.len);
      }
    },
    () => {
      closed = true;
    },
  );
  return { connection, replies, isClosed: () => closed };
}

const text = (payload: Uint8Array) => new TextDecoder().decode(payload);

describe('simulated xenstored: nodes', () => {
  it('reads, writes, lists and removes', async () => {
    await dom0.write('/vm/a/b', 'hello');
    expect(await dom0.read('/vm/a/b')).toBe('hello');
    expect(await dom0.read('/vm/a')).toBe('');
    expect(await dom0.directory('/vm')).toEqual(['a']);
    await dom0.mkdir('/vm/c');
    expect(await dom0.directory('/vm')).toEqual(['a', 'c']);
    await dom0.rm('/vm/a');
    expect(await dom0.exists('/vm/a/b')).toBe(false);
    // rm of a missing node succeeds while its parent exists; ENOENT once the parent is gone.
    await dom0.rm('/vm/a');
    expect(await codeOf(dom0.rm('/nothing/here'))).toBe('ENOENT');
    expect(await codeOf(dom0.read('/vm/a'))).toBe('ENOENT');
    expect(await dom0.tryRead('/vm/a')).toBeUndefined();
  });

  it('resolves relative paths against the domain home and answers GET_DOMAIN_PATH', async () => {
    await guest.write('data/x', '1');
    expect(await dom0.read('/local/domain/5/data/x')).toBe('1');
    expect(await guest.getDomainPath(5)).toBe('/local/domain/5');
    expect(await dom0.read('/local/domain/5/name')).toBe('guest');
  });

  it('rejects paths with bad characters, double slashes or a trailing slash with EINVAL', async () => {
    for (const path of ['/a b', '/a//b', '/a/', '/a/b*', '', '@x', '@introduceDomain']) {
      expect(await codeOf(dom0.write(path, 'v'))).toBe('EINVAL');
    }
    expect(await codeOf(dom0.read(`/${'a'.repeat(3100)}`))).toBe('EINVAL');
  });

  it('answers E2BIG on the client before sending a payload above 4096 bytes', async () => {
    expect(await codeOf(dom0.write('/big', 'x'.repeat(4100)))).toBe('E2BIG');
    expect(await dom0.exists('/big')).toBe(false);
  });
});

describe('simulated xenstored: permissions and quota', () => {
  it('lets a guest read and write only what its permissions allow', async () => {
    await dom0.write('/backend/vif', 'x');
    expect(await codeOf(guest.read('/backend/vif'))).toBe('EACCES');
    expect(await codeOf(guest.write('/backend/vif', 'y'))).toBe('EACCES');
    expect(await codeOf(guest.write('/backend/new', 'y'))).toBe('EACCES');
    await dom0.setPermissions('/backend/vif', [
      { domid: 0, access: 'none' },
      { domid: 5, access: 'read' },
    ]);
    expect(await guest.read('/backend/vif')).toBe('x');
    expect(await codeOf(guest.write('/backend/vif', 'y'))).toBe('EACCES');
    expect(await codeOf(guest.setPermissions('/backend/vif', [{ domid: 5, access: 'both' }]))).toBe('EACCES');
  });

  it('makes a guest the owner of nodes it creates under its home', async () => {
    await guest.write('device/vif/0/state', '1');
    expect(await dom0.getPermissions('/local/domain/5/device/vif/0/state')).toEqual([
      { domid: 5, access: 'none' },
    ]);
    expect(await codeOf(guest.setPermissions('device/vif/0/state', [{ domid: 0, access: 'none' }]))).toBe(
      'EPERM',
    );
  });

  it('enforces the entry-size, entry-count, watch and transaction quotas on guests only', async () => {
    expect(await codeOf(guest.write('data/big', 'x'.repeat(65)))).toBe('ENOSPC');
    await dom0.write('/dom0/big', 'x'.repeat(2000));
    let failed = 'no error';
    for (let i = 0; i < 30 && failed === 'no error'; i++)
      failed = await codeOf(guest.write(`data/n${i}`, 'v'));
    expect(failed).toBe('ENOSPC');
    await guest.watch('data');
    await guest.watch('device');
    expect(await codeOf(guest.watch('control'))).toBe('E2BIG');
    await guest.startTransaction();
    await guest.startTransaction();
    expect(await codeOf(guest.startTransaction())).toBe('ENOSPC');
  });
});

describe('simulated xenstored: transactions', () => {
  it('isolates a transaction until it commits', async () => {
    await dom0.write('/t/a', '1');
    const tx = await dom0.startTransaction();
    await tx.write('/t/a', '2');
    await tx.write('/t/b', 'new');
    expect(await tx.read('/t/a')).toBe('2');
    expect(await dom0.read('/t/a')).toBe('1');
    expect(await dom0.exists('/t/b')).toBe(false);
    await tx.commit();
    expect(await dom0.read('/t/a')).toBe('2');
    expect(await dom0.read('/t/b')).toBe('new');
  });

  it('fails the commit with EAGAIN when a node it read changed meanwhile', async () => {
    await dom0.write('/t/counter', '0');
    const tx = await dom0.startTransaction();
    const value = Number(await tx.read('/t/counter'));
    await guest.transaction(async () => undefined);
    await dom0.write('/t/counter', '10');
    await tx.write('/t/counter', String(value + 1));
    expect(await codeOf(tx.commit())).toBe('EAGAIN');
    expect(await dom0.read('/t/counter')).toBe('10');
  });

  it('does not conflict with changes to unrelated nodes', async () => {
    await dom0.write('/t/mine', '0');
    const tx = await dom0.startTransaction();
    await tx.read('/t/mine');
    await dom0.write('/other', 'x');
    await tx.write('/t/mine', '1');
    await tx.commit();
    expect(await dom0.read('/t/mine')).toBe('1');
    expect(await dom0.read('/other')).toBe('x');
  });

  it('retries the body on EAGAIN in transaction()', async () => {
    await dom0.write('/t/n', '0');
    let attempts = 0;
    await dom0.transaction(async (tx) => {
      attempts++;
      const n = Number(await tx.read('/t/n'));
      if (attempts === 1) await guest.write('/local/domain/5/poke', '1').then(() => dom0.write('/t/n', '5'));
      await tx.write('/t/n', String(n + 1));
    });
    expect(attempts).toBe(2);
    expect(await dom0.read('/t/n')).toBe('6');
  });

  it('discards an aborted transaction', async () => {
    const tx = await dom0.startTransaction();
    await tx.write('/t/gone', '1');
    await tx.abort();
    expect(await dom0.exists('/t/gone')).toBe(false);
  });
});

describe('simulated xenstored: watches', () => {
  it('fires once on registration and then for changes at or below the path', async () => {
    const events: XenStoreWatchEvent[] = [];
    const watch = await dom0.watch('/w', { token: 'tok', onEvent: (event) => events.push(event) });
    await dom0.write('/w/a', '1');
    await dom0.write('/elsewhere', '1');
    await dom0.rm('/w');
    await new Promise((resolve) => setImmediate(resolve));
    expect(events).toEqual([
      { path: '/w', token: 'tok' },
      { path: '/w/a', token: 'tok' },
      { path: '/w', token: 'tok' },
    ]);
    await watch.close();
    await dom0.write('/w/b', '1');
    await new Promise((resolve) => setImmediate(resolve));
    expect(events).toHaveLength(3);
  });

  it('reports relative paths to a relative watch, and iterates events', async () => {
    const watch = await guest.watch('device');
    const iterator = watch[Symbol.asyncIterator]();
    expect((await iterator.next()).value?.path).toBe('device');
    await dom0.write('/local/domain/5/device/vif', 'x');
    expect((await iterator.next()).value?.path).toBe('device/vif');
    await watch.close();
    expect((await iterator.next()).done).toBe(true);
  });

  it('fires watches below a removed node and on committed transactions only', async () => {
    const events: string[] = [];
    await dom0.write('/deep/a/b', '1');
    await dom0.watch('/deep/a/b', { onEvent: (event) => events.push(event.path) });
    const tx = await dom0.startTransaction();
    await tx.rm('/deep');
    await new Promise((resolve) => setImmediate(resolve));
    expect(events).toEqual(['/deep/a/b']);
    await tx.commit();
    await new Promise((resolve) => setImmediate(resolve));
    expect(events).toEqual(['/deep/a/b', '/deep/a/b']);
  });

  it('fires @introduceDomain and @releaseDomain', async () => {
    const events: string[] = [];
    await dom0.watch('@releaseDomain', { onEvent: (event) => events.push(event.path) });
    daemon.releaseDomain(5);
    await new Promise((resolve) => setImmediate(resolve));
    expect(events).toEqual(['@releaseDomain', '@releaseDomain']);
  });
});

describe('simulated xenstored: malformed wire messages', () => {
  it('answers EINVAL for arguments without their NUL, ENOSYS for unknown types, ENOENT for unknown transactions', async () => {
    const raw = rawConnection(0);
    raw.connection.receive(encodeXsMessage(XsType.READ, 1, 0, encodeString('/local')));
    raw.connection.receive(encodeXsMessage(99, 2, 0, new Uint8Array(0)));
    raw.connection.receive(encodeXsMessage(XsType.READ, 3, 77, joinNulTerminated(['/local'])));
    raw.connection.receive(encodeXsMessage(XsType.WATCH, 4, 0, joinNulTerminated(['/only-path'])));
    raw.connection.receive(encodeXsMessage(XsType.SET_PERMS, 5, 0, joinNulTerminated(['/local', 'x99'])));
    raw.connection.receive(encodeXsMessage(XsType.WATCH_EVENT, 6, 0, joinNulTerminated(['/a', 'b'])));
    raw.connection.receive(encodeXsMessage(XsType.TRANSACTION_END, 7, 0, joinNulTerminated(['T'])));
    expect(raw.replies.map((r) => [r.reqId, r.type, splitNulTerminated(r.payload)[0]])).toEqual([
      [1, XsType.ERROR, 'EINVAL'],
      [2, XsType.ERROR, 'ENOSYS'],
      [3, XsType.ERROR, 'ENOENT'],
      [4, XsType.ERROR, 'EINVAL'],
      [5, XsType.ERROR, 'EINVAL'],
      [6, XsType.ERROR, 'EINVAL'],
      [7, XsType.ERROR, 'ENOENT'],
    ]);
    expect(raw.isClosed()).toBe(false);
  });

  it('drops a connection that announces a payload above 4096 bytes, as xenstored does', () => {
    const raw = rawConnection(0);
    const header = new Uint8Array(XSD_SOCKMSG_SIZE);
    new DataView(header.buffer).setUint32(12, 5000, true);
    raw.connection.receive(header);
    expect(raw.isClosed()).toBe(true);
    expect(raw.replies).toEqual([]);
  });

  it('reassembles messages split across reads and answers requests in order', () => {
    const raw = rawConnection(0);
    const bytes = new Uint8Array([
      ...encodeXsMessage(XsType.WRITE, 1, 0, new Uint8Array([...encodeString('/s\0'), ...encodeString('v')])),
      ...encodeXsMessage(XsType.READ, 2, 0, joinNulTerminated(['/s'])),
    ]);
    for (const byte of bytes) raw.connection.receive(new Uint8Array([byte]));
    expect(raw.replies.map((r) => [r.reqId, text(r.payload)])).toEqual([
      [1, 'OK\0'],
      [2, 'v'],
    ]);
  });

  it('refuses privileged requests from guests with EACCES', () => {
    const raw = rawConnection(5);
    raw.connection.receive(encodeXsMessage(XsType.INTRODUCE, 1, 0, joinNulTerminated(['9', '1234', '3'])));
    expect(splitNulTerminated(raw.replies[0]?.payload ?? new Uint8Array())[0]).toBe('EACCES');
  });

  it('serves DIRECTORY_PART with the generation prefix and a final empty string', () => {
    const raw = rawConnection(0);
    raw.connection.receive(
      encodeXsMessage(XsType.DIRECTORY_PART, 1, 0, joinNulTerminated(['/local/domain', '0'])),
    );
    const parts = text(raw.replies[0]?.payload ?? new Uint8Array()).split('\0');
    expect(parts.slice(1)).toEqual(['0', '5', '', '']);
    expect(Number(parts[0])).toBeGreaterThan(0);
  });
});
