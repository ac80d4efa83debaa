import { randomFillSync } from 'node:crypto';
import { type FileHandle, open } from 'node:fs/promises';

const marker = Symbol.for('xvio.dev-rng.entropy-source-error');

export type EntropySourceErrorCode =
  /** The source could not be opened or a read failed; `cause` holds the system error. */
  | 'source-failed'
  /** A file source reached its end: it has no more bytes to give. */
  | 'source-exhausted'
  /** The caller asked `read` for more bytes than `available()` reported (a device bug). */
  | 'source-underrun';

/** A host-side failure of an entropy source. `isInstance` recognises errors from any installed copy. */
export class EntropySourceError extends Error {
  readonly [marker] = true;
  override readonly name = 'EntropySourceError';
  readonly code: EntropySourceErrorCode;

  constructor(code: EntropySourceErrorCode, message: string, options?: ErrorOptions) {
    super(`${code}: ${message}`, options);
    this.code = code;
  }

  static isInstance(value: unknown): value is EntropySourceError {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[marker] === true;
  }
}

/**
 * Where random bytes come from. The device asks how many bytes are ready, takes at most that
 * many synchronously, and otherwise waits for `whenAvailable`: a source never blocks the
 * event loop and the device never polls it.
 */
export interface EntropySource {
  /** `os`, `file`, `seeded`, ... for logs and metrics. */
  readonly kind: string;
  /** Bytes `read` can give now without waiting (`Infinity` for the OS CSPRNG). */
  available(): number;
  /** Fills all of `target`. Throws `EntropySourceError` (`source-underrun`) when asked for more than `available()`. */
  read(target: Uint8Array): void;
  /** Calls `listener` once, when `available()` may have grown. Returns a function that cancels the wait. */
  whenAvailable(listener: () => void): () => void;
  /** Set once the source has failed for good; it then never becomes available again. */
  readonly error: EntropySourceError | undefined;
  /** Resolves once the source works (a file is open), rejects with its error otherwise. */
  ready(): Promise<void>;
  close(): Promise<void>;
}

/** Listeners waiting for bytes; each fires once. */
class Waiters {
  private readonly listeners = new Set<() => void>();

  add(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  fire(): void {
    const listeners = [...this.listeners];
    this.listeners.clear();
    for (const listener of listeners) listener();
  }

  clear(): void {
    this.listeners.clear();
  }
}

/** randomFillSync fills at most 2^31-1 bytes per call. */
const RANDOM_FILL_LIMIT = 0x7fff_ffff;
/**
 * Requests below this size are served from a pool filled 64 KiB at a time: one
 * randomFillSync call costs about 2 microseconds however small the buffer (measured in
 * bench/results/dev-rng-throughput.md), so 64-byte requests would otherwise spend most of
 * their time entering OpenSSL. Bytes leave the pool once and are then forgotten (zeroed).
 */
const POOL_THRESHOLD = 4096;
const POOL_SIZE = 64 * 1024;

/** The operating system's CSPRNG (getrandom(2) through OpenSSL): always available, never blocks. */
export function createOsEntropySource(): EntropySource {
  const pool = new Uint8Array(POOL_SIZE);
  let poolOffset = POOL_SIZE;
  return {
    kind: 'os',
    error: undefined,
    available: () => Number.POSITIVE_INFINITY,
    read(target) {
      if (target.length < POOL_THRESHOLD) {
        if (POOL_SIZE - poolOffset < target.length) {
          randomFillSync(pool);
          poolOffset = 0;
        }
        const end = poolOffset + target.length;
        target.set(pool.subarray(poolOffset, end));
        pool.fill(0, poolOffset, end);
        poolOffset = end;
        return;
      }
      for (let offset = 0; offset < target.length; offset += RANDOM_FILL_LIMIT) {
        randomFillSync(target.subarray(offset, offset + RANDOM_FILL_LIMIT));
      }
    },
    // Never needed: the OS source always has bytes. Kept so the contract is total.
    whenAvailable: (listener) => {
      queueMicrotask(listener);
      return () => {};
    },
    ready: () => Promise.resolve(),
    close: () => {
      pool.fill(0);
      return Promise.resolve();
    },
  };
}

export interface FileEntropySourceOptions {
  /** A character device such as `/dev/hwrng` or `/dev/urandom`, or a regular file. */
  path: string;
  /** Bytes read ahead per read(2); also the most the source holds. Default 64 KiB. */
  bufferSize?: number;
}

/**
 * A file or character device read ahead into a bounded buffer. Reads run on libuv's thread
 * pool (`FileHandle.read`), so a slow `/dev/hwrng` or a blocking `/dev/random` delays only
 * the guest's requests, never the event loop. A regular file ends: the source is then
 * `source-exhausted` and the device's requests stay queued.
 */
export class FileEntropySource implements EntropySource {
  readonly kind = 'file';
  readonly path: string;
  private readonly bufferSize: number;
  private readonly chunks: Uint8Array[] = [];
  private chunkOffset = 0;
  private buffered = 0;
  private handle: FileHandle | undefined;
  private reading = false;
  private closed = false;
  private failure: EntropySourceError | undefined;
  private readonly waiters = new Waiters();
  private readonly opened: Promise<void>;

  constructor(options: FileEntropySourceOptions) {
    this.path = options.path;
    this.bufferSize = options.bufferSize ?? 64 * 1024;
    this.opened = open(this.path, 'r').then(
      (handle) => {
        if (this.closed) {
          void handle.close();
          return;
        }
        this.handle = handle;
        this.refill();
      },
      (error: unknown) => {
        this.fail(new EntropySourceError('source-failed', `cannot open ${this.path}`, { cause: error }));
      },
    );
  }

