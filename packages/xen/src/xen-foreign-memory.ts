/**
 * Foreign memory (libxenforeignmemory; privcmd on Linux): a privileged domain maps another
 * domain's frames by guest frame number, or a hypervisor resource such as an ioreq server's
 * pages. Synchronous: ioctl plus mmap.
 */

export interface ForeignMapOptions {
  /** PROT_READ|PROT_WRITE when true, PROT_READ otherwise. */
  readonly writable: boolean;
}

/** Frames mapped from another domain, contiguous in `bytes` (`frames * 4096`). */
export interface ForeignMapping {
  readonly domid: number;
  readonly pages: number;
  readonly writable: boolean;
  readonly bytes: Uint8Array<ArrayBuffer>;
  /** munmap. A second call throws `XenError` `EINVAL`. */
  unmap(): void;
  readonly mapped: boolean;
}

/** A resource to map with XENMEM_acquire_resource. */
export interface ForeignResource {
  /** XENMEM_resource_* (0 = ioreq server, 1 = grant table, 2 = vmtrace buffer). */
  readonly type: number;
  /** The resource id (the ioreq server id for type 0). */
  readonly id: number;
  /** First frame (for ioreq servers: 0 = buffered page, 1 + n = ioreq page n). */
  readonly frame: number;
  readonly pages: number;
}

export interface ForeignMemory {
  /**
   * Maps guest frames `frames` (GFNs, 64-bit) of `domid`. Unlike xenforeignmemory_map, never
   * returns a mapping with holes: when any frame fails it unmaps the rest and throws
   * `XenError` with the first failing frame's errno (`EINVAL` beyond guest memory, `EPERM`
   * for a domain we may not map, `ESRCH` no such domain).
   */
  map(domid: number, frames: readonly bigint[], options: ForeignMapOptions): ForeignMapping;
  /** XENMEM_acquire_resource (xenforeignmemory_map_resource). */
  mapResource(domid: number, resource: ForeignResource, options: ForeignMapOptions): ForeignMapping;
  /** Unmaps everything and releases the handle. */
  close(): void;
}
