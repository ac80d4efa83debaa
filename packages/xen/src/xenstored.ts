// A simulated xenstored speaking the xs_wire protocol (xen/io/xs_wire.h), modelled on the C
// xenstored of Xen 4.17 (tools/xenstore/xenstored_core.c): the same replies, errno strings,
// permission rules, transaction conflicts (EAGAIN), watches with the initial fire, and
// per-domain quotas. The store is a persistent tree (path copying), so a transaction
// starts in O(1) and commits by replaying its operations when nothing it touched changed.
import { type XenErrno, XenError } from './xen-errors.js';
import type { XenStore } from './xenstore.js';
import { XenStoreClient } from './xenstore-client.js';
import {
  decodeString,
  encodeString,
  encodeXsMessage,
  formatPermission,
  isValidXenStorePath,
  joinNulTerminated,
  parsePermission,
  readXsHeader,
  XENSTORE_PAYLOAD_MAX,
  type XenStorePermission,
  XSD_SOCKMSG_SIZE,
  XsType,
  xsTypeName,
} from './xenstore-wire.js';

export interface XenstoredQuota {
  /** Nodes an unprivileged domain may own (C xenstored default 1000). */
  readonly entriesPerDomain: number;
  /** Largest value an unprivileged domain may write (default 2048). */
  readonly maxEntrySize: number;
  /** Watches per unprivileged connection (default 128). */
  readonly watchesPerDomain: number;
  /** Open transactions per unprivileged connection (default 10). */
  readonly transactionsPerDomain: number;
}

export interface XenstoredOptions {
  readonly quota?: Partial<XenstoredQuota>;
  /** Receives one line per request and per dropped connection. */
  readonly log?: (line: string) => void;
}

export const DEFAULT_XENSTORED_QUOTA: XenstoredQuota = {
  entriesPerDomain: 1000,
  maxEntrySize: 2048,
  watchesPerDomain: 128,
  transactionsPerDomain: 10,
};

interface Node {
  readonly value: Uint8Array;
  readonly perms: readonly XenStorePermission[];
  readonly children: ReadonlyMap<string, Node>;
  /** Changes when this node's value, permissions or child set change (not a descendant's). */
  readonly generation: number;
}

type Op =
  | { kind: 'write'; path: string; value: Uint8Array }
  | { kind: 'mkdir'; path: string }
  | { kind: 'rm'; path: string }
  | { kind: 'set-perms'; path: string; perms: XenStorePermission[] };

interface Change {
  path: string;
  /** rm: watches below the path fire too. */
  recurse: boolean;
}

interface Transaction {
  readonly id: number;
  readonly base: Node;
  root: Node;
  readonly accessed: Map<string, number>;
  readonly ops: Op[];
}

interface Watch {
  readonly path: string;
  readonly absolute: string;
  readonly token: string;
  readonly relative: boolean;
}

const ABSENT = -1;
const empty = new Uint8Array(0);
const OK = encodeString('OK\0');

function segmentsOf(path: string): string[] {
  return path === '/' ? [] : path.slice(1).split('/');
}

function parentOf(path: string): string {
  const index = path.lastIndexOf('/');
  return index <= 0 ? '/' : path.slice(0, index);
}

function lookup(root: Node, path: string): Node | undefined {
  let node: Node | undefined = root;
  for (const segment of segmentsOf(path)) {
    node = node.children.get(segment);
    if (!node) return undefined;
  }
  return node;
}

/** Replaces the node at `segments` (which must exist, or its parent must, when `update` creates) by path copying. */
function replace(
  root: Node,
  segments: readonly string[],
  update: (node: Node | undefined) => Node | undefined,
): Node {
  if (segments.length === 0) {
    const next = update(root);
    if (!next) throw new XenError('EINVAL', 'xenstore', 'rm', 'cannot remove the root');
    return next;
  }
  const [head, ...rest] = segments as [string, ...string[]];
  const child = root.children.get(head);
  const next = rest.length === 0 ? update(child) : child ? replace(child, rest, update) : undefined;
  if (rest.length > 0 && !child) throw new XenError('ENOENT', 'xenstore', 'replace', 'missing parent');
  const children = new Map(root.children);
  let generation = root.generation;
  if (next) {
    if (!child) generation = nextGeneration();
    children.set(head, next);
  } else {
    children.delete(head);
    generation = nextGeneration();
  }
  return { ...root, children, generation };
}

