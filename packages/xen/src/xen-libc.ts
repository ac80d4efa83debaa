// The few libc calls the simulator and the native bindings need, through koffi (~150 ns a
// call). Loaded on first use so that importing this package never loads a native library.
import koffi from 'koffi';
import { errnoName, XenError, type XenService } from './xen-errors.js';

export const PROT_NONE = 0;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const MFD_CLOEXEC = 1;
/** x86-64 and arm64 Linux values (asm-generic), checked against glibc's headers. */
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
export const F_GETFL = 3;
export const F_SETFL = 4;
export const F_DUPFD_CLOEXEC = 1030;
export const EAGAIN = 11;
export const EINTR = 4;
export const EFD_NONBLOCK = 0o4000;
export const EFD_CLOEXEC = 0o2000000;
export const EPOLL_CLOEXEC = 0o2000000;
export const EPOLL_CTL_ADD = 1;
export const EPOLL_CTL_DEL = 2;
export const EPOLLIN = 1;
/** struct epoll_event is packed on x86-64: events u32 @0, data u64 @4. */
export const EPOLL_EVENT_SIZE = 12;
export const EPOLL_EVENT_EVENTS = 0;
export const EPOLL_EVENT_DATA = 4;

/** A host virtual address. User-space addresses on x86-64 and arm64 fit in 48 bits, so a number is exact. */
export type HostAddress = number;

export interface Libc {
  memfdCreate(name: string, flags: number): number;
  ftruncate(fd: number, length: number): number;
  /** Raw mmap: returns the address, or -1 on failure (errno set). */
  mmap(
    address: HostAddress,
    length: number,
    prot: number,
    flags: number,
    fd: number,
    offset: number,
  ): HostAddress;
  munmap(address: HostAddress, length: number): number;
  close(fd: number): number;
  errno(): number;
  /** An ArrayBuffer over host memory (no copy). Valid only while the memory stays mapped. */
  view(address: HostAddress, length: number): ArrayBuffer;
  /** read(2): bytes read, or -1 (errno set). */
  read(fd: number, buffer: Uint8Array, length: number): number;
  /** write(2): bytes written, or -1 (errno set). */
  write(fd: number, buffer: Uint8Array, length: number): number;
  /** fcntl with one int argument. */
  fcntl(fd: number, command: number, argument: number): number;
  eventfd(initial: number, flags: number): number;
  /** pipe2: fills `fds` with the read and write ends. */
  pipe2(fds: Int32Array, flags: number): number;
  epollCreate1(flags: number): number;
  epollCtl(epfd: number, op: number, fd: number, event: Uint8Array | null): number;
  /** epoll_wait on a libuv pool thread (koffi `.async`); the callback gets the count. */
  epollWaitAsync(
    epfd: number,
    events: Uint8Array,
    maxEvents: number,
    timeoutMs: number,
    callback: (error: unknown, count: number) => void,
  ): void;
}

let loaded: Libc | undefined;

export function libc(): Libc {
  if (loaded) return loaded;
  const lib = koffi.load('libc.so.6');
  const memfdCreate = lib.func('int memfd_create(const char *name, unsigned int flags)');
  const ftruncate = lib.func('int ftruncate(int fd, int64_t length)');
  const mmap = lib.func(
    'uintptr_t mmap(uintptr_t addr, size_t length, int prot, int flags, int fd, int64_t offset)',
  );
  const munmap = lib.func('int munmap(uintptr_t addr, size_t length)');
  const close = lib.func('int close(int fd)');
  const read = lib.func('intptr_t read(int fd, void *buffer, size_t count)');
  const write = lib.func('intptr_t write(int fd, const void *buffer, size_t count)');
  const fcntl = lib.func('int fcntl(int fd, int command, ...)');
  const eventfd = lib.func('int eventfd(unsigned int initial, int flags)');
  const pipe2 = lib.func('int pipe2(int *fds, int flags)');
  const epollCreate1 = lib.func('int epoll_create1(int flags)');
  const epollCtl = lib.func('int epoll_ctl(int epfd, int op, int fd, void *event)');
  const epollWait = lib.func('int epoll_wait(int epfd, void *events, int maxevents, int timeout)');
  loaded = {
    memfdCreate: (name, flags) => memfdCreate(name, flags) as number,
    ftruncate: (fd, length) => ftruncate(fd, length) as number,
    mmap: (address, length, prot, flags, fd, offset) => {
      const result = mmap(address, length, prot, flags, fd, offset) as number | bigint;
      // MAP_FAILED is (void *)-1, which koffi returns as a bigint 2^64-1.
      return typeof result === 'bigint' ? -1 : result;
    },
    munmap: (address, length) => munmap(address, length) as number,
    close: (fd) => close(fd) as number,
    errno: () => koffi.errno(),
    view: (address, length) => koffi.view(address, length),
    read: (fd, buffer, length) => Number(read(fd, buffer, length)),
    write: (fd, buffer, length) => Number(write(fd, buffer, length)),
    fcntl: (fd, command, argument) => fcntl(fd, command, 'int', argument) as number,
    eventfd: (initial, flags) => eventfd(initial, flags) as number,
    pipe2: (fds, flags) => pipe2(fds, flags) as number,
    epollCreate1: (flags) => epollCreate1(flags) as number,
    epollCtl: (epfd, op, fd, event) => epollCtl(epfd, op, fd, event) as number,
    epollWaitAsync: (epfd, events, maxEvents, timeoutMs, callback) =>
      epollWait.async(epfd, events, maxEvents, timeoutMs, callback),
  };
  return loaded;
}

/** Throws the errno of the last failed libc call as a XenError. */
export function throwErrno(service: XenService, operation: string): never {
  const errno = libc().errno();
  throw new XenError(errnoName(errno), service, operation, `errno ${errno}`);
}
