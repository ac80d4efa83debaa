// XenStore through Debian's libxenstore.so.4 (xs_open and friends). Every call runs on a
// libuv pool thread (koffi `.async`): libxenstore blocks on its socket or xenbus device, and
// a blocking call on the main thread would also deadlock against a xenstored living in the
// same process. Watch events arrive on libxenstore's own reader thread and are signalled on
// `xs_fileno`, which the process-wide fd poller watches and xs_check_watch drains.
import koffi from 'koffi';
import { errnoName, XenError, XenUnavailableError } from './xen-errors.js';
import { type FdWatch, watchReadable } from './xen-fd-watcher.js';
import { libc } from './xen-libc.js';
import { type BoundLibrary, bindXenLibrary, probeXenHost } from './xen-native-libs.js';
import type {
  XenStore,
  XenStoreTransaction,
  XenStoreTransactionOptions,
  XenStoreWatch,
  XenStoreWatchEvent,
  XenStoreWatchOptions,
} from './xenstore.js';
import { XenStoreReads } from './xenstore.js';
import { encodeString, type XenStoreAccess, type XenStorePermission } from './xenstore-wire.js';

/** `struct xs_permissions` is {unsigned int id; unsigned int perms}: 8 bytes. */
const XS_PERMISSIONS_SIZE = 8;
const XS_PERM_READ = 1;
const XS_PERM_WRITE = 2;

let free: ((pointer: unknown) => void) | undefined;
function freeMemory(pointer: unknown): void {
  free ??= koffi.load('libc.so.6').func('void free(void *ptr)') as (pointer: unknown) => void;
  free(pointer);
}

/** Runs a call and returns its result with the errno it left. */
async function attempt(
  library: BoundLibrary,
  name: string,
  ...args: unknown[]
): Promise<{ result: unknown; errno: number }> {
  let errno = 0;
  const result = await new Promise<unknown>((resolve, reject) => {
    const fn = library[name];
    if (!fn) {
      reject(new XenError('ENOSYS', 'xenstore', name, 'function not bound'));
      return;
    }
    fn.async(...args, (error: unknown, value: unknown) => {
      errno = libc().errno();
      if (error) reject(error);
      else resolve(value);
    });
  });
  return { result, errno };
}

/** A failed call: `errno` as it was when the call returned (a pool thread's errno, copied back by koffi). */
function failed(operation: string, errno: number): XenError {
  return new XenError(errnoName(errno), 'xenstore', operation, `errno ${errno}`);
}

function accessOf(bits: number): XenStoreAccess {
  const read = (bits & XS_PERM_READ) !== 0;
  const write = (bits & XS_PERM_WRITE) !== 0;
  return read && write ? 'both' : read ? 'read' : write ? 'write' : 'none';
}

function bitsOf(access: XenStoreAccess): number {
  return access === 'both'
    ? XS_PERM_READ | XS_PERM_WRITE
    : access === 'read'
      ? XS_PERM_READ
      : access === 'write'
        ? XS_PERM_WRITE
        : 0;
}

class LibOperations extends XenStoreReads {
  constructor(
    protected readonly library: BoundLibrary,
    protected readonly handle: unknown,
    protected readonly txId: number,
  ) {
    super();
  }

  async readBytes(path: string): Promise<Uint8Array> {
    const length = [0];
    const { result: pointer, errno } = await attempt(
      this.library,
      'xs_read',
      this.handle,
      this.txId,
      path,
      length,
    );
    if (!pointer) throw failed('xs_read', errno);
    const bytes = new Uint8Array(koffi.view(pointer, length[0] as number).slice(0));
    freeMemory(pointer);
    return bytes;
  }

  async write(path: string, value: string | Uint8Array): Promise<void> {
    const bytes = typeof value === 'string' ? encodeString(value) : value;
    const { result: ok, errno } = await attempt(
      this.library,
      'xs_write',
      this.handle,
      this.txId,
      path,
      Buffer.from(bytes),
      bytes.length,
    );
    if (!ok) {
      throw failed('xs_write', errno);
    }
  }

  async mkdir(path: string): Promise<void> {
    const { result: ok, errno } = await attempt(this.library, 'xs_mkdir', this.handle, this.txId, path);
    if (!ok) {
      throw failed('xs_mkdir', errno);
    }
  }

  async rm(path: string): Promise<void> {
    const { result: ok, errno } = await attempt(this.library, 'xs_rm', this.handle, this.txId, path);
    if (!ok) {
      throw failed('xs_rm', errno);
    }
  }

