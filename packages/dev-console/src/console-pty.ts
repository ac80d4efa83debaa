import { closeSync, constants, openSync } from 'node:fs';
import net from 'node:net';
import tty from 'node:tty';
import {
  type ConsoleHost,
  ConsoleHostError,
  type ConsoleHostEvents,
  type ConsoleHostStats,
} from './console-host.js';
import type { ConsoleSize } from './console-wire.js';

// Linux x86-64 / arm64 values (asm-generic): open(2) flags, termios and ioctl numbers.
const O_RDWR = 0o2;
const O_NOCTTY = 0o400;
const O_CLOEXEC = 0o2000000;
const TCSANOW = 0;
const TIOCGWINSZ = 0x5413;
const TIOCSWINSZ = 0x5414;
/** sizeof(struct termios) on Linux is 60 (glibc); a larger buffer is harmless. */
const TERMIOS_BUFFER = 64;
// struct winsize: u16 ws_row, u16 ws_col, u16 ws_xpixel, u16 ws_ypixel.
const WINSIZE_ROW = 0;
const WINSIZE_COL = 2;
const WINSIZE_SIZE = 8;

interface Libc {
  posixOpenpt(flags: number): number;
  grantpt(fd: number): number;
  unlockpt(fd: number): number;
  ptsnameR(fd: number, buffer: Buffer, length: number): number;
  tcgetattr(fd: number, termios: Buffer): number;
  tcsetattr(fd: number, action: number, termios: Buffer): number;
  cfmakeraw(termios: Buffer): void;
  ioctl(fd: number, request: number, argument: Buffer): number;
  errno(): number;
}

let libcPromise: Promise<Libc> | undefined;

/** Loads koffi and binds the libc calls once, on first use (importing this package does not load koffi). */
function loadLibc(): Promise<Libc> {
  libcPromise ??= import('koffi').then(({ default: koffi }) => {
    const libc = koffi.load('libc.so.6');
    return {
      posixOpenpt: libc.func('int posix_openpt(int flags)'),
      grantpt: libc.func('int grantpt(int fd)'),
      unlockpt: libc.func('int unlockpt(int fd)'),
      ptsnameR: libc.func('int ptsname_r(int fd, _Out_ uint8_t *buf, size_t buflen)'),
      tcgetattr: libc.func('int tcgetattr(int fd, _Out_ uint8_t *termios)'),
      tcsetattr: libc.func('int tcsetattr(int fd, int action, const uint8_t *termios)'),
      cfmakeraw: libc.func('void cfmakeraw(_Inout_ uint8_t *termios)'),
      ioctl: libc.func('int ioctl(int fd, unsigned long request, _Inout_ uint8_t *argument)'),
      errno: () => koffi.errno(),
    } as Libc;
  });
  return libcPromise;
}

interface PipeWrap {
  Pipe: new (type: number) => { open(fd: number): number };
  constants: { SOCKET: number };
}

/**
 * A stream over the pty master that is non-blocking both ways. libuv's TTY handle (what
 * `tty.ReadStream` uses) falls back to blocking writes on a pty master (it can only reopen a
 * slave), which would block the event loop when nobody reads the terminal; a pipe handle over
 * the same fd is epoll-driven in both directions, as node-pty does.
 */
function masterStream(fd: number, highWaterMark: number): net.Socket {
  let pipeWrap: PipeWrap | undefined;
  try {
    pipeWrap = (process as unknown as { binding(name: string): PipeWrap }).binding('pipe_wrap');
  } catch {
    pipeWrap = undefined;
  }
  if (pipeWrap) {
    const handle = new pipeWrap.Pipe(pipeWrap.constants.SOCKET);
    const status = handle.open(fd);
    if (status === 0) {
      return new net.Socket({
        handle,
        readable: true,
        writable: true,
        writableHighWaterMark: highWaterMark,
      } as never);
    }
  }
  return new tty.ReadStream(fd) as unknown as net.Socket;
}

export interface PtyConsoleHostOptions {
  /** Raw mode (no echo, no line editing, 8-bit clean), as QEMU's pty chardev sets. Default true. */
  raw?: boolean;
  /** Initial window size written to the terminal. */
  size?: ConsoleSize;
  /**
   * Keep a slave fd open ourselves so the master never sees a hangup when a terminal
   * program detaches; output then waits (flow control) while nobody reads. Default true.
   */
  holdSlave?: boolean;
  /** Bytes buffered toward the terminal before `write` returns false. Default 64 KiB. */
  highWaterMark?: number;
  /**
   * How often to look at the window size (TIOCGWINSZ) for changes made on the slave side, in
   * milliseconds; 0 turns it off. The kernel tells only the slave's process group (SIGWINCH),
   * so reading it is the only way to follow a terminal program's resize. Default 1000.
   */
  sizePollMs?: number;
}

/**
 * A new pseudo-terminal (posix_openpt, grantpt, unlockpt, ptsname through koffi): the guest
 * port is the master, users attach to `path` (`/dev/pts/N`) with screen, minicom or a program.
 */
