import { VhostUserError } from './vhost-user-errors.js';
import {
  AF_UNIX,
  CMSG_HEADER,
  closeFd,
  EAGAIN,
  EINTR,
  IOVEC_SIZE,
  libc,
  MSG_CMSG_CLOEXEC,
  MSG_CTRUNC,
  MSG_DONTWAIT,
  MSG_NOSIGNAL,
  MSGHDR_CONTROL,
  MSGHDR_CONTROLLEN,
  MSGHDR_FLAGS,
  MSGHDR_IOV,
  MSGHDR_IOVLEN,
  MSGHDR_SIZE,
  SCM_RIGHTS,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  SOL_SOCKET,
  unixAddress,
} from './vhost-user-libc.js';
import { type Watch, watchReadable } from './vhost-user-poller.js';
import {
  encodeMessage,
  HEADER_FLAGS,
  HEADER_REQUEST,
  HEADER_SIZE,
  HEADER_SIZE_FIELD,
  MAX_FDS,
  MAX_PAYLOAD_SIZE,
  type VhostUserMessage,
} from './vhost-user-wire.js';

/** Native memory with a stable address (msghdr, iovec and control buffers must not move). */
class NativeBuffer {
  readonly pointer: unknown;
  readonly bytes: Uint8Array;
  readonly view: DataView;
  readonly address: bigint;
  private freed = false;

  constructor(readonly size: number) {
    const c = libc();
    this.pointer = c.koffi.alloc('uint8_t', size);
    this.address = c.address(this.pointer);
    this.bytes = new Uint8Array(c.view(this.pointer, size));
    this.view = new DataView(this.bytes.buffer, this.bytes.byteOffset, size);
  }

  free(): void {
    if (this.freed) return;
    this.freed = true;
    libc().koffi.free(this.pointer as never);
  }
}

/** Room for MAX_FDS descriptors in one control message, and then some (extra ones are an error). */
const CONTROL_SIZE = CMSG_HEADER + 4 * 64;

/**
 * `sendmsg`/`recvmsg` with SCM_RIGHTS over a connected unix socket. The native buffers are
 * allocated once per socket and reused for every call.
 */
export class FdSocket {
  private readonly message = new NativeBuffer(MSGHDR_SIZE);
  private readonly iov = new NativeBuffer(IOVEC_SIZE);
  private readonly control = new NativeBuffer(CONTROL_SIZE);
  private readonly data = new NativeBuffer(HEADER_SIZE + MAX_PAYLOAD_SIZE);
  private open = true;

  constructor(readonly fd: number) {}

  get isOpen(): boolean {
    return this.open;
  }

  private prepare(length: number, controlLength: number): void {
    this.message.bytes.fill(0);
    this.iov.view.setBigUint64(0, this.data.address, true);
    this.iov.view.setBigUint64(8, BigInt(length), true);
    this.message.view.setBigUint64(MSGHDR_IOV, this.iov.address, true);
    this.message.view.setBigUint64(MSGHDR_IOVLEN, 1n, true);
    if (controlLength > 0) {
      this.message.view.setBigUint64(MSGHDR_CONTROL, this.control.address, true);
      this.message.view.setBigUint64(MSGHDR_CONTROLLEN, BigInt(controlLength), true);
    }
  }

  /**
   * Reads up to `length` bytes without blocking. Returns the bytes (a copy) and the fds
   * that came with them; `undefined` when nothing is available yet; an empty array at end
   * of stream. Throws `VhostUserError` when the kernel truncated the fds (they are lost).
   */
  receive(length: number): { bytes: Uint8Array; fds: number[] } | undefined {
    const c = libc();
    this.prepare(length, CONTROL_SIZE);
    let n: number;
    for (;;) {
      n = Number(c.recvmsg(this.fd, this.message.pointer, MSG_DONTWAIT | MSG_CMSG_CLOEXEC));
      if (n >= 0) break;
      const errno = c.errno();
      if (errno === EINTR) continue;
      if (errno === EAGAIN) return undefined;
      throw new VhostUserError('socket-failed', `recvmsg failed: errno ${errno}`);
    }
    const fds = this.takeFds();
    if (this.message.view.getInt32(MSGHDR_FLAGS, true) & MSG_CTRUNC) {
      for (const fd of fds) closeFd(fd);
      throw new VhostUserError(
        'too-many-fds',
        'the frontend sent more file descriptors than a message may carry',
      );
    }
    return { bytes: this.data.bytes.slice(0, n), fds };
  }

