import { createRequire } from 'node:module';
import type koffiType from 'koffi';

// libc through koffi: Node's `net` drops SCM_RIGHTS file descriptors and cannot watch an
// eventfd, and vhost-user needs both. Everything here is loaded on first use, so importing
// the package on a machine without libc (or without koffi's prebuilt binary) costs nothing.

type Koffi = typeof koffiType;
// biome-ignore lint/suspicious/noExplicitAny: koffi functions are untyped at the FFI boundary
type NativeFunction = ((...args: any[]) => any) & { async: (...args: any[]) => void };

/** x86-64 Linux constants (asm-generic and x86 values, checked against glibc headers). */
export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SCM_RIGHTS = 1;
export const MSG_DONTWAIT = 0x40;
export const MSG_CTRUNC = 0x8;
export const MSG_NOSIGNAL = 0x4000;
export const MSG_CMSG_CLOEXEC = 0x40000000;
export const EAGAIN = 11;
export const EINTR = 4;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 1;
export const MAP_PRIVATE = 2;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;
export const EPOLL_CLOEXEC = 0o2000000;
export const EPOLL_CTL_ADD = 1;
export const EPOLL_CTL_DEL = 2;
export const EPOLLIN = 1;
export const EPOLLERR = 8;
export const EPOLLHUP = 0x10;
export const MFD_CLOEXEC = 1;
export const MFD_ALLOW_SEALING = 2;
export const F_ADD_SEALS = 1033;
export const F_GET_SEALS = 1034;
export const F_SEAL_SHRINK = 2;
/** struct stat on x86-64 (144 bytes): st_mode u32 @24, st_size i64 @48. */
export const STAT_SIZE = 144;
export const STAT_MODE = 24;
export const STAT_ST_SIZE = 48;
export const S_IFMT = 0o170000;
export const S_IFREG = 0o100000;
export const SUN_PATH_MAX = 108;

/** struct msghdr on x86-64 (56 bytes). */
export const MSGHDR_SIZE = 56;
export const MSGHDR_IOV = 16;
export const MSGHDR_IOVLEN = 24;
export const MSGHDR_CONTROL = 32;
export const MSGHDR_CONTROLLEN = 40;
export const MSGHDR_FLAGS = 48;
/** struct iovec (16 bytes): base pointer, length. */
export const IOVEC_SIZE = 16;
/** struct cmsghdr: len u64 @0, level i32 @8, type i32 @12, data from @16, entries aligned to 8. */
export const CMSG_HEADER = 16;
/** struct epoll_event is packed on x86-64: events u32 @0, data u64 @4. */
export const EPOLL_EVENT_SIZE = 12;

export interface Libc {
  readonly koffi: Koffi;
  socket(domain: number, type: number, protocol: number): number;
  bind(fd: number, address: Uint8Array, length: number): number;
  listen(fd: number, backlog: number): number;
  accept4(fd: number, address: null, length: null, flags: number): number;
  connect(fd: number, address: Uint8Array, length: number): number;
  recvmsg(fd: number, message: unknown, flags: number): number | bigint;
  sendmsg(fd: number, message: unknown, flags: number): number | bigint;
  close(fd: number): number;
  read(fd: number, buffer: Uint8Array, length: number): number | bigint;
  write(fd: number, buffer: Uint8Array, length: number): number | bigint;
  mmap(address: unknown, length: number, prot: number, flags: number, fd: number, offset: number): unknown;
  munmap(address: unknown, length: number): number;
  eventfd(initial: number, flags: number): number;
  memfdCreate(name: string, flags: number): number;
  ftruncate(fd: number, length: number): number;
  fstat(fd: number, stat: Uint8Array): number;
  /** fcntl with one int argument. */
  fcntl(fd: number, command: number, argument: number): number;
  epollCreate1(flags: number): number;
  epollCtl(epfd: number, op: number, fd: number, event: Uint8Array | null): number;
  epollWait: NativeFunction;
  unlink(path: string): number;
  /** Lets another runnable thread of this CPU run (a polling loop's courtesy). */
  schedYield(): number;
  errno(): number;
  /** The address of native memory or of a buffer, as a bigint. */
  address(pointer: unknown): bigint;
  /** An ArrayBuffer over native memory (no copy). */
  view(pointer: unknown, length: number): ArrayBuffer;
}

let loaded: Libc | undefined;

/** Loads libc through koffi once. Throws when koffi or libc cannot be loaded. */
export function libc(): Libc {
  if (loaded) return loaded;
  const require = createRequire(import.meta.url);
  const koffi = require('koffi') as Koffi;
  const lib = koffi.load('libc.so.6');
  const fn = (signature: string) => lib.func(signature) as unknown as NativeFunction;
  const socket = fn('int socket(int, int, int)');
  const bind = fn('int bind(int, void *, uint32_t)');
  const listen = fn('int listen(int, int)');
  const accept4 = fn('int accept4(int, void *, void *, int)');
  const connect = fn('int connect(int, void *, uint32_t)');
  const recvmsg = fn('intptr_t recvmsg(int, void *, int)');
  const sendmsg = fn('intptr_t sendmsg(int, void *, int)');
  const close = fn('int close(int)');
  const read = fn('intptr_t read(int, void *, size_t)');
  const write = fn('intptr_t write(int, void *, size_t)');
  const mmap = fn('void *mmap(void *, size_t, int, int, int, intptr_t)');
  const munmap = fn('int munmap(void *, size_t)');
  const eventfd = fn('int eventfd(unsigned int, int)');
  const memfdCreate = fn('int memfd_create(const char *, unsigned int)');
  const ftruncate = fn('int ftruncate(int, int64_t)');
  const fstat = fn('int fstat(int, void *)');
  const fcntl = fn('int fcntl(int, int, ...)');
  const epollCreate1 = fn('int epoll_create1(int)');
  const epollCtl = fn('int epoll_ctl(int, int, int, void *)');
  const epollWait = fn('int epoll_wait(int, void *, int, int)');
  const unlink = fn('int unlink(const char *)');
  const schedYield = fn('int sched_yield(void)');
  loaded = {
    koffi,
    socket,
    bind,
    listen,
    accept4,
    connect,
    recvmsg,
    sendmsg,
    close,
    read,
    write,
    mmap,
    munmap,
    eventfd,
    memfdCreate,
    ftruncate,
    fstat,
    fcntl: (fd, command, argument) => fcntl(fd, command, 'int', argument),
    epollCreate1,
    epollCtl,
    epollWait,
    unlink,
    schedYield,
    errno: () => koffi.errno(),
    address: (pointer) => BigInt(koffi.address(pointer) as number | bigint),
    view: (pointer, length) => koffi.view(pointer as never, length) as ArrayBuffer,
  };
  return loaded;
}

/** A `struct sockaddr_un` for `path`; throws RangeError when the path does not fit sun_path. */
export function unixAddress(path: string): Uint8Array {
  const encoded = new TextEncoder().encode(path);
  if (encoded.length === 0 || encoded.length >= SUN_PATH_MAX) {
    throw new RangeError(`socket path must be 1..${SUN_PATH_MAX - 1} bytes, got ${encoded.length}`);
  }
  const address = new Uint8Array(2 + SUN_PATH_MAX);
  new DataView(address.buffer).setUint16(0, AF_UNIX, true);
  address.set(encoded, 2);
  return address;
}

/** Closes a file descriptor we own, ignoring -1. */
export function closeFd(fd: number): void {
  if (fd >= 0) libc().close(fd);
}
