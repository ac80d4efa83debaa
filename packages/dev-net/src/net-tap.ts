import koffi from 'koffi';
import { ALL_OFFLOADS, type NetEndpoint, type NetFrame, type NetHost, type SendResult } from './net-host.js';
import { gather } from './net-offload.js';
import {
  decodeNetHeader,
  emptyNetHeader,
  encodeNetHeader,
  HDR_SIZE,
  MAX_GSO_FRAME_SIZE,
} from './net-wire.js';

// <linux/if_tun.h> and <linux/if.h>. ioctl numbers are _IOW('T', nr, int): dir 1 << 30,
// size 4 << 16, type 'T' (0x54) << 8, nr.
const TUNSETIFF = 0x4004_54ca;
const TUNSETOFFLOAD = 0x4004_54d0;
const TUNSETVNETHDRSZ = 0x4004_54d8;
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;
const IFF_VNET_HDR = 0x4000;
const TUN_F_CSUM = 0x01;
const TUN_F_TSO4 = 0x02;
const TUN_F_TSO6 = 0x04;
const TUN_F_UFO = 0x10;
/** struct ifreq: char ifr_name[IFNAMSIZ]; then a union whose first member is short ifr_flags. */
const IFREQ_SIZE = 40;
const IFREQ_FLAGS = 16;
const IFNAMSIZ = 16;
// <fcntl.h>, <poll.h>, <sys/eventfd.h>, <errno.h> on Linux x86-64/arm64.
const O_RDONLY = 0;
const O_RDWR = 0o2;
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
const POLLIN = 0x001;
const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;
/** <sched.h>: setns(2) namespace type of a network namespace. */
const CLONE_NEWNET = 0x4000_0000;
/** Where `ip netns add NAME` binds a namespace (iproute2's NETNS_RUN_DIR). */
const NETNS_RUN_DIR = '/run/netns';
const EAGAIN = 11;
const EINTR = 4;
const POLLFD_SIZE = 8;
/** The poll thread wakes this often even when idle, so a lost wakeup cannot hang a close. */
const POLL_TIMEOUT_MS = 500;
/** Frames read per turn before yielding to the event loop. */
const READ_BATCH = 64;

export type TapErrorCode = 'open-failed' | 'ioctl-failed' | 'not-supported' | 'netns-failed';

const marker = Symbol.for('xvio.dev-net.tap-error');

/** A TAP device could not be set up; `cause` or `errno` says why. */
export class TapError extends Error {
  readonly [marker] = true;
  override readonly name = 'TapError';
  constructor(
    readonly code: TapErrorCode,
    message: string,
    readonly errno?: number,
  ) {
    super(`${code}: ${message}`);
  }
  static isInstance(value: unknown): value is TapError {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[marker] === true;
  }
}

interface Libc {
  open(path: string, flags: number, mode: number): number;
  close(fd: number): number;
  ioctlPointer(fd: number, request: number, argument: Uint8Array): number;
  ioctlValue(fd: number, request: number, argument: number): number;
  read(fd: number, buffer: Uint8Array, count: number): number;
  write(fd: number, buffer: Uint8Array, count: number): number;
  eventfd(initial: number, flags: number): number;
  setns(fd: number, nstype: number): number;
  poll: {
    async(
      fds: Uint8Array,
      count: number,
      timeout: number,
      callback: (error: unknown, result: number) => void,
    ): void;
  };
}

let libc: Libc | undefined;

function loadLibc(): Libc {
  if (libc) return libc;
  const lib = koffi.load('libc.so.6');
  koffi.alias('xvio_ssize_t', 'intptr_t');
  libc = {
    open: lib.func('int open(const char *path, int flags, int mode)'),
    close: lib.func('int close(int fd)'),
    ioctlPointer: lib.func('int ioctl(int fd, unsigned long request, void *argument)'),
    ioctlValue: lib.func('int ioctl(int fd, unsigned long request, unsigned long argument)'),
    read: lib.func('xvio_ssize_t read(int fd, void *buffer, size_t count)'),
    write: lib.func('xvio_ssize_t write(int fd, const void *buffer, size_t count)'),
    eventfd: lib.func('int eventfd(unsigned int initial, int flags)'),
    setns: lib.func('int setns(int fd, int nstype)'),
    poll: lib.func('int poll(void *fds, unsigned long count, int timeout)'),
  } as Libc;
  return libc;
}

