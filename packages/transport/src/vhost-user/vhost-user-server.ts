import { EventEmitter } from 'node:events';
import type { VirtioDevice } from '../virtio-device.js';
import {
  checkPollUs,
  VhostUserBackend,
  type VhostUserLogger,
  type VhostUserMetrics,
} from './vhost-user-backend.js';
import { VhostUserError } from './vhost-user-errors.js';
import { closeFd, libc, SUN_PATH_MAX } from './vhost-user-libc.js';
import type { XenRegionMapper } from './vhost-user-memory.js';
import { pollerSettled, type Watch, watchReadable } from './vhost-user-poller.js';
import { acceptUnix, type ChannelEnd, connectUnix, listenUnix, MessageChannel } from './vhost-user-socket.js';

export interface ServeVhostUserOptions {
  /** Unix socket path to listen on (QEMU connects to it: `-chardev socket,path=...`). */
  socketPath: string;
  /** Makes the device for a connection; called once per frontend connection. */
  device: () => VirtioDevice;
  /** Serve one frontend, then close (rust-vmm backends' default). Default false: serve the next. */
  once?: boolean;
  /**
   * Connect to a frontend that listens (`-chardev socket,...,server=on`) instead of
   * listening: the backend retries until the socket accepts, and connects again after a
   * disconnect. One of two ways to restart a backend under QEMU 7.2's vhost-user-rng: its
   * realize needs the connection at once, so with `reconnect=` (QEMU dials) the device can
   * only be plugged once the chardev is connected (QMP `device_add` into a paused QEMU).
   */
  connect?: boolean;
  /** Delay between connection attempts in `connect` mode. Default 100 ms. */
  retryMs?: number;
  /** Maps regions a Xen frontend flags (XEN_MMAP); without it they are refused. */
  xenMapper?: XenRegionMapper;
  /** Answer to GET_MAX_MEM_SLOTS. Default 32. */
  maxMemSlots?: number;
  /** Offer CONFIGURE_MEM_SLOTS (see `VhostUserBackendOptions.offerMemorySlots`). Default false. */
  offerMemorySlots?: boolean;
  /** Offer XEN_MMAP (see `VhostUserBackendOptions.offerXenMmap`). Default: when `xenMapper` is set. */
  offerXenMmap?: boolean;
  /** QEMU vhost-user-gpu's display socket (see `VhostUserBackendOptions.gpuSocket`). */
  gpuSocket?: (fd: number, device: VirtioDevice) => void;
  /** Adaptive polling after work, in microseconds (see `VhostUserBackendOptions.pollUs`). Default 0: off. */
  pollUs?: number;
  log?: VhostUserLogger;
}

export interface VhostUserServerEvents {
  connect: [];
  disconnect: [end: ChannelEnd];
  close: [];
}

/** A listening vhost-user backend. Emits `connect`, `disconnect` (with why) and `close`. */
export interface VhostUserServer extends EventEmitter<VhostUserServerEvents> {
  readonly socketPath: string;
  /** The backend of the current connection, if any. */
  readonly backend: VhostUserBackend | undefined;
  /** Connections served so far. */
  readonly connections: number;
  /** Counters summed over every connection. */
  metrics(): VhostUserMetrics;
  /** Stops listening, drops the current frontend (its device is reset) and removes the socket. */
  close(): Promise<void>;
}

class Server extends EventEmitter<VhostUserServerEvents> implements VhostUserServer {
  backend: VhostUserBackend | undefined;
  connections = 0;
  private listenFd = -1;
  private listenWatch: Watch | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private channel: MessageChannel | undefined;
  private closed = false;
  private readonly past: VhostUserMetrics[] = [];

  constructor(private readonly options: ServeVhostUserOptions) {
    super();
    if (options.connect) {
      this.dial();
    } else {
      this.listenFd = listenUnix(options.socketPath);
      this.listen();
    }
  }

  /** Connect mode: one attempt now, the next after `retryMs` when the frontend is not there. */
  private dial(): void {
    this.retryTimer = undefined;
    if (this.closed || this.channel) return;
    let fd: number;
    try {
      fd = connectUnix(this.options.socketPath);
    } catch {
      this.retryTimer = setTimeout(() => this.dial(), this.options.retryMs ?? 100);
      return;
    }
    this.serve(fd);
  }