export class PtyConsoleHost implements ConsoleHost {
  readonly kind = 'pty';
  readonly connected = true;
  readonly stats: ConsoleHostStats = { droppedBytes: 0, rejectedPeers: 0 };
  /** The slave's path, known once started. */
  path = '';
  private libc: Libc | undefined;
  private master = -1;
  private slave = -1;
  private stream: net.Socket | undefined;
  private events: ConsoleHostEvents | undefined;
  private waitingForDrain = false;
  private closed = false;
  private sizeTimer: ReturnType<typeof setInterval> | undefined;
  private lastSize: ConsoleSize | undefined;
  private readonly options: PtyConsoleHostOptions;

  constructor(options: PtyConsoleHostOptions = {}) {
    this.options = options;
  }

  get address(): string {
    return this.path || 'pty';
  }

  /** The terminal's window size as the slave side last set it (TIOCGWINSZ). */
  get size(): ConsoleSize | undefined {
    if (!this.libc || this.master < 0) return this.options.size;
    const winsize = Buffer.alloc(WINSIZE_SIZE);
    if (this.libc.ioctl(this.master, TIOCGWINSZ, winsize) !== 0) return undefined;
    const cols = winsize.readUInt16LE(WINSIZE_COL);
    const rows = winsize.readUInt16LE(WINSIZE_ROW);
    return cols > 0 && rows > 0 ? { cols, rows } : undefined;
  }

  async start(events: ConsoleHostEvents): Promise<void> {
    this.events = events;
    const libc = await loadLibc().catch((error: unknown) => {
      throw new ConsoleHostError('host-open-failed', 'koffi is not usable on this platform', {
        cause: error,
      });
    });
    this.libc = libc;
    const fail = (call: string): never => {
      const errno = libc.errno();
      if (this.master >= 0) closeSync(this.master);
      this.master = -1;
      throw new ConsoleHostError('host-open-failed', `${call} failed (errno ${errno})`);
    };
    this.master = libc.posixOpenpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (this.master < 0) fail('posix_openpt');
    if (libc.grantpt(this.master) !== 0) fail('grantpt');
    if (libc.unlockpt(this.master) !== 0) fail('unlockpt');
    const name = Buffer.alloc(128);
    if (libc.ptsnameR(this.master, name, name.length) !== 0) fail('ptsname_r');
    this.path = name.toString('utf8', 0, name.indexOf(0));
    if (this.options.raw ?? true) {
      // The master's termios calls act on the slave side (Linux tty_mode_ioctl uses the link).
      const termios = Buffer.alloc(TERMIOS_BUFFER);
      if (libc.tcgetattr(this.master, termios) !== 0) fail('tcgetattr');
      libc.cfmakeraw(termios);
      if (libc.tcsetattr(this.master, TCSANOW, termios) !== 0) fail('tcsetattr');
    }
    if (this.options.size) this.setSize(this.options.size);
    if (this.options.holdSlave ?? true) {
      this.slave = openSync(this.path, constants.O_RDWR | constants.O_NOCTTY);
    }
    const stream = masterStream(this.master, this.options.highWaterMark ?? 64 * 1024);
    this.stream = stream;
    stream.on('data', (chunk: Buffer) =>
      events.data(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length)),
    );
    stream.on('drain', () => {
      if (!this.waitingForDrain) return;
      this.waitingForDrain = false;
      events.drain();
    });
    stream.on('error', (error) => this.lost(error));
    stream.on('close', () => this.lost(undefined));
    const pollMs = this.options.sizePollMs ?? 1000;
    if (pollMs > 0) {
      this.lastSize = this.size;
      this.sizeTimer = setInterval(() => this.checkSize(), pollMs);
      this.sizeTimer.unref();
    }
  }

  private checkSize(): void {
    const size = this.size;
    if (!size || (size.cols === this.lastSize?.cols && size.rows === this.lastSize.rows)) return;
    this.lastSize = size;
    this.events?.resize(size);
  }

  /** Sets the terminal's window size (TIOCSWINSZ); the program on the slave gets SIGWINCH. */
  setSize(size: ConsoleSize): void {
    if (!this.libc || this.master < 0) return;
    const winsize = Buffer.alloc(WINSIZE_SIZE);
    winsize.writeUInt16LE(size.rows, WINSIZE_ROW);
    winsize.writeUInt16LE(size.cols, WINSIZE_COL);
    this.libc.ioctl(this.master, TIOCSWINSZ, winsize);
  }

  private lost(error: unknown): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sizeTimer);
    this.stream?.destroy(); // the handle owns the master fd and closes it
    this.stream = undefined;
    this.master = -1;
    this.events?.closed(new ConsoleHostError('host-failed', `pty ${this.path} closed`, { cause: error }));
  }

  write(bytes: Uint8Array): boolean {
    const stream = this.stream;
    if (!stream) {
      this.stats.droppedBytes += bytes.length;
      return true;
    }
    if (stream.write(bytes)) return true;
    this.waitingForDrain = true;
    return false;
  }

  pause(): void {
    this.stream?.pause();
  }

  resume(): void {
    this.stream?.resume();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.sizeTimer);
    const stream = this.stream;
    this.stream = undefined;
    if (stream) {
      // The stream's handle owns the master fd and closes it.
      await new Promise<void>((resolve) => {
        stream.once('close', () => resolve());
        stream.destroy();
      });
    } else if (this.master >= 0) {
      closeSync(this.master);
    }
    this.master = -1;
    if (this.slave >= 0) closeSync(this.slave);
    this.slave = -1;
  }
}