  get error(): EntropySourceError | undefined {
    return this.failure;
  }

  available(): number {
    return this.buffered;
  }

  read(target: Uint8Array): void {
    if (target.length > this.buffered) {
      throw new EntropySourceError(
        'source-underrun',
        `asked for ${target.length} bytes, ${this.buffered} ready`,
      );
    }
    let done = 0;
    while (done < target.length) {
      const chunk = this.chunks[0]!;
      const n = Math.min(chunk.length - this.chunkOffset, target.length - done);
      target.set(chunk.subarray(this.chunkOffset, this.chunkOffset + n), done);
      done += n;
      this.chunkOffset += n;
      if (this.chunkOffset === chunk.length) {
        this.chunks.shift();
        this.chunkOffset = 0;
      }
    }
    this.buffered -= done;
    this.refill();
  }

  whenAvailable(listener: () => void): () => void {
    if (this.buffered > 0) {
      queueMicrotask(listener);
      return () => {};
    }
    if (this.failure) return () => {};
    return this.waiters.add(listener);
  }

  async ready(): Promise<void> {
    await this.opened;
    if (this.failure?.code === 'source-failed') throw this.failure;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.waiters.clear();
    await this.opened;
    const handle = this.handle;
    this.handle = undefined;
    // A read still in flight finishes on its own; closing waits for it inside libuv.
    await handle?.close();
  }

  /** Starts one read when the buffer is below half full; the buffer never exceeds 1.5 x bufferSize. */
  private refill(): void {
    const handle = this.handle;
    if (!handle || this.reading || this.closed || this.failure) return;
    if (this.buffered > this.bufferSize / 2) return;
    this.reading = true;
    const target = new Uint8Array(this.bufferSize);
    handle.read(target, 0, target.length, null).then(
      ({ bytesRead }) => {
        this.reading = false;
        if (this.closed) return;
        if (bytesRead === 0) {
          this.fail(new EntropySourceError('source-exhausted', `${this.path} has no more bytes`));
          return;
        }
        this.chunks.push(target.subarray(0, bytesRead));
        this.buffered += bytesRead;
        this.waiters.fire();
        this.refill();
      },
      (error: unknown) => {
        this.reading = false;
        if (this.closed) return;
        this.fail(new EntropySourceError('source-failed', `reading ${this.path} failed`, { cause: error }));
      },
    );
  }

  /** Wakes the waiters once, so they see the error; later waits never fire (no spinning on a dead source). */
  private fail(error: EntropySourceError): void {
    this.failure ??= error;
    this.waiters.fire();
  }
}

export function createFileEntropySource(options: FileEntropySourceOptions): FileEntropySource {
  return new FileEntropySource(options);
}

export interface SeededEntropySourceOptions {
  seed: number;
  /** Bytes the source may give before it must be refilled with `refill`; default unlimited. */
  budget?: number;
}

/**
 * A deterministic, NOT random, source for tests and reproducible runs: a xoshiro128** stream
 * from a seed. With a `budget` it runs dry until `refill` is called, which models a slow
 * hardware generator without timing.
 */
export class SeededEntropySource implements EntropySource {
  readonly kind = 'seeded';
  readonly error = undefined;
  private readonly state = new Uint32Array(4);
  private word = 0;
  private wordBytes = 0;
  private budget: number;
  private readonly waiters = new Waiters();

  constructor(options: SeededEntropySourceOptions) {
    // splitmix32 turns any seed (0 included) into a valid non-zero xoshiro state.
    let x = Math.trunc(options.seed) >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      this.state[i] = (z ^ (z >>> 16)) >>> 0;
    }
    this.budget = options.budget ?? Number.POSITIVE_INFINITY;
  }

  available(): number {
    return this.budget;
  }

  read(target: Uint8Array): void {
    if (target.length > this.budget) {
      throw new EntropySourceError(
        'source-underrun',
        `asked for ${target.length} bytes, ${this.budget} ready`,
      );
    }
    for (let i = 0; i < target.length; i++) {
      if (this.wordBytes === 0) {
        this.word = this.nextWord();
        this.wordBytes = 4;
      }
      target[i] = this.word & 0xff;
      this.word >>>= 8;
      this.wordBytes--;
    }
    this.budget -= target.length;
  }

  /** Adds `bytes` to the budget and wakes whoever waits. */
  refill(bytes: number): void {
    this.budget += bytes;
    if (bytes > 0) this.waiters.fire();
  }

  whenAvailable(listener: () => void): () => void {
    if (this.budget > 0) {
      queueMicrotask(listener);
      return () => {};
    }
    return this.waiters.add(listener);
  }

  ready(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.waiters.clear();
    return Promise.resolve();
  }

  private nextWord(): number {
    const s = this.state;
    const result = Math.imul(rotl(Math.imul(s[1]!, 5), 7), 9) >>> 0;
    const t = s[1]! << 9;
    s[2] = s[2]! ^ s[0]!;
    s[3] = s[3]! ^ s[1]!;
    s[1] = s[1]! ^ s[2]!;
    s[0] = s[0]! ^ s[3]!;
    s[2] = s[2]! ^ t;
    s[3] = rotl(s[3]!, 11);
    return result;
  }
}

function rotl(value: number, shift: number): number {
  return ((value << shift) | (value >>> (32 - shift))) >>> 0;
}

export function createSeededEntropySource(options: SeededEntropySourceOptions): SeededEntropySource {
  return new SeededEntropySource(options);
}
