import { createWriteStream, type WriteStream } from 'node:fs';
import { lstat, rm } from 'node:fs/promises';
import net from 'node:net';
import type { ConsoleSize } from './console-wire.js';

const marker = Symbol.for('xvio.dev-console.host-error');

export type ConsoleHostErrorCode =
  /** The host could not be opened (listen failed, no pseudo-terminal, log not writable). */
  | 'host-open-failed'
  /** The host failed while running (write error, pty gone); `cause` holds why. */
  | 'host-failed';

/** A host-side failure of a console port. `isInstance` recognises errors from any installed copy. */
export class ConsoleHostError extends Error {
  readonly [marker] = true;
  override readonly name = 'ConsoleHostError';
  readonly code: ConsoleHostErrorCode;

  constructor(code: ConsoleHostErrorCode, message: string, options?: ErrorOptions) {
    super(`${code}: ${message}`, options);
    this.code = code;
  }

  static isInstance(value: unknown): value is ConsoleHostError {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[marker] === true;
  }
}

/** What a host tells the device. */
export interface ConsoleHostEvents {
  /** Input for the guest. After `pause()` the host delivers nothing until `resume()`. */
  data(bytes: Uint8Array): void;
  /** Everything written was accepted: `write` may be called again after it returned false. */
  drain(): void;
  /** A peer attached or went away (a socket client, ...). */
  connection(connected: boolean): void;
  /** The host's terminal changed size. */
  resize(size: ConsoleSize): void;
  /** The host is gone for good; `error` says why (undefined: closed on purpose). */
  closed(error?: ConsoleHostError): void;
}

export interface ConsoleHostStats {
  /** Guest output the host threw away because no peer was attached. */
  droppedBytes: number;
  /** Peers refused because one was already attached. */
  rejectedPeers: number;
}

/**
 * The host side of one console port: where guest output goes and host input comes from.
 * Flow control both ways: `write` returns false when the host's bounded buffer is full (the
 * device then stops completing transmit buffers until `drain`), and `pause` stops input while
 * the device's buffer toward the guest is full.
 */
export interface ConsoleHost {
  /** `stdio`, `pty`, `unix`, `tcp`, `file`, `memory`, `null`, `tee`. */
  readonly kind: string;
  /** Where to reach it: the pty path, the socket address, the log path. */
  readonly address: string;
  readonly connected: boolean;
  /** Terminal size when the host knows it. */
  readonly size: ConsoleSize | undefined;
  readonly stats: ConsoleHostStats;
  /** Opens the host and starts delivering events. Rejects with `ConsoleHostError`. */
  start(events: ConsoleHostEvents): Promise<void>;
  /** Takes guest output (the host may keep the array). Returns false when the caller should wait for `drain`. */
  write(bytes: Uint8Array): boolean;
  pause(): void;
  resume(): void;
  close(): Promise<void>;
}

function newStats(): ConsoleHostStats {
  return { droppedBytes: 0, rejectedPeers: 0 };
}

const noEvents: ConsoleHostEvents = {
  data() {},
  drain() {},
  connection() {},
  resize() {},
  closed() {},
};

/** Discards output and never has input: a port nobody listens to. */
export class NullConsoleHost implements ConsoleHost {
  readonly kind = 'null';
  readonly address = 'null';
  readonly connected = true;
  readonly size = undefined;
  readonly stats = newStats();

  start(): Promise<void> {
    return Promise.resolve();
  }

  write(bytes: Uint8Array): boolean {
    this.stats.droppedBytes += bytes.length;
    return true;
  }