  async directory(path: string): Promise<string[]> {
    const count = [0];
    const { result: pointer, errno } = await attempt(
      this.library,
      'xs_directory',
      this.handle,
      this.txId,
      path,
      count,
    );
    if (!pointer) throw failed('xs_directory', errno);
    const names =
      (count[0] as number) > 0
        ? (koffi.decode(pointer, koffi.array('char *', count[0] as number)) as string[])
        : [];
    freeMemory(pointer);
    return names;
  }

  async getPermissions(path: string): Promise<XenStorePermission[]> {
    const count = [0];
    const { result: pointer, errno } = await attempt(
      this.library,
      'xs_get_permissions',
      this.handle,
      this.txId,
      path,
      count,
    );
    if (!pointer) throw failed('xs_get_permissions', errno);
    const raw = new DataView(koffi.view(pointer, (count[0] as number) * XS_PERMISSIONS_SIZE).slice(0));
    freeMemory(pointer);
    const out: XenStorePermission[] = [];
    for (let i = 0; i < (count[0] as number); i++) {
      out.push({
        domid: raw.getUint32(i * XS_PERMISSIONS_SIZE, true),
        access: accessOf(raw.getUint32(i * XS_PERMISSIONS_SIZE + 4, true)),
      });
    }
    return out;
  }

  async setPermissions(path: string, permissions: readonly XenStorePermission[]): Promise<void> {
    const table = Buffer.alloc(permissions.length * XS_PERMISSIONS_SIZE);
    permissions.forEach((permission, i) => {
      table.writeUInt32LE(permission.domid, i * XS_PERMISSIONS_SIZE);
      table.writeUInt32LE(bitsOf(permission.access), i * XS_PERMISSIONS_SIZE + 4);
    });
    const { result: ok, errno } = await attempt(
      this.library,
      'xs_set_permissions',
      this.handle,
      this.txId,
      path,
      table,
      permissions.length,
    );
    if (!ok) {
      throw failed('xs_set_permissions', errno);
    }
  }
}

class LibTransaction extends LibOperations implements XenStoreTransaction {
  private ended = false;

  get id(): number {
    return this.txId;
  }

  private async end(abort: boolean): Promise<void> {
    if (this.ended)
      throw new XenError('ENOENT', 'xenstore', 'xs_transaction_end', 'transaction already ended');
    this.ended = true;
    const { result: ok, errno } = await attempt(
      this.library,
      'xs_transaction_end',
      this.handle,
      this.txId,
      abort,
    );
    if (!ok) {
      throw failed('xs_transaction_end', errno);
    }
  }

  commit(): Promise<void> {
    return this.end(false);
  }

  async abort(): Promise<void> {
    if (!this.ended) await this.end(true);
  }
}

interface LibWatchState {
  readonly path: string;
  readonly token: string;
  readonly onEvent: ((event: XenStoreWatchEvent) => void) | undefined;
  readonly queue: XenStoreWatchEvent[];
  readonly waiters: ((result: IteratorResult<XenStoreWatchEvent>) => void)[];
  closed: boolean;
}

/** Pending events per watch are bounded; beyond it they coalesce into the watched path. */
const WATCH_QUEUE_LIMIT = 1024;

export class LibXenStore extends LibOperations implements XenStore {
  private readonly watches = new Map<string, LibWatchState>();
  private nextToken = 1;
  private pipeWatch: FdWatch | undefined;
  private closed = false;

  constructor(library: BoundLibrary, handle: unknown) {
    super(library, handle, 0);
  }

  async getDomainPath(domid: number): Promise<string> {
    const { result: pointer, errno } = await attempt(this.library, 'xs_get_domain_path', this.handle, domid);
    if (!pointer) throw failed('xs_get_domain_path', errno);
    const path = koffi.decode(pointer, 'char', -1) as string;
    freeMemory(pointer);
    return path;
  }

  async startTransaction(): Promise<XenStoreTransaction> {
    const { result, errno } = await attempt(this.library, 'xs_transaction_start', this.handle);
    const id = result as number;
    if (!id) throw failed('xs_transaction_start', errno);
    return new LibTransaction(this.library, this.handle, id);
  }

  async transaction<T>(
    body: (tx: XenStoreTransaction) => Promise<T>,
    options: XenStoreTransactionOptions = {},
  ): Promise<T> {
    const maxAttempts = options.maxAttempts ?? 16;
    for (let attempt = 1; ; attempt++) {
      const tx = await this.startTransaction();
      let result: T;
      try {
        result = await body(tx);
      } catch (error) {
        await tx.abort().catch(() => undefined);
        throw error;
      }
      try {
        await tx.commit();
        return result;
      } catch (error) {
        if (!(XenError.isInstance(error) && error.code === 'EAGAIN') || attempt >= maxAttempts) throw error;
      }
    }
  }