let generationCounter = 1;
function nextGeneration(): number {
  return generationCounter++;
}

function countNodes(node: Node, into: Map<number, number>, delta: number): void {
  const owner = node.perms[0]?.domid ?? 0;
  into.set(owner, (into.get(owner) ?? 0) + delta);
  for (const child of node.children.values()) countNodes(child, into, delta);
}

/** One client connection (a socket, or an in-process client), acting as `domid`. */
export class XenstoredConnection {
  private buffer = new Uint8Array(0);
  readonly watches: Watch[] = [];
  readonly transactions = new Map<number, Transaction>();
  closed = false;

  constructor(
    private readonly daemon: SimXenstored,
    readonly domid: number,
    private readonly sendBytes: (bytes: Uint8Array) => void,
    private readonly onClose: () => void,
  ) {}

  get privileged(): boolean {
    return this.domid === 0;
  }

  get home(): string {
    return `/local/domain/${this.domid}`;
  }

  /** Feeds bytes from the client's stream. */
  receive(chunk: Uint8Array): void {
    if (this.closed) return;
    const joined = new Uint8Array(this.buffer.length + chunk.length);
    joined.set(this.buffer);
    joined.set(chunk, this.buffer.length);
    this.buffer = joined;
    while (!this.closed && this.buffer.length >= XSD_SOCKMSG_SIZE) {
      const header = readXsHeader(this.buffer);
      // xenstored treats an oversized message as a broken client and drops it (read_message: goto bad_client).
      if (header.len > XENSTORE_PAYLOAD_MAX) {
        this.daemon.logLine(`dropping connection of domain ${this.domid}: payload length ${header.len}`);
        this.close();
        return;
      }
      if (this.buffer.length < XSD_SOCKMSG_SIZE + header.len) break;
      const payload = this.buffer.slice(XSD_SOCKMSG_SIZE, XSD_SOCKMSG_SIZE + header.len);
      this.buffer = this.buffer.slice(XSD_SOCKMSG_SIZE + header.len);
      this.daemon.handle(this, header.type, header.reqId, header.txId, payload);
    }
  }

  send(type: number, reqId: number, txId: number, payload: Uint8Array): void {
    if (this.closed) return;
    this.sendBytes(encodeXsMessage(type, reqId, txId, payload));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.daemon.forget(this);
    this.onClose();
  }
}

/** The simulated xenstored: one store, many connections. */
export class SimXenstored {
  private root: Node;
  private readonly connections = new Set<XenstoredConnection>();
  private readonly owners = new Map<number, number>();
  private readonly introduced = new Set<number>();
  private readonly quota: XenstoredQuota;
  private readonly log: ((line: string) => void) | undefined;
  private nextTransaction = 1;
  /** Requests handled, for benchmarks. */
  requests = 0;

  constructor(options: XenstoredOptions = {}) {
    this.quota = { ...DEFAULT_XENSTORED_QUOTA, ...options.quota };
    for (const [name, value] of Object.entries(this.quota)) {
      if (!Number.isInteger(value) || value < 1)
        throw new XenError('EINVAL', 'xenstore', 'options', `quota ${name} must be a positive integer`);
    }
    this.log = options.log;
    const dom0 = [{ domid: 0, access: 'none' as const }];
    const node = (children: [string, Node][] = []): Node => ({
      value: empty,
      perms: dom0,
      children: new Map(children),
      generation: nextGeneration(),
    });
    this.root = node([
      ['local', node([['domain', node()]])],
      ['tool', node()],
    ]);
  }

  logLine(line: string): void {
    this.log?.(line);
  }

  /** Opens a wire-level connection; `send` receives every reply and watch event. */
  openConnection(
    domid: number,
    send: (bytes: Uint8Array) => void,
    onClose: () => void = () => {},
  ): XenstoredConnection {
    const connection = new XenstoredConnection(this, domid, send, onClose);
    this.connections.add(connection);
    return connection;
  }

  /** An in-process client acting as `domid`, speaking the same wire protocol. */
  connect(domid: number): XenStore {
    let connection: XenstoredConnection | undefined;
    const client = new XenStoreClient({
      send: (bytes) => {
        // Asynchronous in both directions, like a socket.
        queueMicrotask(() => connection?.receive(bytes));
      },
      close: () => connection?.close(),
    });
    connection = this.openConnection(
      domid,
      (bytes) => queueMicrotask(() => client.receive(bytes)),
      () => queueMicrotask(() => client.transportClosed()),
    );
    return client;
  }