export interface TapOptions {
  /** Interface name; the kernel picks `tapN` when absent. */
  ifname?: string;
  /** Path of the clone device. Default /dev/net/tun. */
  clonePath?: string;
  /**
   * Network namespace to create the interface in, by the name `ip netns add` gave it (bound
   * under /run/netns). Default: the process's own. The interface lives there until `close`.
   */
  netns?: string;
}

/** A namespace name as iproute2 accepts it: one path component. */
export function isNetnsName(name: string): boolean {
  return /^[A-Za-z0-9_.-]{1,255}$/.test(name) && name !== '.' && name !== '..';
}

/**
 * Runs `body` with the calling thread inside network namespace `name` and moves it back
 * before returning (setns(2) switches one thread: the event loop's, for a synchronous body
 * in which no other JavaScript runs). A TAP created there stays there, bound to its fd.
 */
function inNetworkNamespace<T>(c: Libc, name: string, body: () => T): T {
  if (!isNetnsName(name)) throw new TapError('netns-failed', `${name} is not a network namespace name`);
  const target = c.open(`${NETNS_RUN_DIR}/${name}`, O_RDONLY | O_CLOEXEC, 0);
  if (target < 0) {
    throw new TapError('netns-failed', `cannot open network namespace ${name}`, koffi.errno());
  }
  const home = c.open('/proc/thread-self/ns/net', O_RDONLY | O_CLOEXEC, 0);
  try {
    if (home < 0) throw new TapError('netns-failed', 'cannot open our own network namespace', koffi.errno());
    if (c.setns(target, CLONE_NEWNET) < 0) {
      throw new TapError('netns-failed', `cannot enter network namespace ${name}`, koffi.errno());
    }
    let result: T | undefined;
    let failure: unknown;
    try {
      result = body();
    } catch (error) {
      failure = error;
    }
    // Staying in the other namespace would move every socket opened after this: fatal.
    if (c.setns(home, CLONE_NEWNET) < 0) {
      throw new Error(`cannot return from network namespace ${name} (errno ${koffi.errno()})`);
    }
    if (failure !== undefined) throw failure;
    return result as T;
  } finally {
    c.close(target);
    if (home >= 0) c.close(home);
  }
}

export interface TapCounters {
  readFrames: number;
  readBytes: number;
  writtenFrames: number;
  writtenBytes: number;
  /** Frames the kernel would not take (its queue full: EAGAIN) or refused. */
  writeErrors: number;
  /** Frames dropped because the guest refused them (filter, too big). */
  readDropped: number;
  readErrors: number;
  lastErrno: number;
}

/**
 * A Linux TAP interface through /dev/net/tun with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR: frames
 * carry a 12-byte virtio_net_hdr both ways, so checksum and segmentation offloads pass
 * through to the kernel (TUNSETOFFLOAD tells it what the guest accepts). The fd is
 * non-blocking; readiness is awaited with poll(2) on a libuv pool thread (koffi async), so the
 * event loop never blocks, and frames are drained on the main thread.
 */