  /** Walks the control messages (cmsghdr entries aligned to 8) and collects SCM_RIGHTS fds. */
  private takeFds(): number[] {
    const fds: number[] = [];
    const length = Number(this.message.view.getBigUint64(MSGHDR_CONTROLLEN, true));
    const view = this.control.view;
    let offset = 0;
    while (offset + CMSG_HEADER <= length) {
      const entryLength = Number(view.getBigUint64(offset, true));
      if (entryLength < CMSG_HEADER || offset + entryLength > length) break;
      if (view.getInt32(offset + 8, true) === SOL_SOCKET && view.getInt32(offset + 12, true) === SCM_RIGHTS) {
        for (let at = offset + CMSG_HEADER; at + 4 <= offset + entryLength; at += 4)
          fds.push(view.getInt32(at, true));
      }
      offset += (entryLength + 7) & ~7;
    }
    return fds;
  }

  /** Sends all of `bytes` with `fds` attached to the first byte. Throws `VhostUserError`. */
  send(bytes: Uint8Array, fds: readonly number[] = []): void {
    if (bytes.length > this.data.size) throw new RangeError(`message of ${bytes.length} bytes is too long`);
    if (fds.length > MAX_FDS) throw new RangeError(`at most ${MAX_FDS} fds per message`);
    const c = libc();
    let sent = 0;
    let attach = fds;
    while (sent < bytes.length) {
      this.data.bytes.set(bytes.subarray(sent), 0);
      const controlLength = attach.length > 0 ? CMSG_HEADER + 4 * attach.length : 0;
      this.prepare(bytes.length - sent, controlLength === 0 ? 0 : (controlLength + 7) & ~7);
      if (controlLength > 0) {
        this.control.bytes.fill(0);
        this.control.view.setBigUint64(0, BigInt(controlLength), true);
        this.control.view.setInt32(8, SOL_SOCKET, true);
        this.control.view.setInt32(12, SCM_RIGHTS, true);
        attach.forEach((fd, i) => {
          this.control.view.setInt32(CMSG_HEADER + 4 * i, fd, true);
        });
        this.message.view.setBigUint64(MSGHDR_CONTROLLEN, BigInt(controlLength), true);
      }
      const n = Number(c.sendmsg(this.fd, this.message.pointer, MSG_NOSIGNAL | MSG_DONTWAIT));
      if (n < 0) {
        const errno = c.errno();
        if (errno === EINTR) continue;
        // Replies are tiny and the peer reads them; a full socket buffer means it does not.
        throw new VhostUserError('socket-failed', `sendmsg failed: errno ${errno}`);
      }
      sent += n;
      attach = [];
    }
  }

  /** Closes the socket and frees the native buffers. Idempotent. */
  close(): void {
    if (!this.open) return;
    this.open = false;
    closeFd(this.fd);
    this.message.free();
    this.iov.free();
    this.control.free();
    this.data.free();
  }
}

/** Why a channel ended. */
export type ChannelEnd = { reason: 'eof' } | { reason: 'error'; error: VhostUserError };

/**
 * vhost-user message framing over a nonblocking socket: a 12-byte header, then `size`
 * bytes of payload. The fds of a message ride its first bytes (QEMU sends each message
 * with one sendmsg), so they arrive with the header read; fds that arrive with a payload
 * read are still the message's. A size beyond MAX_PAYLOAD_SIZE cannot be skipped safely
 * and ends the channel.
 */
export class MessageChannel {
  private readonly socket: FdSocket;
  private watch: Watch | undefined;
  private header = new Uint8Array(0);
  private payload: Uint8Array | undefined;
  private payloadFill = 0;
  private pendingFds: number[] = [];
  private ended = false;

  constructor(
    fd: number,
    private readonly onMessage: (message: VhostUserMessage) => void,
    private readonly onEnd: (end: ChannelEnd) => void,
  ) {
    this.socket = new FdSocket(fd);
    this.watch = watchReadable(fd, () => this.readable());
  }

  get fd(): number {
    return this.socket.fd;
  }

