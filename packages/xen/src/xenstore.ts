import { XenError } from './xen-errors.js';
import { decodeString, type XenStorePermission } from './xenstore-wire.js';

export type { XenStoreAccess, XenStorePermission } from './xenstore-wire.js';

/**
 * The node operations of xenstore, shared by a connection and a transaction. Paths are
 * absolute (`/local/domain/5/...`) or relative to the connection's home
 * (`/local/domain/<domid>`), at most 3072 (absolute) or 2048 (relative) characters of
 * `[A-Za-z0-9-/_@]`. Failures are `XenError`s with xenstored's errno (`ENOENT`, `EACCES`,
 * `EINVAL`, `E2BIG`, `ENOSPC`, `EAGAIN`, ...).
 */
export interface XenStoreOps {
  /** XS_READ. Throws `ENOENT` when the node does not exist. */
  read(path: string): Promise<string>;
  /** XS_READ returning raw bytes (values are byte strings on the wire). */
  readBytes(path: string): Promise<Uint8Array>;
  /** XS_READ answering `undefined` instead of throwing `ENOENT`. */
  tryRead(path: string): Promise<string | undefined>;
  /** XS_WRITE: creates the node and any missing parents. Value at most 4096 bytes with the path. */
  write(path: string, value: string | Uint8Array): Promise<void>;
  /** XS_MKDIR: creates an empty node (and parents); succeeds when it already exists. */
  mkdir(path: string): Promise<void>;
  /** XS_RM: removes the node and everything below it. Succeeds for a missing node whose parent exists; `ENOENT` when the parent is missing too (as xenstored). */
  rm(path: string): Promise<void>;
  /** XS_DIRECTORY: the names (not paths) of the node's children. */
  directory(path: string): Promise<string[]>;
  /** Whether the node exists (an XS_READ, as `xenstore-exists` does). */
  exists(path: string): Promise<boolean>;
  /** XS_GET_PERMS. The first entry is the owner and the access of every domain not listed. */
  getPermissions(path: string): Promise<XenStorePermission[]>;
  /** XS_SET_PERMS. Only the owner (or a privileged domain) may change permissions (`EACCES`). */
  setPermissions(path: string, permissions: readonly XenStorePermission[]): Promise<void>;
}

/** An open transaction. Operations see a snapshot plus their own writes until `commit`. */
export interface XenStoreTransaction extends XenStoreOps {
  /** The tx_id xenstored gave (never 0). */
  readonly id: number;
  /** XS_TRANSACTION_END "T". Throws `XenError` `EAGAIN` when a conflicting commit happened first. */
  commit(): Promise<void>;
  /** XS_TRANSACTION_END "F". Never throws for a transaction that is still open. */
  abort(): Promise<void>;
}

/** One watch firing: the path that changed (or the watched path itself for the initial fire) and the token. */
export interface XenStoreWatchEvent {
  readonly path: string;
  readonly token: string;
}

export interface XenStoreWatchOptions {
  /** The token sent with XS_WATCH (default: a unique token per watch). */
  token?: string;
  /** Called for every event, asynchronously. The iterator sees the same events. */
  onEvent?: (event: XenStoreWatchEvent) => void;
}

/**
 * A registered watch. xenstored fires it once right after registration (the "initial fire")
 * and then whenever the watched node or anything below it changes.
 * Iterating yields events; pending events are coalesced per path (bounded), which keeps the
 * xenstore meaning "something changed at or below this path, re-read it".
 */
export interface XenStoreWatch extends AsyncIterable<XenStoreWatchEvent> {
  readonly path: string;
  readonly token: string;
  /** XS_UNWATCH, ends every iterator. Idempotent. */
  close(): Promise<void>;
}

export interface XenStoreTransactionOptions {
  /** Attempts on `EAGAIN` before giving up with that error (default 16). */
  maxAttempts?: number;
}

/** A connection to xenstored (libxenstore's `xs_handle`, or our client over the same wire). */
export interface XenStore extends XenStoreOps {
  /** XS_GET_DOMAIN_PATH: `/local/domain/<domid>`. */
  getDomainPath(domid: number): Promise<string>;
  /** XS_WATCH. Resolves once xenstored acknowledged it; the initial fire follows. */
  watch(path: string, options?: XenStoreWatchOptions): Promise<XenStoreWatch>;
  /** XS_TRANSACTION_START. */
  startTransaction(): Promise<XenStoreTransaction>;
  /**
   * Runs `body` in a transaction and commits it, retrying the whole body on `EAGAIN` (a
   * conflicting commit). The body must be safe to run again. Any other error aborts.
   */
  transaction<T>(
    body: (tx: XenStoreTransaction) => Promise<T>,
    options?: XenStoreTransactionOptions,
  ): Promise<T>;
  /** Closes the connection; watches end, pending requests reject with `ENOTCONN`. */
  close(): Promise<void>;
}

/**
 * The reads every `XenStore` implementation derives from `readBytes`: the wire client and
 * the libxenstore binding share them instead of each spelling them out.
 */
export abstract class XenStoreReads {
  abstract readBytes(path: string): Promise<Uint8Array>;

  async read(path: string): Promise<string> {
    return decodeString(await this.readBytes(path));
  }

  async tryRead(path: string): Promise<string | undefined> {
    try {
      return await this.read(path);
    } catch (error) {
      if (XenError.isInstance(error) && error.code === 'ENOENT') return undefined;
      throw error;
    }
  }

  async exists(path: string): Promise<boolean> {
    return (await this.tryRead(path)) !== undefined;
  }
}