  forget(connection: XenstoredConnection): void {
    this.connections.delete(connection);
  }

  /** What `xl create` and xenstored do for a new domain: its home, owned by it, and @introduceDomain. */
  introduceDomain(domid: number, name: string): void {
    this.introduced.add(domid);
    if (domid !== 0 || !lookup(this.root, '/local/domain/0')) {
      const home = `/local/domain/${domid}`;
      const perms: XenStorePermission[] = [{ domid, access: 'none' }];
      this.applyPrivileged({ kind: 'mkdir', path: home });
      this.applyPrivileged({ kind: 'set-perms', path: home, perms });
      this.applyPrivileged({ kind: 'write', path: `${home}/name`, value: encodeString(name) });
      this.applyPrivileged({ kind: 'write', path: `${home}/domid`, value: encodeString(String(domid)) });
    }
    this.fireSpecial('@introduceDomain');
  }

  releaseDomain(domid: number): void {
    this.introduced.delete(domid);
    const home = `/local/domain/${domid}`;
    if (lookup(this.root, home)) this.applyPrivileged({ kind: 'rm', path: home });
    this.fireSpecial('@releaseDomain');
  }

  /** Reads a node directly (tests and tools). */
  readNode(path: string): string | undefined {
    const node = lookup(this.root, path);
    return node ? decodeString(node.value) : undefined;
  }

  private applyPrivileged(op: Op): void {
    const { root, changes } = this.execute(this.root, 0, op, undefined, this.owners);
    this.root = root;
    this.fire(changes);
  }

  async close(): Promise<void> {
    for (const connection of [...this.connections]) connection.close();
  }

  // --- permissions -------------------------------------------------------------------

  private access(node: Node, domid: number): { read: boolean; write: boolean } {
    if (domid === 0) return { read: true, write: true };
    const [owner, ...rest] = node.perms;
    if (!owner || owner.domid === domid) return { read: true, write: true };
    const entry = rest.find((p) => p.domid === domid) ?? owner;
    return {
      read: entry.access === 'read' || entry.access === 'both',
      write: entry.access === 'write' || entry.access === 'both',
    };
  }

  // --- operations --------------------------------------------------------------------

