// Waits for file descriptors (event channel devices, xenbus, eventfds, sockets) without
// blocking the event loop and without polling on a timer. Two ways, fastest first:
//
// - `watchFdStream`: the fd is handed to libuv as a pipe, so the main loop's own epoll wakes
//   on it and libuv reads it; no thread hop at all. For fds whose bytes are ours to read:
//   /dev/xen/evtchn (4-byte port numbers), /dev/xen/xenbus (xenstore messages), eventfds.
// - `watchReadable`: readiness only, for fds whose bytes belong to someone else (a library's
//   notification pipe, a listening socket). One `epoll_wait` runs at a time on a libuv pool
//   thread for every such fd of the process.
//
// A `poll(fd, timeout)` per fd on a pool thread (what this replaces) costs a pool thread per
// waiter and, with more waiters than libuv's four pool threads, whole timeouts of latency.
import { Socket, type SocketConstructorOpts } from 'node:net';
import {
  EAGAIN,
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  EINTR,
  EPOLL_CLOEXEC,
  EPOLL_CTL_ADD,
  EPOLL_CTL_DEL,
  EPOLL_EVENT_DATA,
  EPOLL_EVENT_EVENTS,
  EPOLL_EVENT_SIZE,
  EPOLLIN,
  F_GETFL,
  F_SETFL,
  libc,
  O_NONBLOCK,
} from './xen-libc.js';

/** A file descriptor being watched; `close` stops watching (it does not close the fd). */
export interface FdWatch {
  readonly fd: number;
  close(): void;
}

const MAX_EVENTS = 64;
const WAKE_TOKEN = 0;

/**
 * The process-wide readiness poller: the handlers of all fds that became ready run together
 * on the main thread (so kicks that arrive together are served in one batch). Epoll data
 * holds a token, never the fd, so an event for an fd closed and reused meanwhile finds no
 * handler. It exists while something is watched: when the last watch closes, the waiting
 * thread is woken through an eventfd and the epoll fd is closed once it has returned.
 */
class Poller {
  private readonly epfd: number;
  private readonly wakeFd: number;
  private readonly handlers = new Map<number, () => void>();
  private readonly events = new Uint8Array(EPOLL_EVENT_SIZE * MAX_EVENTS);
  private readonly eventsView = new DataView(this.events.buffer);
  private readonly scratch = new Uint8Array(8);
  private nextToken = 1;
  private waiting = false;
  private closed = false;
  private readonly idle: (() => void)[] = [];

  constructor() {
    const c = libc();
    this.epfd = c.epollCreate1(EPOLL_CLOEXEC);
    if (this.epfd < 0) throw new Error(`epoll_create1 failed: errno ${c.errno()}`);
    this.wakeFd = c.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (this.wakeFd < 0) {
      c.close(this.epfd);
      throw new Error(`eventfd failed: errno ${c.errno()}`);
    }
    this.control(EPOLL_CTL_ADD, this.wakeFd, WAKE_TOKEN);
  }

  get size(): number {
    return this.handlers.size;
  }

  private control(op: number, fd: number, token: number): number {
    const event = new Uint8Array(EPOLL_EVENT_SIZE);
    const view = new DataView(event.buffer);
    view.setUint32(EPOLL_EVENT_EVENTS, EPOLLIN, true);
    view.setBigUint64(EPOLL_EVENT_DATA, BigInt(token), true);
    return libc().epollCtl(this.epfd, op, fd, op === EPOLL_CTL_DEL ? null : event);
  }

  watch(fd: number, onReadable: () => void): FdWatch {
    if (this.closed) throw new Error('poller closed');
    const token = this.nextToken++;
    if (this.nextToken > 0xffff_fff0) this.nextToken = 1;
    if (this.control(EPOLL_CTL_ADD, fd, token) !== 0) {
      throw new Error(`epoll_ctl(ADD, ${fd}) failed: errno ${libc().errno()}`);
    }
    this.handlers.set(token, onReadable);
    this.arm();
    let open = true;
    return {
      fd,
      close: () => {
        if (!open) return;
        open = false;
        this.handlers.delete(token);
        this.control(EPOLL_CTL_DEL, fd, token);
        if (this.handlers.size === 0) this.wake();
      },
    };
  }

  private wake(): void {
    const one = new Uint8Array(8);
    one[0] = 1;
    libc().write(this.wakeFd, one, 8);
  }

  private arm(): void {
    if (this.waiting || this.closed) return;
    this.waiting = true;
    libc().epollWaitAsync(this.epfd, this.events, MAX_EVENTS, -1, (error, count) => {
      this.waiting = false;
      if (error) {
        // koffi could not run the call: nothing can be waited for any more.
        this.shutdown();
        return;
      }
      if (count < 0) {
        const errno = libc().errno();
        if (errno !== EINTR && errno !== EAGAIN) {
          this.shutdown();
          return;
        }
      }
      for (let i = 0; i < count; i++) {
        const token = Number(this.eventsView.getBigUint64(i * EPOLL_EVENT_SIZE + EPOLL_EVENT_DATA, true));
        if (token === WAKE_TOKEN) {
          libc().read(this.wakeFd, this.scratch, 8);
          continue;
        }
        const handler = this.handlers.get(token);
        if (handler) {
          try {
            handler();
          } catch {
            // A handler's failure is its own (they report through their owners); the others still run.
          }
        }
      }
      if (this.handlers.size > 0) this.arm();
      else this.shutdown();
    });
  }