  pause(): void {}
  resume(): void {}

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** The most a memory host hands the device at once (what a Node stream chunk holds). */
const MEMORY_INPUT_CHUNK = 64 * 1024;

export interface MemoryConsoleHostOptions {
  /** Output bytes held before `write` returns false (a slow host). Default unlimited. */
  capacity?: number;
  size?: ConsoleSize;
  connected?: boolean;
}

/**
 * An in-process host: guest output collects in memory until taken, input is pushed by the
 * owner. It really works (an embedding program can drive a guest console with it) and is what
 * the tests use to model slow, absent and failing hosts.
 */
export class MemoryConsoleHost implements ConsoleHost {
  readonly kind = 'memory';
  readonly address = 'memory';
  readonly stats = newStats();
  size: ConsoleSize | undefined;
  connected: boolean;
  private events: ConsoleHostEvents = noEvents;
  private readonly capacity: number;
  private output: Uint8Array[] = [];
  private outputLength = 0;
  private needsDrain = false;
  private pending: Uint8Array[] = [];
  private pausedValue = false;
  private closedValue = false;
  private started = false;
  private delivering = false;

  constructor(options: MemoryConsoleHostOptions = {}) {
    this.capacity = options.capacity ?? Number.POSITIVE_INFINITY;
    this.size = options.size;
    this.connected = options.connected ?? true;
  }

  start(events: ConsoleHostEvents): Promise<void> {
    this.events = events;
    this.started = true;
    this.resume(); // input offered before the device started waits here until now
    return Promise.resolve();
  }

  write(bytes: Uint8Array): boolean {
    if (this.closedValue) {
      this.stats.droppedBytes += bytes.length;
      return true;
    }
    this.output.push(bytes);
    this.outputLength += bytes.length;
    if (this.outputLength >= this.capacity) {
      this.needsDrain = true;
      return false;
    }
    return true;
  }

  /** Guest output not yet taken. */
  get outputBytes(): number {
    return this.outputLength;
  }

  /** Takes all guest output so far; if a writer waits for room, it is told to go on. */
  takeOutput(): Uint8Array {
    const out = concat(this.output, this.outputLength);
    this.output = [];
    this.outputLength = 0;
    if (this.needsDrain) {
      this.needsDrain = false;
      this.events.drain();
    }
    return out;
  }

  /**
   * Offers input to the guest, in pieces of at most 64 KiB like a stream would (so the device's
   * pause takes effect between them). While paused the rest waits here (returns false) and is
   * delivered on resume.
   */
  input(bytes: Uint8Array): boolean {
    for (let at = 0; at < bytes.length; at += MEMORY_INPUT_CHUNK) {
      this.pending.push(bytes.subarray(at, at + MEMORY_INPUT_CHUNK));
    }
    this.deliver();
    return this.pending.length === 0;
  }

  get paused(): boolean {
    return this.pausedValue;
  }

  /** Input bytes waiting on the host side while the device has paused it. */
  get pendingInput(): number {
    return this.pending.reduce((sum, chunk) => sum + chunk.length, 0);
  }

  pause(): void {
    this.pausedValue = true;
  }

  resume(): void {
    this.pausedValue = false;
    this.deliver();
  }

  private deliver(): void {
    // Re-entrant calls (the device resumes while taking input) leave the loop to the outer one.
    if (!this.started || this.delivering) return;
    this.delivering = true;
    try {
      while (!this.pausedValue && this.pending.length > 0) this.events.data(this.pending.shift()!);
    } finally {
      this.delivering = false;
    }
  }

  setConnected(connected: boolean): void {
    this.connected = connected;
    this.events.connection(connected);
  }

  resize(size: ConsoleSize): void {
    this.size = size;
    this.events.resize(size);
  }

  /** The host disappears with an error, as a dead pty or socket would. */
  fail(cause: unknown): void {
    this.closedValue = true;
    this.connected = false;
    this.events.closed(new ConsoleHostError('host-failed', 'memory host failed', { cause }));
  }