  /**
   * Applies one modifying operation to `root` as `domid`. `owners` is the global ownership
   * count (quota), undefined inside a transaction (checked again when it commits).
   */
  private execute(
    root: Node,
    domid: number,
    op: Op,
    record: ((path: string, node: Node | undefined) => void) | undefined,
    owners: Map<number, number> | undefined,
  ): { root: Node; changes: Change[] } {
    const privileged = domid === 0;
    const name = op.kind === 'set-perms' ? 'set_perms' : op.kind;
    const node = lookup(root, op.path);
    record?.(op.path, node);
    switch (op.kind) {
      case 'write':
      case 'mkdir': {
        const value = op.kind === 'write' ? op.value : undefined;
        if (value && !privileged && value.length > this.quota.maxEntrySize) {
          throw new XenError(
            'ENOSPC',
            'xenstore',
            name,
            `value of ${value.length} bytes exceeds the entry quota`,
          );
        }
        if (node) {
          if (!this.access(node, domid).write) throw new XenError('EACCES', 'xenstore', name, op.path);
          if (!value) return { root, changes: [] };
          return {
            root: replace(root, segmentsOf(op.path), (n) =>
              n ? { ...n, value, generation: nextGeneration() } : n,
            ),
            changes: [{ path: op.path, recurse: false }],
          };
        }
        // Create the node and any missing ancestors; the deepest existing one must be writable.
        const segments = segmentsOf(op.path);
        let depth = 0;
        let ancestor = root;
        while (depth < segments.length) {
          const child = ancestor.children.get(segments[depth] as string);
          if (!child) break;
          ancestor = child;
          depth++;
        }
        record?.(`/${segments.slice(0, depth).join('/')}`, ancestor);
        if (!this.access(ancestor, domid).write) throw new XenError('EACCES', 'xenstore', name, op.path);
        // New nodes inherit the parent's permissions; an unprivileged creator becomes the owner.
        const [parentOwner, ...others] = ancestor.perms;
        const perms: XenStorePermission[] = privileged
          ? [...ancestor.perms]
          : [{ domid, access: parentOwner?.access ?? 'none' }, ...others.filter((p) => p.domid !== domid)];
        const created = segments.length - depth;
        const owner = perms[0]?.domid ?? 0;
        if (owners && owner !== 0 && (owners.get(owner) ?? 0) + created > this.quota.entriesPerDomain) {
          throw new XenError(
            'ENOSPC',
            'xenstore',
            name,
            `domain ${owner} exceeds its quota of ${this.quota.entriesPerDomain} nodes`,
          );
        }
        let subtree: Node = {
          value: value ?? empty,
          perms,
          children: new Map(),
          generation: nextGeneration(),
        };
        for (let i = segments.length - 1; i > depth; i--) {
          subtree = {
            value: empty,
            perms,
            children: new Map([[segments[i] as string, subtree]]),
            generation: nextGeneration(),
          };
        }
        if (owners) owners.set(owner, (owners.get(owner) ?? 0) + created);
        return {
          root: replace(root, segments.slice(0, depth + 1), () => subtree),
          changes: [{ path: op.path, recurse: false }],
        };
      }
      case 'rm': {
        if (op.path === '/') throw new XenError('EINVAL', 'xenstore', 'rm', 'cannot remove the root');
        if (!node) {
          // Xen: removing a missing node is fine when its parent exists.
          const parent = lookup(root, parentOf(op.path));
          record?.(parentOf(op.path), parent);
          if (parent) return { root, changes: [] };
          throw new XenError('ENOENT', 'xenstore', 'rm', op.path);
        }
        if (!this.access(node, domid).write) throw new XenError('EACCES', 'xenstore', 'rm', op.path);
        record?.(parentOf(op.path), lookup(root, parentOf(op.path)));
        if (owners) countNodes(node, owners, -1);
        return {
          root: replace(root, segmentsOf(op.path), () => undefined),
          changes: [{ path: op.path, recurse: true }],
        };
      }
      case 'set-perms': {
        if (!node) throw new XenError('ENOENT', 'xenstore', 'set_perms', op.path);
        const owner = node.perms[0]?.domid ?? 0;
        if (!privileged && owner !== domid) throw new XenError('EACCES', 'xenstore', 'set_perms', op.path);
        if (!privileged && op.perms[0]?.domid !== owner) {
          throw new XenError(
            'EPERM',
            'xenstore',
            'set_perms',
            'only a privileged domain may change the owner',
          );
        }
        if (owners) {
          countNodes({ ...node, children: new Map() }, owners, -1);
          countNodes({ ...node, perms: op.perms, children: new Map() }, owners, 1);
        }
        return {
          root: replace(root, segmentsOf(op.path), (n) =>
            n ? { ...n, perms: op.perms, generation: nextGeneration() } : n,
          ),
          changes: [{ path: op.path, recurse: false }],
        };
      }
    }
  }

  private canonical(connection: XenstoredConnection, path: string, allowSpecial = false): string {
    if (!isValidXenStorePath(path, { allowSpecial }))
      throw new XenError('EINVAL', 'xenstore', 'path', `invalid path "${path.slice(0, 64)}"`);
    if (path.startsWith('/') || path.startsWith('@')) return path;
    return `${connection.home}/${path}`;
  }

  // --- watches ---------------------------------------------------------------------------

  private fire(changes: readonly Change[], before?: Node): void {
    for (const change of changes) {
      const node = lookup(this.root, change.path) ?? (before ? lookup(before, change.path) : undefined);
      for (const connection of this.connections) {
        for (const watch of connection.watches) {
          if (watch.absolute.startsWith('@')) continue;
          const matches =
            change.path === watch.absolute ||
            watch.absolute === '/' ||
            change.path.startsWith(`${watch.absolute}/`) ||
            (change.recurse && watch.absolute.startsWith(`${change.path}/`));
          if (!matches) continue;
          // A watcher only hears about nodes it may read (xenstored: perms checked per event).
          if (node && !this.access(node, connection.domid).read) continue;
          const reported =
            change.recurse && watch.absolute.startsWith(`${change.path}/`) ? watch.absolute : change.path;
          this.sendEvent(connection, watch, reported);
        }
      }
    }
  }

  private fireSpecial(path: '@introduceDomain' | '@releaseDomain'): void {
    for (const connection of this.connections) {
      for (const watch of connection.watches)
        if (watch.absolute === path) this.sendEvent(connection, watch, path);
    }
  }

