// Guest memory of a simulated domain: a memfd, so that mapping a guest page elsewhere is a
// real mmap of the same physical pages (what gntdev and privcmd do on Xen) and costs what a
// mapping costs: page-table work and a TLB shootdown on unmap.
import {
  type HostAddress,
  libc,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_PRIVATE,
  MAP_SHARED,
  MFD_CLOEXEC,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  throwErrno,
} from './xen-libc.js';

export const SIM_PAGE_SIZE = 4096;

/** A live host mapping of guest pages. */
export interface SimPageMapping {
  readonly address: HostAddress;
  readonly length: number;
  readonly bytes: Uint8Array<ArrayBuffer>;
  unmap(): void;
}

/** A memfd of `pages` pages plus the owner's own mapping of all of it. */
export class SimMemoryFile {
  readonly fd: number;
  readonly size: number;
  /** The owner's view of the whole file (the guest's own RAM view, or Xen's view of a resource). */
  readonly bytes: Uint8Array<ArrayBuffer>;
  readonly dataView: DataView;
  private readonly address: HostAddress;
  private closed = false;
  /** Mappings made through `mapPages` and not yet unmapped. */
  liveMappings = 0;

  constructor(
    readonly name: string,
    readonly pages: number,
  ) {
    const c = libc();
    this.size = pages * SIM_PAGE_SIZE;
    this.fd = c.memfdCreate(name, MFD_CLOEXEC);
    if (this.fd < 0) throwErrno('sim', 'memfd_create');
    if (c.ftruncate(this.fd, this.size) !== 0) {
      c.close(this.fd);
      throwErrno('sim', 'ftruncate');
    }
    const address = c.mmap(0, this.size, PROT_READ | PROT_WRITE, MAP_SHARED, this.fd, 0);
    if (address === -1) {
      c.close(this.fd);
      throwErrno('sim', 'mmap');
    }
    this.address = address;
    this.bytes = new Uint8Array(c.view(address, this.size));
    this.dataView = new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength);
  }

  /**
   * Maps `frames` (page indexes into this file) at one contiguous host address, in order.
   * The caller has checked every frame is below `pages`.
   */
  mapPages(frames: readonly number[], writable: boolean): SimPageMapping {
    return mapScattered(
      frames.map((frame) => ({ file: this, frame })),
      writable,
    );
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    const c = libc();
    c.munmap(this.address, this.size);
    c.close(this.fd);
  }
}

/** One page to map: page `frame` of `file`. */
export interface SimPageSource {
  readonly file: SimMemoryFile;
  readonly frame: number;
}

/**
 * Maps pages, possibly of several files, at one contiguous host address in order. A run of
 * consecutive pages of one file takes one mmap; scattered pages are placed with MAP_FIXED
 * into a reserved range, as gntdev fills one VMA with grants from anywhere.
 */
export function mapScattered(pages: readonly SimPageSource[], writable: boolean): SimPageMapping {
  const c = libc();
  const count = pages.length;
  const length = count * SIM_PAGE_SIZE;
  const prot = writable ? PROT_READ | PROT_WRITE : PROT_READ;
  const runs: { index: number; length: number }[] = [];
  for (let index = 0; index < count; ) {
    const first = pages[index] as SimPageSource;
    let run = 1;
    while (index + run < count) {
      const next = pages[index + run] as SimPageSource;
      if (next.file !== first.file || next.frame !== first.frame + run) break;
      run++;
    }
    runs.push({ index, length: run });
    index += run;
  }
  let address: HostAddress;
  const single = runs.length === 1 ? (pages[0] as SimPageSource) : undefined;
  if (single) {
    address = c.mmap(0, length, prot, MAP_SHARED, single.file.fd, single.frame * SIM_PAGE_SIZE);
    if (address === -1) throwErrno('sim', 'mmap');
  } else {
    address = c.mmap(0, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (address === -1) throwErrno('sim', 'mmap');
    for (const run of runs) {
      const source = pages[run.index] as SimPageSource;
      const placed = c.mmap(
        address + run.index * SIM_PAGE_SIZE,
        run.length * SIM_PAGE_SIZE,
        prot,
        MAP_SHARED | MAP_FIXED,
        source.file.fd,
        source.frame * SIM_PAGE_SIZE,
      );
      if (placed === -1) {
        c.munmap(address, length);
        throwErrno('sim', 'mmap');
      }
    }
  }
  const files = new Set(pages.map((page) => page.file));
  for (const file of files) file.liveMappings++;
  const bytes = new Uint8Array(c.view(address, length));
  let mapped = true;
  return {
    address,
    length,
    bytes,
    unmap: () => {
      if (!mapped) return;
      mapped = false;
      for (const file of files) file.liveMappings--;
      if (c.munmap(address, length) !== 0) throwErrno('sim', 'munmap');
    },
  };
}