  close(): Promise<void> {
    this.closedValue = true;
    return Promise.resolve();
  }
}

function concat(chunks: readonly Uint8Array[], length: number): Uint8Array {
  const out = new Uint8Array(length);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

export interface SocketConsoleHostOptions {
  /** Bytes the socket buffers before `write` returns false. Default 64 KiB. */
  highWaterMark?: number;
}

/**
 * A listening socket with at most one peer at a time, like a serial cable: while no peer is
 * attached guest output is dropped (and counted) so a guest console never stalls on an empty
 * socket; a second peer is refused while one is attached.
 */
abstract class SocketConsoleHost implements ConsoleHost {
  abstract readonly kind: string;
  readonly size = undefined;
  readonly stats = newStats();
  protected server: net.Server | undefined;
  private peer: net.Socket | undefined;
  private events: ConsoleHostEvents = noEvents;
  private paused = false;
  private waitingForDrain = false;
  protected readonly highWaterMark: number;

  constructor(options: SocketConsoleHostOptions) {
    this.highWaterMark = options.highWaterMark ?? 64 * 1024;
  }

  abstract get address(): string;

  get connected(): boolean {
    return this.peer !== undefined;
  }

  protected abstract listen(server: net.Server): Promise<void>;

  async start(events: ConsoleHostEvents): Promise<void> {
    this.events = events;
    const server = net.createServer({ highWaterMark: this.highWaterMark, pauseOnConnect: true }, (socket) =>
      this.accept(socket),
    );
    this.server = server;
    try {
      await this.listen(server);
    } catch (error) {
      this.server = undefined;
      throw new ConsoleHostError('host-open-failed', `cannot listen on ${this.address}`, { cause: error });
    }
    server.on('error', (error) => {
      this.events.closed(new ConsoleHostError('host-failed', `${this.address} failed`, { cause: error }));
    });
  }

  private accept(socket: net.Socket): void {
    if (this.peer) {
      this.stats.rejectedPeers++;
      socket.destroy();
      return;
    }
    this.peer = socket;
    socket.on('data', (chunk) =>
      this.events.data(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length)),
    );
    socket.on('drain', () => this.drained());
    socket.on('error', () => {}); // 'close' follows and reports the loss
    socket.on('close', () => {
      if (this.peer !== socket) return;
      this.peer = undefined;
      this.events.connection(false);
      this.drained(); // whatever waited for this peer will never be read: do not hold the guest
    });
    if (!this.paused) socket.resume();
    this.events.connection(true);
  }

  private drained(): void {
    if (!this.waitingForDrain) return;
    this.waitingForDrain = false;
    this.events.drain();
  }

  write(bytes: Uint8Array): boolean {
    const peer = this.peer;
    if (!peer) {
      this.stats.droppedBytes += bytes.length;
      return true;
    }
    if (peer.write(bytes)) return true;
    this.waitingForDrain = true;
    return false;
  }

  pause(): void {
    this.paused = true;
    this.peer?.pause();
  }

  resume(): void {
    this.paused = false;
    this.peer?.resume();
  }

  async close(): Promise<void> {
    this.peer?.destroy();
    this.peer = undefined;
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

export interface UnixSocketConsoleHostOptions extends SocketConsoleHostOptions {
  path: string;
}

/** A unix socket server at `path` (a stale socket file there is replaced). */
export class UnixSocketConsoleHost extends SocketConsoleHost {
  readonly kind = 'unix';
  readonly path: string;

  constructor(options: UnixSocketConsoleHostOptions) {
    super(options);
    this.path = options.path;
  }

  get address(): string {
    return this.path;
  }

  protected async listen(server: net.Server): Promise<void> {
    await removeStaleSocket(this.path);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.path, () => {
        server.off('error', reject);
        resolve();
      });
    });
  }

  override async close(): Promise<void> {
    const listening = this.server !== undefined;
    await super.close();
    if (listening) await removeStaleSocket(this.path);
  }
}

/** Removes a socket left by an earlier run; refuses to remove anything that is not a socket. */
async function removeStaleSocket(path: string): Promise<void> {
  const stats = await lstat(path).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw error;
  });
  if (!stats) return;
  if (!stats.isSocket()) throw new Error(`${path} exists and is not a socket`);
  await rm(path, { force: true });
}

