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
  /**
   * Waits on a libuv pool thread until `fd` is readable or `timeoutMs` passes; never blocks
   * the event loop. Resolves true when readable.
   */
  pollReadable(fd: number, timeoutMs: number): Promise<boolean>;
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
  const poll = lib.func('int poll(void *fds, unsigned long nfds, int timeout)');
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
    pollReadable: (fd, timeoutMs) =>
      new Promise((resolve, reject) => {
        // struct pollfd { int fd; short events; short revents; }, POLLIN = 1.
        const fds = Buffer.alloc(8);
        fds.writeInt32LE(fd, 0);
        fds.writeInt16LE(1, 4);
        poll.async(fds, 1, timeoutMs, (error: unknown, result: number) => {
          if (error) reject(error);
          else resolve(result > 0 && (fds.readInt16LE(6) & 1) !== 0);
        });
      }),
  };
  return loaded;
}

/** Throws the errno of the last failed libc call as a XenError. */
export function throwErrno(service: XenService, operation: string): never {
  const errno = libc().errno();
  throw new XenError(errnoName(errno), service, operation, `errno ${errno}`);
}