  private sendEvent(connection: XenstoredConnection, watch: Watch, absolute: string): void {
    const prefix = `${connection.home}/`;
    const path = watch.relative && absolute.startsWith(prefix) ? absolute.slice(prefix.length) : absolute;
    connection.send(XsType.WATCH_EVENT, 0, 0, joinNulTerminated([path, watch.token]));
  }

  // --- requests ----------------------------------------------------------------------------

  handle(
    connection: XenstoredConnection,
    type: number,
    reqId: number,
    txId: number,
    payload: Uint8Array,
  ): void {
    this.requests++;
    this.log?.(
      `domain ${connection.domid} ${xsTypeName(type) ?? type} req ${reqId} tx ${txId} len ${payload.length}`,
    );
    try {
      const reply = this.dispatch(connection, type, txId, payload);
      connection.send(type, reqId, txId, reply);
    } catch (error) {
      const code: XenErrno = XenError.isInstance(error) ? error.code : 'EIO';
      connection.send(XsType.ERROR, reqId, txId, encodeString(`${code}\0`));
      if (!XenError.isInstance(error)) this.log?.(`internal error: ${String(error)}`);
    }
  }

  private dispatch(
    connection: XenstoredConnection,
    type: number,
    txId: number,
    payload: Uint8Array,
  ): Uint8Array {
    const transaction = this.transactionOf(connection, txId, type);
    switch (type) {
      case XsType.READ: {
        const path = this.canonical(connection, oneArg(payload));
        const node = this.readable(connection, transaction, path);
        return node.value;
      }
      case XsType.DIRECTORY: {
        const path = this.canonical(connection, oneArg(payload));
        const node = this.readable(connection, transaction, path);
        const list = joinNulTerminated([...node.children.keys()]);
        if (list.length > XENSTORE_PAYLOAD_MAX) throw new XenError('E2BIG', 'xenstore', 'directory', path);
        return list;
      }
      case XsType.DIRECTORY_PART: {
        const [rawPath, rawOffset] = args(payload, 2);
        const path = this.canonical(connection, rawPath as string);
        const offset = Number(rawOffset);
        if (!/^\d+$/.test(rawOffset as string))
          throw new XenError('EINVAL', 'xenstore', 'directory_part', 'bad offset');
        const node = this.readable(connection, transaction, path);
        const list = joinNulTerminated([...node.children.keys()]);
        const generation = encodeString(`${node.generation}\0`);
        const room = XENSTORE_PAYLOAD_MAX - generation.length - 1;
        if (offset >= list.length) return concat(generation, new Uint8Array(1));
        let end = Math.min(list.length, offset + room);
        // Cut at a name boundary.
        while (end < list.length && end > offset && list[end - 1] !== 0) end--;
        const chunk = list.subarray(offset, end);
        return end >= list.length ? concat(generation, chunk, new Uint8Array(1)) : concat(generation, chunk);
      }
      case XsType.GET_PERMS: {
        const path = this.canonical(connection, oneArg(payload));
        const node = this.readable(connection, transaction, path);
        return joinNulTerminated(node.perms.map(formatPermission));
      }
      case XsType.WRITE: {
        const end = payload.indexOf(0);
        if (end < 0) throw new XenError('EINVAL', 'xenstore', 'write', 'no path');
        const path = this.canonical(connection, decodeString(payload.subarray(0, end)));
        this.modify(connection, transaction, { kind: 'write', path, value: payload.slice(end + 1) });
        return OK;
      }
      case XsType.MKDIR: {
        this.modify(connection, transaction, {
          kind: 'mkdir',
          path: this.canonical(connection, oneArg(payload)),
        });
        return OK;
      }
      case XsType.RM: {
        this.modify(connection, transaction, {
          kind: 'rm',
          path: this.canonical(connection, oneArg(payload)),
        });
        return OK;
      }
      case XsType.SET_PERMS: {
        const [rawPath, ...rawPerms] = args(payload, -1);
        if (!rawPath || rawPerms.length === 0)
          throw new XenError('EINVAL', 'xenstore', 'set_perms', 'no permissions');
        const perms = rawPerms.map((text) => {
          const perm = parsePermission(text);
          if (!perm)
            throw new XenError('EINVAL', 'xenstore', 'set_perms', `bad permission "${text.slice(0, 16)}"`);
          return perm;
        });
        this.modify(connection, transaction, {
          kind: 'set-perms',
          path: this.canonical(connection, rawPath),
          perms,
        });
        return OK;
      }
      case XsType.WATCH: {
        const [rawPath, token] = args(payload, 2) as [string, string];
        const absolute = this.canonical(connection, rawPath, true);
        if (connection.watches.some((w) => w.path === rawPath && w.token === token)) {
          throw new XenError('EEXIST', 'xenstore', 'watch', rawPath);
        }
        if (!connection.privileged && connection.watches.length >= this.quota.watchesPerDomain) {
          throw new XenError(
            'E2BIG',
            'xenstore',
            'watch',
            `more than ${this.quota.watchesPerDomain} watches`,
          );
        }
        const watch: Watch = {
          path: rawPath,
          absolute,
          token,
          relative: !rawPath.startsWith('/') && !rawPath.startsWith('@'),
        };
        connection.watches.push(watch);
        // The initial fire follows the reply (xenstored queues it after "OK").
        queueMicrotask(() => connection.send(XsType.WATCH_EVENT, 0, 0, joinNulTerminated([rawPath, token])));
        return OK;
      }
      case XsType.UNWATCH: {
        const [rawPath, token] = args(payload, 2) as [string, string];
        const index = connection.watches.findIndex((w) => w.path === rawPath && w.token === token);
        if (index < 0) throw new XenError('ENOENT', 'xenstore', 'unwatch', rawPath);
        connection.watches.splice(index, 1);
        return OK;
      }
      case XsType.RESET_WATCHES: {
        connection.watches.length = 0;
        return OK;
      }
      case XsType.TRANSACTION_START: {
        if (transaction) throw new XenError('EBUSY', 'xenstore', 'transaction_start', 'nested transaction');
        oneArg(payload, true);
        if (!connection.privileged && connection.transactions.size >= this.quota.transactionsPerDomain) {
          throw new XenError('ENOSPC', 'xenstore', 'transaction_start', 'too many transactions');
        }
        const id = this.nextTransaction++;
        if (this.nextTransaction > 0xfffffff0) this.nextTransaction = 1;
        connection.transactions.set(id, {
          id,
          base: this.root,
          root: this.root,
          accessed: new Map(),
          ops: [],
        });
        return encodeString(`${id}\0`);
      }
      case XsType.TRANSACTION_END: {
        if (!transaction) throw new XenError('ENOENT', 'xenstore', 'transaction_end', 'no transaction');
        const verdict = oneArg(payload);
        if (verdict !== 'T' && verdict !== 'F')
          throw new XenError('EINVAL', 'xenstore', 'transaction_end', 'expected T or F');
        connection.transactions.delete(transaction.id);
        if (verdict === 'T') this.commit(connection, transaction);
        return OK;
      }
      case XsType.GET_DOMAIN_PATH: {
        const domid = domidArg(oneArg(payload));
        return encodeString(`/local/domain/${domid}\0`);
      }
      case XsType.INTRODUCE: {
        this.requirePrivileged(connection, 'introduce');
        const [rawDomid] = args(payload, 3);
        const domid = domidArg(rawDomid as string);
        this.introduced.add(domid);
        this.fireSpecial('@introduceDomain');
        return OK;
      }
      case XsType.RELEASE: {
        this.requirePrivileged(connection, 'release');
        const domid = domidArg(oneArg(payload));
        if (!this.introduced.delete(domid))
          throw new XenError('ENOENT', 'xenstore', 'release', `domain ${domid}`);
        this.fireSpecial('@releaseDomain');
        return OK;
      }
      case XsType.IS_DOMAIN_INTRODUCED: {
        const domid = domidArg(oneArg(payload));
        return encodeString(this.introduced.has(domid) ? 'T\0' : 'F\0');
      }
      case XsType.RESUME:
      case XsType.SET_TARGET: {
        this.requirePrivileged(connection, xsTypeName(type) ?? 'control');
        return OK;
      }
      case XsType.CONTROL: {
        this.requirePrivileged(connection, 'control');
        const [command] = args(payload, -1);
        if (command === 'print' || command === 'log') return OK;
        throw new XenError(
          'EINVAL',
          'xenstore',
          'control',
          `unknown command "${(command ?? '').slice(0, 32)}"`,
        );
      }
      case XsType.WATCH_EVENT:
      case XsType.ERROR:
        throw new XenError('EINVAL', 'xenstore', 'request', `${xsTypeName(type)} is not a request`);
      default:
        throw new XenError('ENOSYS', 'xenstore', 'request', `unknown message type ${type}`);
    }
  }