export interface TcpConsoleHostOptions extends SocketConsoleHostOptions {
  /** Loopback only: `127.0.0.1` or `::1`. */
  host?: '127.0.0.1' | '::1';
  /** 0 picks a free port (read it back from `port`). */
  port: number;
}

/** A TCP listener on the loopback interface. */
export class TcpConsoleHost extends SocketConsoleHost {
  readonly kind = 'tcp';
  readonly host: '127.0.0.1' | '::1';
  private requestedPort: number;

  constructor(options: TcpConsoleHostOptions) {
    super(options);
    this.host = options.host ?? '127.0.0.1';
    this.requestedPort = options.port;
  }

  /** The port listened on (the chosen one once started with port 0). */
  get port(): number {
    const address = this.server?.address();
    return typeof address === 'object' && address !== null ? address.port : this.requestedPort;
  }

  get address(): string {
    return this.host === '::1' ? `[::1]:${this.port}` : `${this.host}:${this.port}`;
  }

  protected async listen(server: net.Server): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: this.host, port: this.requestedPort, exclusive: true }, () => {
        server.off('error', reject);
        resolve();
      });
    });
  }
}

export interface FileConsoleHostOptions {
  path: string;
  /** Bytes the file stream buffers before `write` returns false. Default 64 KiB. */
  highWaterMark?: number;
}

/** An append-only log file: output only, never input. */
export class FileConsoleHost implements ConsoleHost {
  readonly kind = 'file';
  readonly size = undefined;
  readonly connected = true;
  readonly stats = newStats();
  readonly path: string;
  private stream: WriteStream | undefined;
  private events: ConsoleHostEvents = noEvents;
  private failed = false;
  private readonly highWaterMark: number;

  constructor(options: FileConsoleHostOptions) {
    this.path = options.path;
    this.highWaterMark = options.highWaterMark ?? 64 * 1024;
  }

  get address(): string {
    return this.path;
  }

  async start(events: ConsoleHostEvents): Promise<void> {
    this.events = events;
    const stream = createWriteStream(this.path, { flags: 'a', highWaterMark: this.highWaterMark });
    await new Promise<void>((resolve, reject) => {
      stream.once('open', () => {
        stream.off('error', reject);
        resolve();
      });
      stream.once('error', reject);
    }).catch((error: unknown) => {
      throw new ConsoleHostError('host-open-failed', `cannot open ${this.path}`, { cause: error });
    });
    this.stream = stream;
    stream.on('drain', () => this.events.drain());
    stream.on('error', (error) => {
      this.failed = true;
      this.events.closed(
        new ConsoleHostError('host-failed', `writing ${this.path} failed`, { cause: error }),
      );
    });
  }

  write(bytes: Uint8Array): boolean {
    if (!this.stream || this.failed) {
      this.stats.droppedBytes += bytes.length;
      return true;
    }
    return this.stream.write(bytes);
  }

  pause(): void {}
  resume(): void {}

  async close(): Promise<void> {
    const stream = this.stream;
    this.stream = undefined;
    if (stream && !this.failed) await new Promise<void>((resolve) => stream.end(() => resolve()));
  }
}

export interface StdioConsoleHostOptions {
  /** Put a terminal on stdin in raw mode, so keys reach the guest unchanged. Default true. */
  raw?: boolean;
  input?: NodeJS.ReadStream;
  output?: NodeJS.WriteStream;
}