export class TapNetHost implements NetHost {
  readonly kind = 'tap';
  readonly txOffloads = ALL_OFFLOADS;
  readonly ifname: string;
  readonly counters: TapCounters = {
    readFrames: 0,
    readBytes: 0,
    writtenFrames: 0,
    writtenBytes: 0,
    writeErrors: 0,
    readDropped: 0,
    readErrors: 0,
    lastErrno: 0,
  };
  private fd: number;
  private readonly wakeFd: number;
  private readonly libc: Libc;
  private endpoint: NetEndpoint | undefined;
  private readBuffer = new Uint8Array(HDR_SIZE + MAX_GSO_FRAME_SIZE);
  private readonly writeBuffer = new Uint8Array(HDR_SIZE + MAX_GSO_FRAME_SIZE);
  /** A frame read while the guest had no buffers: held (one only) until `rxReady`. */
  private pendingLength = 0;
  private polling = false;
  private closed = false;
  private readonly pollFds = new Uint8Array(2 * POLLFD_SIZE);
  private closeWaiters: (() => void)[] = [];

  constructor(options: TapOptions = {}) {
    this.libc = loadLibc();
    const c = this.libc;
    const open = () => c.open(options.clonePath ?? '/dev/net/tun', O_RDWR | O_NONBLOCK | O_CLOEXEC, 0);
    // The clone device takes the network namespace of the thread that opens it (tun_chr_open),
    // and TUNSETIFF creates the interface there: only the open needs to happen inside.
    const fd = options.netns === undefined ? open() : inNetworkNamespace(c, options.netns, open);
    if (fd < 0)
      throw new TapError('open-failed', `cannot open ${options.clonePath ?? '/dev/net/tun'}`, koffi.errno());
    const request = new Uint8Array(IFREQ_SIZE);
    const name = new TextEncoder().encode(options.ifname ?? '');
    if (name.length >= IFNAMSIZ) {
      c.close(fd);
      throw new TapError('ioctl-failed', `interface name ${options.ifname} is longer than ${IFNAMSIZ - 1}`);
    }
    request.set(name);
    new DataView(request.buffer).setUint16(IFREQ_FLAGS, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, true);
    if (c.ioctlPointer(fd, TUNSETIFF, request) < 0) {
      const errno = koffi.errno();
      c.close(fd);
      throw new TapError('ioctl-failed', `TUNSETIFF ${options.ifname ?? ''} failed (errno ${errno})`, errno);
    }
    const end = request.indexOf(0);
    this.ifname = new TextDecoder().decode(request.subarray(0, end < 0 ? IFNAMSIZ : end));
    const headerSize = new Uint8Array(4);
    new DataView(headerSize.buffer).setInt32(0, HDR_SIZE, true);
    if (c.ioctlPointer(fd, TUNSETVNETHDRSZ, headerSize) < 0) {
      const errno = koffi.errno();
      c.close(fd);
      throw new TapError('ioctl-failed', `TUNSETVNETHDRSZ failed (errno ${errno})`, errno);
    }
    this.fd = fd;
    this.wakeFd = c.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    const view = new DataView(this.pollFds.buffer);
    view.setInt32(0, fd, true);
    view.setInt16(4, POLLIN, true);
    view.setInt32(POLLFD_SIZE, this.wakeFd, true);
    view.setInt16(POLLFD_SIZE + 4, POLLIN, true);
    this.setOffload(0);
  }

  /** TUNSETOFFLOAD: which offloads the kernel may leave to us (what the guest accepts). */
  private setOffload(flags: number): void {
    const c = this.libc;
    if (c.ioctlValue(this.fd, TUNSETOFFLOAD, flags) >= 0) return;
    // Kernels that dropped UFO for TAP refuse the bit: retry without it.
    if (flags & TUN_F_UFO && c.ioctlValue(this.fd, TUNSETOFFLOAD, flags & ~TUN_F_UFO) >= 0) return;
    this.counters.lastErrno = koffi.errno();
  }

  attach(endpoint: NetEndpoint): void {
    this.endpoint = endpoint;
    const offloads = endpoint.rxOffloads;
    let flags = 0;
    if (offloads.csum) {
      flags |= TUN_F_CSUM;
      if (offloads.tso4) flags |= TUN_F_TSO4;
      if (offloads.tso6) flags |= TUN_F_TSO6;
      if (offloads.ufo) flags |= TUN_F_UFO;
    }
    this.setOffload(flags);
    this.drain();
  }