  send(request: number, flags: number, payload?: Uint8Array, fds?: readonly number[]): void {
    if (this.ended) return;
    this.socket.send(encodeMessage(request, flags, payload), fds);
  }

  /** Sends bytes as they are (tests use it for malformed headers). */
  sendRaw(bytes: Uint8Array, fds?: readonly number[]): void {
    if (this.ended) return;
    this.socket.send(bytes, fds);
  }

  private readable(): void {
    try {
      while (!this.ended) {
        const want =
          this.payload === undefined
            ? HEADER_SIZE - this.header.length
            : this.payload.length - this.payloadFill;
        const chunk = want === 0 ? { bytes: new Uint8Array(0), fds: [] } : this.socket.receive(want);
        if (chunk === undefined) return;
        if (want > 0 && chunk.bytes.length === 0) {
          this.end({ reason: 'eof' });
          return;
        }
        this.pendingFds.push(...chunk.fds);
        if (this.payload === undefined) {
          const joined = new Uint8Array(this.header.length + chunk.bytes.length);
          joined.set(this.header);
          joined.set(chunk.bytes, this.header.length);
          this.header = joined;
          if (this.header.length < HEADER_SIZE) continue;
          const view = new DataView(this.header.buffer);
          const size = view.getUint32(HEADER_SIZE_FIELD, true);
          if (size > MAX_PAYLOAD_SIZE) {
            throw new VhostUserError('invalid-size', `payload size ${size} exceeds ${MAX_PAYLOAD_SIZE}`);
          }
          this.payload = new Uint8Array(size);
          this.payloadFill = 0;
        } else {
          this.payload.set(chunk.bytes, this.payloadFill);
          this.payloadFill += chunk.bytes.length;
        }
        if (this.payload !== undefined && this.payloadFill === this.payload.length) {
          const view = new DataView(this.header.buffer);
          const message: VhostUserMessage = {
            request: view.getUint32(HEADER_REQUEST, true),
            flags: view.getUint32(HEADER_FLAGS, true),
            payload: this.payload,
            fds: this.pendingFds,
          };
          this.header = new Uint8Array(0);
          this.payload = undefined;
          this.pendingFds = [];
          this.onMessage(message);
        }
      }
    } catch (error) {
      this.end({
        reason: 'error',
        error: VhostUserError.isInstance(error)
          ? error
          : new VhostUserError('handler-failed', 'a message handler failed', { cause: error }),
      });
    }
  }

  private end(end: ChannelEnd): void {
    if (this.ended) return;
    this.close();
    this.onEnd(end);
  }

  /** Stops reading, closes the socket and any fds of a half-read message. Idempotent. */
  close(): void {
    if (this.ended) return;
    this.ended = true;
    this.watch?.close();
    this.watch = undefined;
    for (const fd of this.pendingFds) closeFd(fd);
    this.pendingFds = [];
    this.socket.close();
  }
}

/** A listening unix socket (nonblocking, close-on-exec). Replaces a stale socket file. */
export function listenUnix(path: string, backlog = 4): number {
  const c = libc();
  const address = unixAddress(path);
  const fd = c.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new VhostUserError('socket-failed', `socket failed: errno ${c.errno()}`);
  c.unlink(path);
  if (c.bind(fd, address, address.length) !== 0 || c.listen(fd, backlog) !== 0) {
    const errno = c.errno();
    c.close(fd);
    throw new VhostUserError('socket-failed', `cannot listen on ${path}: errno ${errno}`);
  }
  return fd;
}

/** Accepts one pending connection (nonblocking, close-on-exec), or returns -1 when none waits. */
export function acceptUnix(listenFd: number): number {
  const c = libc();
  for (;;) {
    const fd = c.accept4(listenFd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) return fd;
    const errno = c.errno();
    if (errno === EINTR) continue;
    return -1;
  }
}

/** Connects to a unix socket (blocking connect, then nonblocking), for frontends and tests. */
export function connectUnix(path: string): number {
  const c = libc();
  const address = unixAddress(path);
  const fd = c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new VhostUserError('socket-failed', `socket failed: errno ${c.errno()}`);
  if (c.connect(fd, address, address.length) !== 0) {
    const errno = c.errno();
    c.close(fd);
    throw new VhostUserError('socket-failed', `cannot connect to ${path}: errno ${errno}`);
  }
  return fd;
}