/** The process's own stdin and stdout; follows the terminal's size when stdout is a TTY. */
export class StdioConsoleHost implements ConsoleHost {
  readonly kind = 'stdio';
  readonly address = 'stdio';
  readonly connected = true;
  readonly stats = newStats();
  private readonly input: NodeJS.ReadStream;
  private readonly output: NodeJS.WriteStream;
  private readonly raw: boolean;
  private events: ConsoleHostEvents = noEvents;
  private readonly onData = (chunk: Buffer | string) => {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    this.events.data(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length));
  };
  private readonly onDrain = () => this.events.drain();
  /** stdout went away (EPIPE when the reader exits): the port loses its host, the process lives on. */
  private readonly onError = (error: Error) => {
    this.failed = true;
    this.events.closed(new ConsoleHostError('host-failed', 'stdio failed', { cause: error }));
  };
  private failed = false;
  private readonly onResize = () => {
    const size = this.size;
    if (size) this.events.resize(size);
  };

  constructor(options: StdioConsoleHostOptions = {}) {
    this.input = options.input ?? process.stdin;
    this.output = options.output ?? process.stdout;
    this.raw = options.raw ?? true;
  }

  get size(): ConsoleSize | undefined {
    if (!this.output.isTTY) return undefined;
    return { cols: this.output.columns, rows: this.output.rows };
  }

  start(events: ConsoleHostEvents): Promise<void> {
    this.events = events;
    if (this.raw && this.input.isTTY) this.input.setRawMode(true);
    this.input.on('data', this.onData);
    this.input.on('error', this.onError);
    this.output.on('error', this.onError);
    this.output.on('drain', this.onDrain);
    this.output.on('resize', this.onResize);
    this.input.resume();
    return Promise.resolve();
  }

  write(bytes: Uint8Array): boolean {
    if (this.failed) {
      this.stats.droppedBytes += bytes.length;
      return true;
    }
    return this.output.write(bytes);
  }

  pause(): void {
    this.input.pause();
  }

  resume(): void {
    this.input.resume();
  }

  close(): Promise<void> {
    this.input.off('data', this.onData);
    this.input.off('error', this.onError);
    this.output.off('error', this.onError);
    this.output.off('drain', this.onDrain);
    this.output.off('resize', this.onResize);
    if (this.raw && this.input.isTTY) this.input.setRawMode(false);
    this.input.pause();
    return Promise.resolve();
  }
}

/**
 * Fans guest output out to a primary host and a log. Input, connection and size come from the
 * primary; flow control waits for both (the log is bounded too), and a log that fails stops
 * logging without taking the port down.
 */
export class TeeConsoleHost implements ConsoleHost {
  readonly kind = 'tee';
  private events: ConsoleHostEvents = noEvents;
  private primaryWaiting = false;
  private logWaiting = false;
  private logFailed = false;

  constructor(
    readonly primary: ConsoleHost,
    readonly log: ConsoleHost,
  ) {}

  get address(): string {
    return `${this.primary.address} + log ${this.log.address}`;
  }

  get connected(): boolean {
    return this.primary.connected;
  }

  get size(): ConsoleSize | undefined {
    return this.primary.size;
  }

  get stats(): ConsoleHostStats {
    return this.primary.stats;
  }

  async start(events: ConsoleHostEvents): Promise<void> {
    this.events = events;
    await this.log.start({
      ...noEvents,
      drain: () => {
        this.logWaiting = false;
        this.maybeDrain();
      },
      closed: () => {
        this.logFailed = true;
        this.logWaiting = false;
        this.maybeDrain();
      },
    });
    // Forwarded one by one: `events` may be a class instance, whose methods do not spread.
    await this.primary.start({
      data: (bytes) => events.data(bytes),
      connection: (connected) => events.connection(connected),
      resize: (size) => events.resize(size),
      closed: (error) => events.closed(error),
      drain: () => {
        this.primaryWaiting = false;
        this.maybeDrain();
      },
    });
  }

  private maybeDrain(): void {
    if (!this.primaryWaiting && !this.logWaiting) this.events.drain();
  }

  write(bytes: Uint8Array): boolean {
    if (!this.logFailed && !this.log.write(bytes)) this.logWaiting = true;
    if (!this.primary.write(bytes)) this.primaryWaiting = true;
    return !this.primaryWaiting && !this.logWaiting;
  }

  pause(): void {
    this.primary.pause();
  }

  resume(): void {
    this.primary.resume();
  }

  async close(): Promise<void> {
    await Promise.all([this.primary.close(), this.log.close()]);
  }
}