  detach(): void {
    this.endpoint = undefined;
    this.pendingLength = 0;
  }

  send(frame: NetFrame): SendResult {
    if (this.closed) return 'dropped';
    const buffer = this.writeBuffer;
    const total = HDR_SIZE + frame.length;
    if (total > buffer.length) return 'dropped';
    encodeNetHeader(frame.header, buffer, HDR_SIZE, 0);
    gather(frame.segments, frame.length, buffer.subarray(HDR_SIZE));
    const written = this.libc.write(this.fd, buffer, total);
    if (written !== total) {
      this.counters.writeErrors++;
      this.counters.lastErrno = written < 0 ? koffi.errno() : 0;
      return 'dropped';
    }
    this.counters.writtenFrames++;
    this.counters.writtenBytes += frame.length;
    return 'sent';
  }

  rxReady(): void {
    this.drain();
  }

  /** Reads and delivers frames until the fd is empty, the guest is full or a batch is done. */
  private drain(): void {
    if (this.closed || !this.endpoint) return;
    const c = this.libc;
    for (let n = 0; n < READ_BATCH; n++) {
      let length = this.pendingLength;
      if (length === 0) {
        length = c.read(this.fd, this.readBuffer, this.readBuffer.length);
        if (length < 0) {
          const errno = koffi.errno();
          if (errno !== EAGAIN && errno !== EINTR) {
            this.counters.readErrors++;
            this.counters.lastErrno = errno;
          }
          this.startPoll();
          return;
        }
        if (length <= HDR_SIZE) continue;
        this.counters.readFrames++;
        this.counters.readBytes += length - HDR_SIZE;
      }
      const header = decodeNetHeader(this.readBuffer, emptyNetHeader());
      const frameLength = length - HDR_SIZE;
      const result = this.endpoint.receive({
        header,
        segments: [this.readBuffer.subarray(HDR_SIZE, length)],
        length: frameLength,
      });
      if (result === 'no-buffers') {
        this.pendingLength = length; // wait for rxReady; the kernel queues the rest (bounded by its txqueuelen)
        return;
      }
      this.pendingLength = 0;
      if (result === 'dropped') this.counters.readDropped++;
    }
    setImmediate(() => this.drain());
  }

  private startPoll(): void {
    if (this.polling || this.closed) return;
    this.polling = true;
    this.libc.poll.async(this.pollFds, 2, POLL_TIMEOUT_MS, (error: unknown) => {
      this.polling = false;
      if (this.closed) {
        this.finishClose();
        return;
      }
      if (error) {
        this.counters.readErrors++;
        setTimeout(() => this.drain(), POLL_TIMEOUT_MS);
        return;
      }
      // Without a guest attached nothing is read: polling resumes at the next attach.
      this.drain();
    });
  }

  metrics(): Readonly<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const [key, value] of Object.entries(this.counters)) {
      out[`tap_${key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}`] = value;
    }
    return out;
  }

  /** Closes the TAP fd; the interface disappears with it (it is not persistent). */
  close(): Promise<void> {
    if (this.closed && this.fd < 0) return Promise.resolve();
    this.closed = true;
    this.endpoint = undefined;
    if (!this.polling) {
      this.finishClose();
      return Promise.resolve();
    }
    // Wake the poll thread, and close once it has returned (never close an fd it waits on).
    this.libc.write(this.wakeFd, new Uint8Array(new BigUint64Array([1n]).buffer), 8);
    return new Promise((resolve) => this.closeWaiters.push(resolve));
  }

  private finishClose(): void {
    if (this.fd >= 0) {
      this.libc.close(this.fd);
      this.libc.close(this.wakeFd);
      this.fd = -1;
    }
    for (const resolve of this.closeWaiters.splice(0)) resolve();
  }
}
