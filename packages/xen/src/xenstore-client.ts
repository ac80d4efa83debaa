// A xenstore client speaking xs_wire over any byte stream: a unix socket to a xenstored
// (ours or any other), or the in-process simulated daemon. Behaves like libxenstore where
// callers can tell: E2BIG for an oversized request before anything is sent, errno strings
// from XS_ERROR turned into XenError codes, watch events routed by token.
import net from 'node:net';
import { isXenErrno, XenError } from './xen-errors.js';
import type {
  XenStore,
  XenStoreTransaction,
  XenStoreTransactionOptions,
  XenStoreWatch,
  XenStoreWatchEvent,
  XenStoreWatchOptions,
} from './xenstore.js';
import { XenStoreReads } from './xenstore.js';
import {
  encodeString,
  encodeXsMessage,
  formatPermission,
  joinNulTerminated,
  parsePermission,
  readXsHeader,
  splitNulTerminated,
  XENSTORE_PAYLOAD_MAX,
  type XenStorePermission,
  XSD_SOCKMSG_SIZE,
  XsType,
} from './xenstore-wire.js';

/** The byte stream under a client. */
export interface XenStoreTransport {
  send(bytes: Uint8Array): void;
  close(): void;
}

interface Pending {
  resolve(payload: Uint8Array): void;
  reject(error: Error): void;
  operation: string;
}

/** Distinct paths a watch keeps queued for a slow iterator; beyond it events coalesce into the watched path. */
const WATCH_QUEUE_LIMIT = 1024;

class ClientWatch implements XenStoreWatch {
  private readonly queue = new Map<string, XenStoreWatchEvent>();
  private readonly waiters: ((result: IteratorResult<XenStoreWatchEvent>) => void)[] = [];
  closed = false;

  constructor(
    private readonly client: XenStoreClient,
    readonly path: string,
    readonly token: string,
    private readonly onEvent: ((event: XenStoreWatchEvent) => void) | undefined,
  ) {}

  deliver(event: XenStoreWatchEvent): void {
    if (this.closed) return;
    this.onEvent?.(event);
    const waiter = this.waiters.shift();
    if (waiter) {
      waiter({ value: event, done: false });
      return;
    }
    if (this.queue.has(event.path)) return;
    if (this.queue.size >= WATCH_QUEUE_LIMIT) {
      // Too many distinct paths queued: one event for the watched path says "re-read everything".
      this.queue.clear();
      this.queue.set(this.path, { path: this.path, token: this.token });
      return;
    }
    this.queue.set(event.path, event);
  }

  [Symbol.asyncIterator](): AsyncIterator<XenStoreWatchEvent> {
    return {
      next: () => {
        const first = this.queue.entries().next();
        if (!first.done) {
          this.queue.delete(first.value[0]);
          return Promise.resolve({ value: first.value[1], done: false });
        }
        if (this.closed) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => this.waiters.push(resolve));
      },
      return: async () => {
        await this.close();
        return { value: undefined, done: true };
      },
    };
  }

  end(): void {
    this.closed = true;
    for (const waiter of this.waiters.splice(0)) waiter({ value: undefined, done: true });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.end();
    await this.client.unwatch(this);
  }
}

interface RequestSender {
  request(type: number, txId: number, payload: Uint8Array, operation: string): Promise<Uint8Array>;
}

/** The node operations, parameterised by the tx_id they run in. */
class Operations extends XenStoreReads {
  constructor(
    protected readonly client: RequestSender,
    protected readonly txId: number,
  ) {
    super();
  }

  async readBytes(path: string): Promise<Uint8Array> {
    return this.client.request(XsType.READ, this.txId, joinNulTerminated([path]), 'read');
  }

  async write(path: string, value: string | Uint8Array): Promise<void> {
    const bytes = typeof value === 'string' ? encodeString(value) : value;
    const head = encodeString(`${path}\0`);
    const payload = new Uint8Array(head.length + bytes.length);
    payload.set(head);
    payload.set(bytes, head.length);
    await this.client.request(XsType.WRITE, this.txId, payload, 'write');
  }