  async watch(path: string, options: XenStoreWatchOptions = {}): Promise<XenStoreWatch> {
    const token = options.token ?? `xvio-lib-${this.nextToken++}`;
    if (this.watches.has(token))
      throw new XenError('EEXIST', 'xenstore', 'xs_watch', `token ${token} is in use`);
    const state: LibWatchState = {
      path,
      token,
      onEvent: options.onEvent,
      queue: [],
      waiters: [],
      closed: false,
    };
    this.watches.set(token, state);
    const { result: ok, errno } = await attempt(this.library, 'xs_watch', this.handle, path, token);
    if (!ok) {
      this.watches.delete(token);
      throw failed('xs_watch', errno);
    }
    this.startWatching();
    const end = () => {
      state.closed = true;
      for (const waiter of state.waiters.splice(0)) waiter({ value: undefined, done: true });
    };
    const close = async () => {
      if (state.closed) return;
      end();
      this.watches.delete(token);
      if (this.watches.size === 0) this.stopWatching();
      if (!this.closed) await attempt(this.library, 'xs_unwatch', this.handle, path, token);
    };
    return {
      path,
      token,
      close,
      [Symbol.asyncIterator]: () => ({
        next: () => {
          const event = state.queue.shift();
          if (event) return Promise.resolve({ value: event, done: false });
          if (state.closed) return Promise.resolve({ value: undefined, done: true });
          return new Promise((resolve) => state.waiters.push(resolve));
        },
        return: async () => {
          await close();
          return { value: undefined, done: true };
        },
      }),
    };
  }

  private deliver(event: XenStoreWatchEvent): void {
    const state = this.watches.get(event.token);
    if (!state || state.closed) return;
    state.onEvent?.(event);
    const waiter = state.waiters.shift();
    if (waiter) waiter({ value: event, done: false });
    else if (state.queue.length < WATCH_QUEUE_LIMIT) {
      if (!state.queue.some((queued) => queued.path === event.path)) state.queue.push(event);
    } else {
      state.queue.length = 0;
      state.queue.push({ path: state.path, token: state.token });
    }
  }

  /**
   * Watches libxenstore's watch pipe (`xs_fileno`) for readiness and drains the events with
   * xs_check_watch, which never blocks. Readiness only: the byte in the pipe is
   * libxenstore's, which reads it itself when its event list empties (xs.c, read_watch_internal).
   */
  private startWatching(): void {
    if (this.pipeWatch || this.closed) return;
    const fd = (this.library.xs_fileno as (handle: unknown) => number)(this.handle);
    if (fd < 0) throw failed('xs_fileno', libc().errno());
    this.pipeWatch = watchReadable(fd, () => {
      while (!this.closed) {
        const vector = (this.library.xs_check_watch as (handle: unknown) => unknown)(this.handle);
        if (!vector) break;
        const [path, token] = koffi.decode(vector, koffi.array('char *', 2)) as [string, string];
        freeMemory(vector);
        this.deliver({ path, token });
      }
    });
  }

  private stopWatching(): void {
    this.pipeWatch?.close();
    this.pipeWatch = undefined;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const state of this.watches.values()) {
      state.closed = true;
      for (const waiter of state.waiters.splice(0)) waiter({ value: undefined, done: true });
    }
    this.watches.clear();
    // Before xs_close, which closes the pipe the poller watches.
    this.stopWatching();
    await attempt(this.library, 'xs_close', this.handle);
  }
}

/**
 * Opens xenstore through libxenstore (`xs_open(0)`), which finds xenstored the way every Xen
 * tool does (XENSTORED_PATH, the xenstored socket, /dev/xen/xenbus). Throws
 * XenUnavailableError when neither the library nor a xenstored is there.
 */
export async function openLibXenStore(env: NodeJS.ProcessEnv = process.env): Promise<XenStore> {
  const probe = probeXenHost(env);
  if (!probe.services.xenstore.available)
    throw new XenUnavailableError('xenstore', 'xs_open', probe.services.xenstore.missing);
  const { library, missing } = bindXenLibrary('xenstore');
  if (!library) throw new XenUnavailableError('xenstore', 'xs_open', missing);
  const { result: handle, errno } = await attempt(library, 'xs_open', 0);
  if (!handle) throw failed('xs_open', errno);
  return new LibXenStore(library, handle);
}