  private requirePrivileged(connection: XenstoredConnection, operation: string): void {
    if (!connection.privileged) throw new XenError('EACCES', 'xenstore', operation, 'privileged operation');
  }

  private transactionOf(
    connection: XenstoredConnection,
    txId: number,
    type: number,
  ): Transaction | undefined {
    if (txId === 0) return undefined;
    const transaction = connection.transactions.get(txId);
    if (!transaction)
      throw new XenError('ENOENT', 'xenstore', xsTypeName(type) ?? 'request', `no transaction ${txId}`);
    return transaction;
  }

  private readable(
    connection: XenstoredConnection,
    transaction: Transaction | undefined,
    path: string,
  ): Node {
    if (path.startsWith('@')) throw new XenError('EINVAL', 'xenstore', 'read', path);
    const node = lookup(transaction ? transaction.root : this.root, path);
    if (transaction) recordAccess(transaction, path);
    if (!node) throw new XenError('ENOENT', 'xenstore', 'read', path);
    if (!this.access(node, connection.domid).read) throw new XenError('EACCES', 'xenstore', 'read', path);
    return node;
  }

  private modify(connection: XenstoredConnection, transaction: Transaction | undefined, op: Op): void {
    if (op.path.startsWith('@')) throw new XenError('EINVAL', 'xenstore', op.kind, op.path);
    if (transaction) {
      const { root } = this.execute(
        transaction.root,
        connection.domid,
        op,
        (p) => recordAccess(transaction, p),
        undefined,
      );
      transaction.root = root;
      transaction.ops.push(op);
      return;
    }
    const { root, changes } = this.execute(this.root, connection.domid, op, undefined, this.owners);
    const before = this.root;
    this.root = root;
    this.fire(changes, before);
  }