  async mkdir(path: string): Promise<void> {
    await this.client.request(XsType.MKDIR, this.txId, joinNulTerminated([path]), 'mkdir');
  }

  async rm(path: string): Promise<void> {
    await this.client.request(XsType.RM, this.txId, joinNulTerminated([path]), 'rm');
  }

  async directory(path: string): Promise<string[]> {
    return splitNulTerminated(
      await this.client.request(XsType.DIRECTORY, this.txId, joinNulTerminated([path]), 'directory'),
    );
  }

  async getPermissions(path: string): Promise<XenStorePermission[]> {
    const reply = await this.client.request(
      XsType.GET_PERMS,
      this.txId,
      joinNulTerminated([path]),
      'get_perms',
    );
    return splitNulTerminated(reply).map((text) => {
      const perm = parsePermission(text);
      if (!perm)
        throw new XenError(
          'EIO',
          'xenstore',
          'get_perms',
          `malformed permission "${text.slice(0, 16)}" in reply`,
        );
      return perm;
    });
  }

  async setPermissions(path: string, permissions: readonly XenStorePermission[]): Promise<void> {
    await this.client.request(
      XsType.SET_PERMS,
      this.txId,
      joinNulTerminated([path, ...permissions.map(formatPermission)]),
      'set_perms',
    );
  }
}

class ClientTransaction extends Operations implements XenStoreTransaction {
  private ended = false;

  get id(): number {
    return this.txId;
  }

  private async end(commit: boolean): Promise<void> {
    if (this.ended)
      throw new XenError('ENOENT', 'xenstore', 'transaction_end', `transaction ${this.txId} already ended`);
    this.ended = true;
    await this.client.request(
      XsType.TRANSACTION_END,
      this.txId,
      joinNulTerminated([commit ? 'T' : 'F']),
      'transaction_end',
    );
  }

  commit(): Promise<void> {
    return this.end(true);
  }

  async abort(): Promise<void> {
    if (this.ended) return;
    await this.end(false);
  }
}

export class XenStoreClient extends Operations implements XenStore {
  private readonly pending = new Map<number, Pending>();
  private readonly watches = new Map<string, ClientWatch>();
  private buffer = new Uint8Array(0);
  private nextReqId = 1;
  private nextToken = 1;
  private closed = false;

  constructor(private readonly transport: XenStoreTransport) {
    // The connection's own operations run outside any transaction (tx_id 0).
    const sender: RequestSender = { request: (...args) => this.request(...args) };
    super(sender, 0);
  }

  /** Sends one request and resolves with the reply payload; XS_ERROR rejects with its errno. */
  request(type: number, txId: number, payload: Uint8Array, operation: string): Promise<Uint8Array> {
    if (this.closed)
      return Promise.reject(new XenError('ENOTCONN', 'xenstore', operation, 'connection closed'));
    // libxenstore's xs_talkv: E2BIG before sending anything.
    if (payload.length > XENSTORE_PAYLOAD_MAX) {
      return Promise.reject(
        new XenError('E2BIG', 'xenstore', operation, `payload of ${payload.length} bytes`),
      );
    }
    const reqId = this.nextReqId;
    this.nextReqId = (this.nextReqId + 1) >>> 0 || 1;
    return new Promise((resolve, reject) => {
      this.pending.set(reqId, { resolve, reject, operation });
      this.transport.send(encodeXsMessage(type, reqId, txId, payload));
    });
  }

