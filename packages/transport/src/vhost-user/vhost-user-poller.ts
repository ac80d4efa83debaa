import { Socket, type SocketConstructorOpts } from 'node:net';
import {
  EAGAIN,
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  EINTR,
  EPOLL_CLOEXEC,
  EPOLL_CTL_ADD,
  EPOLL_CTL_DEL,
  EPOLL_EVENT_SIZE,
  EPOLLIN,
  libc,
} from './vhost-user-libc.js';

/** A file descriptor being watched; `close` stops watching (it does not close the fd). */
export interface Watch {
  readonly fd: number;
  close(): void;
}

const MAX_EVENTS = 64;
const WAKE_TOKEN = 0;

/**
 * Waits for readable file descriptors (sockets, eventfds) without blocking the event loop
 * and without polling: one `epoll_wait` runs at a time on a libuv pool thread, for every fd
 * of the process, and the handlers of all fds that became ready run together on the main
 * thread (so kicks that arrive together are served in one batch). Epoll data holds a token,
 * never the fd, so an event for an fd closed and reused meanwhile finds no handler.
 *
 * The poller exists while something is watched: when the last watch closes, the waiting
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
    view.setUint32(0, EPOLLIN, true);
    view.setUint32(4, token, true);
    view.setUint32(8, 0, true);
    return libc().epollCtl(this.epfd, op, fd, op === EPOLL_CTL_DEL ? null : event);
  }

  watch(fd: number, onReadable: () => void): Watch {
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
    libc().epollWait.async(this.epfd, this.events, MAX_EVENTS, -1, (error: unknown, count: number) => {
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
        const token = this.eventsView.getUint32(i * EPOLL_EVENT_SIZE + 4, true);
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

/** Watches `fd` for readability on the process-wide poller. */
export function watchReadable(fd: number, onReadable: () => void): Watch {
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

/** An eventfd being watched; `close` stops watching and closes the fd (the watch owns it). */
export interface EventFdWatch {
  close(): void;
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
 * Watches an eventfd (a kick) and takes ownership of it. The fastest way is to hand the fd
 * to libuv as a pipe: the main loop's own epoll then wakes on the kick, one thread hop
 * less than the pool thread (each hop costs microseconds on every request of a
 * latency-bound device such as virtio-rng). libuv reads the 8-byte counter itself. Where
 * Node no longer offers that, the process-wide poller does it.
 */
export function watchEventFd(
  fd: number,
  onSignal: () => void,
  onError?: (error: Error) => void,
  /** `poller` forces the pool-thread path (tests use it; Node versions without pipe_wrap take it). */
  via: 'auto' | 'poller' = 'auto',
): EventFdWatch {
  const binding = via === 'poller' ? null : loadPipeBinding();
  if (binding) {
    const handle = new binding.Pipe(binding.constants.SOCKET);
    if (handle.open(fd) === 0) {
      const socket = new Socket({
        handle,
        readable: true,
        writable: false,
      } as unknown as SocketConstructorOpts);
      socket.on('data', () => onSignal());
      socket.on('error', (error) => onError?.(error));
      let open = true;
      return {
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
  const scratch = new Uint8Array(8);
  const watch = watchReadable(fd, () => {
    const n = Number(libc().read(fd, scratch, 8));
    if (n === 8) onSignal();
  });
  return {
    close() {
      watch.close();
      libc().close(fd);
    },
  };
}