  /** Commits when every node the transaction looked at is unchanged; else EAGAIN. */
  private commit(connection: XenstoredConnection, transaction: Transaction): void {
    for (const [path, generation] of transaction.accessed) {
      const current = lookup(this.root, path);
      if ((current ? current.generation : ABSENT) !== generation) {
        throw new XenError('EAGAIN', 'xenstore', 'transaction_end', `conflict on ${path}`);
      }
    }
    let root = this.root;
    const owners = new Map(this.owners);
    const changes: Change[] = [];
    for (const op of transaction.ops) {
      const result = this.execute(root, connection.domid, op, undefined, owners);
      root = result.root;
      changes.push(...result.changes);
    }
    const before = this.root;
    this.root = root;
    this.owners.clear();
    for (const [owner, count] of owners) this.owners.set(owner, count);
    this.fire(changes, before);
  }
}

/**
 * Remembers the generation `path` had when the transaction started: the commit fails with
 * EAGAIN when anything the transaction looked at has changed since.
 */
function recordAccess(transaction: Transaction, path: string): void {
  if (!transaction.accessed.has(path)) {
    const base = lookup(transaction.base, path);
    transaction.accessed.set(path, base ? base.generation : ABSENT);
  }
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** NUL-terminated strings of a payload; `count` -1 means any number (at least one). EINVAL when malformed. */
function args(payload: Uint8Array, count: number): string[] {
  if (payload.length === 0 || payload[payload.length - 1] !== 0) {
    throw new XenError('EINVAL', 'xenstore', 'request', 'arguments are not NUL-terminated');
  }
  const parts = decodeString(payload.subarray(0, payload.length - 1)).split('\0');
  if (count >= 0 && parts.length !== count)
    throw new XenError('EINVAL', 'xenstore', 'request', `expected ${count} arguments`);
  return parts;
}

function oneArg(payload: Uint8Array, allowEmpty = false): string {
  const [value] = args(payload, 1) as [string];
  if (!allowEmpty && value.length === 0)
    throw new XenError('EINVAL', 'xenstore', 'request', 'empty argument');
  return value;
}

function domidArg(text: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) > 0xffff)
    throw new XenError('EINVAL', 'xenstore', 'request', `bad domid "${text.slice(0, 16)}"`);
  return Number(text);
}