  get socketPath(): string {
    return this.options.socketPath;
  }

  private listen(): void {
    if (this.closed || this.listenWatch) return;
    this.listenWatch = watchReadable(this.listenFd, () => this.accept());
  }

  private accept(): void {
    if (this.channel || this.closed) return;
    const fd = acceptUnix(this.listenFd);
    if (fd < 0) return;
    // One frontend at a time: the next one waits in the listen backlog until this one ends.
    this.listenWatch?.close();
    this.listenWatch = undefined;
    this.serve(fd);
  }

  private next(): void {
    if (this.options.connect) this.retryTimer = setTimeout(() => this.dial(), this.options.retryMs ?? 100);
    else this.listen();
  }

  private serve(fd: number): void {
    let backend: VhostUserBackend;
    try {
      backend = new VhostUserBackend({
        device: this.options.device(),
        send: (request, flags, payload, fds) => this.channel?.send(request, flags, payload, fds),
        xenMapper: this.options.xenMapper,
        maxMemSlots: this.options.maxMemSlots,
        offerMemorySlots: this.options.offerMemorySlots,
        offerXenMmap: this.options.offerXenMmap,
        gpuSocket: this.options.gpuSocket,
        ...(this.options.pollUs !== undefined ? { pollUs: this.options.pollUs } : {}),
        log: this.options.log,
      });
    } catch (error) {
      closeFd(fd);
      this.options.log?.error(`cannot create the device: ${(error as Error).message}`);
      this.next();
      return;
    }
    this.backend = backend;
    this.connections++;
    this.channel = new MessageChannel(
      fd,
      (message) => backend.handle(message),
      (end) => this.ended(backend, end),
    );
    this.options.log?.info(`frontend connected on ${this.options.socketPath}`);
    this.emit('connect');
  }

  private ended(backend: VhostUserBackend, end: ChannelEnd): void {
    backend.close();
    this.past.push({ ...backend.metrics });
    this.channel = undefined;
    this.backend = undefined;
    if (end.reason === 'error') this.options.log?.warn(`frontend dropped: ${end.error.message}`);
    else this.options.log?.info('frontend disconnected');
    this.emit('disconnect', end);
    if (this.options.once) void this.close();
    else this.next();
  }

  metrics(): VhostUserMetrics {
    const all = [...this.past, ...(this.backend ? [this.backend.metrics] : [])];
    const sum = {} as VhostUserMetrics;
    for (const metrics of all) {
      for (const [key, value] of Object.entries(metrics) as [keyof VhostUserMetrics, number][]) {
        sum[key] = (sum[key] ?? 0) + value;
      }
    }
    return sum;
  }

  async close(): Promise<void> {
    if (this.closed) return pollerSettled();
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.listenWatch?.close();
    this.listenWatch = undefined;
    if (this.listenFd >= 0) {
      closeFd(this.listenFd);
      this.listenFd = -1;
      libc().unlink(this.options.socketPath);
    }
    const channel = this.channel;
    const backend = this.backend;
    this.channel = undefined;
    this.backend = undefined;
    if (channel && backend) {
      channel.close();
      backend.close();
      this.past.push({ ...backend.metrics });
      this.emit('disconnect', { reason: 'eof' });
    }
    this.emit('close');
    await pollerSettled();
  }
}

/**
 * Serves a virtio device to vhost-user frontends (QEMU) on a unix socket. The backend
 * outlives its frontends: after a disconnect the device is reset, every mapping and fd of
 * that connection is released, and the next connection on the same socket is served
 * (unless `once`). Throws `VhostUserError` when the socket cannot be created.
 */
export function serveVhostUser(options: ServeVhostUserOptions): VhostUserServer {
  if (typeof options.socketPath !== 'string' || Buffer.byteLength(options.socketPath) >= SUN_PATH_MAX) {
    throw new VhostUserError(
      'socket-failed',
      `socket path must be a string shorter than ${SUN_PATH_MAX} bytes`,
    );
  }
  if (typeof options.device !== 'function')
    throw new TypeError('device must be a function returning a VirtioDevice');
  checkPollUs(options.pollUs);
  return new Server(options);
}