  private shutdown(): void {
    if (this.closed) return;
    this.closed = true;
    if (current === this) current = undefined;
    const c = libc();
    c.close(this.wakeFd);
    c.close(this.epfd);
    for (const resolve of this.idle.splice(0)) resolve();
  }

  /** Resolves once the poller has released its thread and fds (immediately when it has). */
  whenClosed(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }
}

let current: Poller | undefined;

/**
 * Watches `fd` for readability on the process-wide poller, without reading it. Level
 * triggered: `onReadable` runs again after each wake-up while the fd stays readable.
 */
export function watchReadable(fd: number, onReadable: () => void): FdWatch {
  if (current === undefined) current = new Poller();
  return current.watch(fd, onReadable);
}

/**
 * Resolves when the process-wide poller has nothing left to watch and has closed its own
 * fds; resolves at once when there is none or it still watches something.
 */
export function pollerSettled(): Promise<void> {
  if (current === undefined || current.size > 0) return Promise.resolve();
  return current.whenClosed();
}

/** How a stream watch waits: libuv's own loop, or the pool-thread poller. */
export type FdWaitPath = 'loop' | 'poller';

/** A stream watch owns its fd: `close` stops reading and closes it. */
export interface FdStreamWatch {
  readonly via: FdWaitPath;
  close(): void;
}

export interface FdStreamOptions {
  /** `poller` forces the pool-thread path (tests use it; Node versions without pipe_wrap take it). */
  readonly via?: 'auto' | FdWaitPath;
  /** Bytes read at once on the poller path (default 4096: a page, what evtchn reads at most). */
  readonly readSize?: number;
  /** A read failed: the watch stops. */
  readonly onError?: (error: Error) => void;
  /** The fd reported end of file: the watch stops. */
  readonly onEnd?: () => void;
}

interface PipeBinding {
  Pipe: new (type: number) => { open(fd: number): number };
  constants: { SOCKET: number };
}

let pipeBinding: PipeBinding | null | undefined;

/** libuv's pipe handle, when this Node still exposes it (`process.binding` is deprecated). */
function loadPipeBinding(): PipeBinding | null {
  if (pipeBinding !== undefined) return pipeBinding;
  try {
    const binding = (process as unknown as { binding(name: string): unknown }).binding(
      'pipe_wrap',
    ) as PipeBinding;
    pipeBinding = typeof binding?.Pipe === 'function' ? binding : null;
  } catch {
    pipeBinding = null;
  }
  return pipeBinding;
}

/**
 * Reads `fd` as it becomes readable and hands each chunk to `onData`, taking ownership of
 * the fd (it is made non-blocking and closed by `close`). A chunk is what one read returned:
 * a device that returns whole records per read (evtchn: whole ports) keeps them whole.
 */
export function watchFdStream(
  fd: number,
  onData: (bytes: Uint8Array) => void,
  options: FdStreamOptions = {},
): FdStreamWatch {
  const binding = options.via === 'poller' ? null : loadPipeBinding();
  if (binding) {
    const handle = new binding.Pipe(binding.constants.SOCKET);
    // uv_pipe_open makes the fd non-blocking (FIONBIO, which every Linux file accepts).
    if (handle.open(fd) === 0) {
      const socket = new Socket({
        handle,
        readable: true,
        writable: false,
      } as unknown as SocketConstructorOpts);
      let open = true;
      socket.on('data', (chunk: Buffer) => {
        if (open) onData(chunk);
      });
      socket.on('error', (error) => {
        if (open) options.onError?.(error);
      });
      socket.on('end', () => {
        if (open) options.onEnd?.();
      });
      return {
        via: 'loop',
        close() {
          if (!open) return;
          open = false;
          socket.removeAllListeners('data');
          // Destroying the socket closes the fd (libuv owns it now).
          socket.destroy();
        },
      };
    }
  }
  if (options.via === 'loop') throw new Error('this Node offers no libuv pipe handle (pipe_wrap)');
  const c = libc();
  const flags = c.fcntl(fd, F_GETFL, 0);
  if (flags < 0 || c.fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    throw new Error(`fcntl(${fd}, O_NONBLOCK) failed: errno ${c.errno()}`);
  }
  const buffer = new Uint8Array(options.readSize ?? 4096);
  let open = true;
  const stop = () => {
    if (!open) return;
    open = false;
    watch.close();
    c.close(fd);
  };
  const watch = watchReadable(fd, () => {
    // One read per wake-up: the poller is level triggered and comes back for the rest.
    const count = c.read(fd, buffer, buffer.length);
    if (count > 0) {
      onData(buffer.slice(0, count));
      return;
    }
    if (count === 0) {
      stop();
      options.onEnd?.();
      return;
    }
    const errno = c.errno();
    if (errno === EAGAIN || errno === EINTR) return;
    stop();
    options.onError?.(new Error(`read(${fd}) failed: errno ${errno}`));
  });
  return { via: 'poller', close: stop };
}

/**
 * Watches an eventfd (a kick) and takes ownership of it: each wake-up reads the 8-byte
 * counter (all signals since the last one) and calls `onSignal` once.
 */
export function watchEventFd(
  fd: number,
  onSignal: () => void,
  onError?: (error: Error) => void,
  via: 'auto' | FdWaitPath = 'auto',
): FdStreamWatch {
  return watchFdStream(fd, () => onSignal(), {
    via,
    readSize: 8,
    ...(onError ? { onError } : {}),
  });
}