  /** Bytes from the server. */
  receive(chunk: Uint8Array): void {
    const joined = new Uint8Array(this.buffer.length + chunk.length);
    joined.set(this.buffer);
    joined.set(chunk, this.buffer.length);
    this.buffer = joined;
    while (this.buffer.length >= XSD_SOCKMSG_SIZE) {
      const header = readXsHeader(this.buffer);
      if (header.len > XENSTORE_PAYLOAD_MAX) {
        this.fail(
          new XenError(
            'EIO',
            'xenstore',
            'receive',
            `reply of ${header.len} bytes exceeds the protocol limit`,
          ),
        );
        this.transport.close();
        return;
      }
      if (this.buffer.length < XSD_SOCKMSG_SIZE + header.len) return;
      const payload = this.buffer.slice(XSD_SOCKMSG_SIZE, XSD_SOCKMSG_SIZE + header.len);
      this.buffer = this.buffer.slice(XSD_SOCKMSG_SIZE + header.len);
      if (header.type === XsType.WATCH_EVENT) {
        const [path, token] = splitNulTerminated(payload);
        if (path !== undefined && token !== undefined) this.watches.get(token)?.deliver({ path, token });
        continue;
      }
      const pending = this.pending.get(header.reqId);
      if (!pending) continue;
      this.pending.delete(header.reqId);
      if (header.type === XsType.ERROR) {
        const name = splitNulTerminated(payload)[0] ?? 'EIO';
        pending.reject(new XenError(isXenErrno(name) ? name : 'EIO', 'xenstore', pending.operation));
      } else {
        pending.resolve(payload);
      }
    }
  }

  /** The stream ended. */
  transportClosed(): void {
    this.fail(new XenError('ENOTCONN', 'xenstore', 'request', 'connection closed'));
  }

  private fail(error: XenError): void {
    this.closed = true;
    for (const pending of this.pending.values()) pending.reject(error);
    this.pending.clear();
    for (const watch of this.watches.values()) watch.end();
    this.watches.clear();
  }

  async getDomainPath(domid: number): Promise<string> {
    const reply = await this.request(
      XsType.GET_DOMAIN_PATH,
      0,
      joinNulTerminated([String(domid)]),
      'get_domain_path',
    );
    return splitNulTerminated(reply)[0] ?? '';
  }

  async watch(path: string, options: XenStoreWatchOptions = {}): Promise<XenStoreWatch> {
    const token = options.token ?? `xvio-${this.nextToken++}`;
    if (this.watches.has(token))
      throw new XenError('EEXIST', 'xenstore', 'watch', `token ${token} is in use`);
    const watch = new ClientWatch(this, path, token, options.onEvent);
    // Registered before the request: the initial fire may arrive right behind the reply.
    this.watches.set(token, watch);
    try {
      await this.request(XsType.WATCH, 0, joinNulTerminated([path, token]), 'watch');
    } catch (error) {
      this.watches.delete(token);
      throw error;
    }
    return watch;
  }

  async unwatch(watch: ClientWatch): Promise<void> {
    if (this.watches.get(watch.token) !== watch) return;
    this.watches.delete(watch.token);
    if (!this.closed)
      await this.request(XsType.UNWATCH, 0, joinNulTerminated([watch.path, watch.token]), 'unwatch');
  }

  async startTransaction(): Promise<XenStoreTransaction> {
    const reply = await this.request(XsType.TRANSACTION_START, 0, new Uint8Array(1), 'transaction_start');
    const id = Number(splitNulTerminated(reply)[0]);
    if (!Number.isInteger(id) || id <= 0)
      throw new XenError('EIO', 'xenstore', 'transaction_start', 'malformed transaction id');
    return new ClientTransaction(this, id);
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

  async close(): Promise<void> {
    if (this.closed) return;
    this.fail(new XenError('ENOTCONN', 'xenstore', 'request', 'connection closed'));
    this.transport.close();
  }
}

/** Connects to a xenstored on a unix socket (what libxenstore does with XENSTORED_PATH). */
export function connectXenStore(socketPath: string): Promise<XenStore> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(socketPath);
    const client = new XenStoreClient({
      send: (bytes) => socket.write(bytes),
      close: () => socket.end(),
    });
    socket.once('connect', () => {
      socket.off('error', reject);
      socket.on('error', () => client.transportClosed());
      resolve(client);
    });
    socket.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        new XenError(error.code === 'ENOENT' ? 'ENOENT' : 'ENOTCONN', 'xenstore', 'connect', socketPath, {
          cause: error,
        }),
      ),
    );
    socket.on('data', (data: Buffer) => client.receive(data));
    socket.on('close', () => client.transportClosed());
  });
}
