// Native services: koffi bindings to Debian's libxen libraries, for a backend running in a
// real Xen domain (dom0 or a driver domain). Each open checks the host first (probeXenHost)
// and throws XenUnavailableError naming what is missing, so a host that is not a Xen
// domain fails fast and never reaches a library call that could block or abort.
import { constants, openSync, statSync, writeSync } from 'node:fs';
import type { BufferedIoreqMode, DeviceModel, IoRangeKind, PciAddress } from './xen-device-model.js';
import { errnoName, GrantError, XenError, type XenService, XenUnavailableError } from './xen-errors.js';
import type { EventChannel, EventChannelBindOptions, EventChannels } from './xen-event-channels.js';
import { type FdStreamWatch, type FdWaitPath, watchFdStream } from './xen-fd-watcher.js';
import type {
  ForeignMapOptions,
  ForeignMapping,
  ForeignMemory,
  ForeignResource,
} from './xen-foreign-memory.js';
import type {
  GrantCopyEndpoint,
  GrantCopySegment,
  GrantMapping,
  GrantMapRequest,
  GrantShareOptions,
  GrantTables,
  SharedGrantPages,
} from './xen-grant-tables.js';
import {
  GNTCOPY_dest_gref,
  GNTCOPY_source_gref,
  GNTST_bad_copy_arg,
  GNTST_general_error,
  GNTST_okay,
  GRANT_COPY_DEST,
  GRANT_COPY_FLAGS,
  GRANT_COPY_FOREIGN_DOMID,
  GRANT_COPY_FOREIGN_OFFSET,
  GRANT_COPY_FOREIGN_REF,
  GRANT_COPY_LEN,
  GRANT_COPY_SEGMENT_SIZE,
  GRANT_COPY_SOURCE,
  GRANT_COPY_STATUS,
} from './xen-grant-wire.js';
import {
  F_DUPFD_CLOEXEC,
  type HostAddress,
  libc,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  PROT_READ,
  PROT_WRITE,
} from './xen-libc.js';
import {
  type BoundLibrary,
  bindXenLibrary,
  probeXenHost,
  XEN_SERVICE_LIBRARY,
  xenstoredPaths,
} from './xen-native-libs.js';
import type { XenServices } from './xen-services.js';
import type { XenStore } from './xenstore.js';
import { connectXenStore, XenStoreClient } from './xenstore-client.js';

const PAGE = 4096;

/** Checks the host for `service` and binds its library, or throws XenUnavailableError. */
function requireService(
  service: Exclude<XenService, 'sim' | 'toolcore' | 'host'>,
  operation: string,
): BoundLibrary {
  const probe = probeXenHost();
  const status = probe.services[service];
  if (!status.available) throw new XenUnavailableError(service, operation, status.missing);
  const { library, missing } = bindXenLibrary(XEN_SERVICE_LIBRARY[service]);
  if (!library) throw new XenUnavailableError(service, operation, missing);
  return library;
}

function call(library: BoundLibrary, name: string, ...args: unknown[]): unknown {
  const fn = library[name];
  if (!fn) throw new XenError('ENOSYS', 'sim', name, 'function not bound');
  return fn(...args);
}

function failure(service: XenService, operation: string): XenError {
  const errno = libc().errno();
  return new XenError(errnoName(errno), service, operation, `errno ${errno}`);
}

function check(rc: unknown, service: XenService, operation: string): void {
  if (typeof rc === 'number' && rc < 0) throw failure(service, operation);
}

// --- event channels ------------------------------------------------------------------

/** /dev/xen/evtchn hands out pending ports as `evtchn_port_t` (u32, host order: little-endian on x86 and arm64). */
export const EVTCHN_PORT_BYTES = 4;

/**
 * Splits what reads of /dev/xen/evtchn returned into port numbers (Linux drivers/xen/evtchn.c:
 * a read returns whole ports, but a stream may still cut one; the tail waits for the rest).
 */
export class EventChannelPortStream {
  private readonly tail = new Uint8Array(EVTCHN_PORT_BYTES);
  private held = 0;

  ports(bytes: Uint8Array): number[] {
    const ports: number[] = [];
    let offset = 0;
    if (this.held > 0) {
      const take = Math.min(EVTCHN_PORT_BYTES - this.held, bytes.length);
      this.tail.set(bytes.subarray(0, take), this.held);
      this.held += take;
      offset = take;
      if (this.held < EVTCHN_PORT_BYTES) return ports;
      ports.push(new DataView(this.tail.buffer).getUint32(0, true));
      this.held = 0;
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (; offset + EVTCHN_PORT_BYTES <= bytes.length; offset += EVTCHN_PORT_BYTES) {
      ports.push(view.getUint32(offset, true));
    }
    if (offset < bytes.length) {
      this.tail.set(bytes.subarray(offset));
      this.held = bytes.length - offset;
    }
    return ports;
  }
}

class NativeEventChannel implements EventChannel {
  private readonly listeners = new Set<(port: number) => void>();
  private readonly waiters: ((result: IteratorResult<number>) => void)[] = [];
  private queued = 0;
  closed = false;

  constructor(
    private readonly owner: NativeEventChannels,
    readonly localPort: number,
    readonly remoteDomid: number,
    readonly remotePort: number | undefined,
    private readonly autoUnmask: boolean,
  ) {}

  deliver(): void {
    if (this.closed) return;
    if (this.autoUnmask) this.unmask();
    for (const listener of [...this.listeners]) listener(this.localPort);
    const waiter = this.waiters.shift();
    if (waiter) waiter({ value: this.localPort, done: false });
    else if (this.queued < 1) this.queued++;
  }

  notify(): void {
    if (this.closed) throw new XenError('EINVAL', 'evtchn', 'notify', `port ${this.localPort} is closed`);
    check(
      call(this.owner.library, 'xenevtchn_notify', this.owner.handle, this.localPort),
      'evtchn',
      'xenevtchn_notify',
    );
  }

  unmask(): void {
    if (this.closed) throw new XenError('EINVAL', 'evtchn', 'unmask', `port ${this.localPort} is closed`);
    check(
      call(this.owner.library, 'xenevtchn_unmask', this.owner.handle, this.localPort),
      'evtchn',
      'xenevtchn_unmask',
    );
  }

  onEvent(listener: (port: number) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  [Symbol.asyncIterator](): AsyncIterator<number> {
    return {
      next: () => {
        if (this.queued > 0) {
          this.queued--;
          return Promise.resolve({ value: this.localPort, done: false });
        }
        if (this.closed) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => this.waiters.push(resolve));
      },
      return: () => Promise.resolve({ value: undefined, done: true }),
    };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.owner.unbind(this.localPort);
    for (const waiter of this.waiters.splice(0)) waiter({ value: undefined, done: true });
    this.listeners.clear();
  }
}

export class NativeEventChannels implements EventChannels {
  readonly handle: unknown;
  private readonly fd: number;
  private readonly channels = new Map<number, NativeEventChannel>();
  private watch: FdStreamWatch | undefined;
  private closed = false;
  /** Why reading the evtchn fd stopped, if it did (the next bind starts again). */
  lastError: Error | undefined;

  constructor(
    readonly library: BoundLibrary,
    private readonly via: 'auto' | FdWaitPath = 'poller',
  ) {
    this.handle = call(library, 'xenevtchn_open', null, 0);
    if (!this.handle) throw failure('evtchn', 'xenevtchn_open');
    this.fd = call(library, 'xenevtchn_fd', this.handle) as number;
  }

  private add(
    port: number,
    remoteDomid: number,
    remotePort: number | undefined,
    options?: EventChannelBindOptions,
  ): EventChannel {
    const channel = new NativeEventChannel(this, port, remoteDomid, remotePort, options?.autoUnmask ?? true);
    this.channels.set(port, channel);
    this.startWatching();
    return channel;
  }

  bindInterdomain(remoteDomid: number, remotePort: number, options?: EventChannelBindOptions): EventChannel {
    const port = call(
      this.library,
      'xenevtchn_bind_interdomain',
      this.handle,
      remoteDomid,
      remotePort,
    ) as number;
    if (port < 0) throw failure('evtchn', 'xenevtchn_bind_interdomain');
    return this.add(port, remoteDomid, remotePort, options);
  }

  bindUnboundPort(remoteDomid: number, options?: EventChannelBindOptions): EventChannel {
    const port = call(this.library, 'xenevtchn_bind_unbound_port', this.handle, remoteDomid) as number;
    if (port < 0) throw failure('evtchn', 'xenevtchn_bind_unbound_port');
    return this.add(port, remoteDomid, undefined, options);
  }

  unbind(port: number): void {
    this.channels.delete(port);
    if (this.channels.size === 0) this.stopWatching();
    check(call(this.library, 'xenevtchn_unbind', this.handle, port), 'evtchn', 'xenevtchn_unbind');
  }

  /**
   * Reads pending ports from the evtchn fd when it becomes readable, without a timer. The
   * watch reads a duplicate of libxenevtchn's fd: same open file (same port ring; the
   * non-blocking mode it sets is shared, harmless since nothing calls the blocking
   * xenevtchn_pending), but its own descriptor, which the watch closes.
   *
   * Measured on Xen 4.17 under QEMU TCG: the shared poller (`poller`, the default) answers an
   * HVM guest's PCI config ioreq in 3.1-3.2 ms and a dom0 loopback notification in 1.5 ms
   * (median); handing the fd to libuv's own loop (`loop`) is faster on loopback (1.0-1.1 ms)
   * but the ioreq round trip took 7-16 ms, for a reason not found yet.
   */
  private startWatching(): void {
    if (this.watch || this.closed) return;
    const duplicate = libc().fcntl(this.fd, F_DUPFD_CLOEXEC, 0);
    if (duplicate < 0) throw failure('evtchn', 'dup');
    const stream = new EventChannelPortStream();
    const stop = (error: Error) => {
      this.lastError = error;
      this.stopWatching();
    };
    this.watch = watchFdStream(
      duplicate,
      (bytes) => {
        // Each delivered port is masked by the driver until written back (deliver() unmasks).
        for (const port of stream.ports(bytes)) this.channels.get(port)?.deliver();
      },
      {
        via: this.via,
        onError: stop,
        onEnd: () => stop(new XenError('EIO', 'evtchn', 'read', 'end of file on the evtchn fd')),
      },
    );
  }

  private stopWatching(): void {
    this.watch?.close();
    this.watch = undefined;
  }

  close(): void {
    if (this.closed) return;
    for (const channel of [...this.channels.values()]) channel.close();
    this.closed = true;
    this.stopWatching();
    call(this.library, 'xenevtchn_close', this.handle);
  }
}

// --- grant tables --------------------------------------------------------------------

/** Anonymous memory whose address we know, for the local side of grant copies. */
class Staging {
  private address: HostAddress = 0;
  private size = 0;
  bytes = new Uint8Array(0);

  ensure(size: number): HostAddress {
    if (size <= this.size) return this.address;
    const c = libc();
    if (this.size > 0) c.munmap(this.address, this.size);
    const rounded = Math.ceil(size / PAGE) * PAGE;
    const address = c.mmap(0, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (address === -1) throw failure('gnttab', 'mmap');
    this.address = address;
    this.size = rounded;
    this.bytes = new Uint8Array(c.view(address, rounded));
    return address;
  }

  close(): void {
    if (this.size > 0) libc().munmap(this.address, this.size);
    this.size = 0;
  }
}

export class NativeGrantTables implements GrantTables {
  private readonly handle: unknown;
  private shareHandle: unknown;
  private readonly live = new Set<GrantMapping>();
  private readonly staging = new Staging();
  private closed = false;

  constructor(private readonly library: BoundLibrary) {
    this.handle = call(library, 'xengnttab_open', null, 0);
    if (!this.handle) throw failure('gnttab', 'xengnttab_open');
  }

  private mapRaw(domids: readonly number[], refs: readonly number[], writable: boolean): HostAddress {
    const prot = writable ? PROT_READ | PROT_WRITE : PROT_READ;
    const refArray = Uint32Array.from(refs);
    const same = domids.every((d) => d === domids[0]);
    return (
      same
        ? call(
            this.library,
            'xengnttab_map_domain_grant_refs',
            this.handle,
            refs.length,
            domids[0],
            refArray,
            prot,
          )
        : call(
            this.library,
            'xengnttab_map_grant_refs',
            this.handle,
            refs.length,
            Uint32Array.from(domids),
            refArray,
            prot,
          )
    ) as HostAddress;
  }

  map(request: GrantMapRequest): GrantMapping {
    if (this.closed) throw new XenError('EBADF', 'gnttab', 'map_grant_refs', 'handle is closed');
    const count = request.refs.length;
    const domids =
      typeof request.domid === 'number' ? new Array<number>(count).fill(request.domid) : [...request.domid];
    if (count === 0 || domids.length !== count) {
      throw new XenError(
        'EINVAL',
        'gnttab',
        'map_grant_refs',
        'refs and domids must be non-empty and the same length',
      );
    }
    const address = this.mapRaw(domids, request.refs, request.writable);
    if (!address) {
      const error = failure('gnttab', 'map_grant_refs');
      // gntdev reports one errno for the batch; find which ops fail by trying each alone.
      const status = request.refs.map((ref, i) => {
        const single = this.mapRaw([domids[i] as number], [ref], request.writable);
        if (!single) return GNTST_general_error;
        call(this.library, 'xengnttab_unmap', this.handle, single, 1);
        return GNTST_okay;
      });
      throw new GrantError(error.code, 'map_grant_refs', status, error.message);
    }
    const bytes = new Uint8Array(libc().view(address, count * PAGE));
    const status = new Array<number>(count).fill(GNTST_okay);
    let mapped = true;
    const mapping: GrantMapping = {
      domids,
      refs: [...request.refs],
      writable: request.writable,
      status,
      bytes,
      get mapped() {
        return mapped;
      },
      page: (index) => {
        if (!Number.isInteger(index) || index < 0 || index >= count)
          throw new RangeError(`page ${index} of ${count}`);
        return bytes.subarray(index * PAGE, (index + 1) * PAGE);
      },
      unmap: () => {
        // Never hand an address to xengnttab_unmap twice: it may belong to a newer mapping.
        if (!mapped) throw new XenError('EINVAL', 'gnttab', 'unmap', 'address is not mapped');
        mapped = false;
        this.live.delete(mapping);
        check(
          call(this.library, 'xengnttab_unmap', this.handle, address, count),
          'gnttab',
          'xengnttab_unmap',
        );
      },
    };
    this.live.add(mapping);
    return mapping;
  }

  copy(segments: readonly GrantCopySegment[]): number[] {
    if (this.closed) throw new XenError('EBADF', 'gnttab', 'grant_copy', 'handle is closed');
    const status = new Array<number>(segments.length).fill(GNTST_okay);
    const valid: number[] = [];
    let localBytes = 0;
    const endpointValid = (endpoint: GrantCopyEndpoint, length: number) =>
      endpoint.kind === 'local'
        ? endpoint.bytes instanceof Uint8Array && endpoint.bytes.length >= length
        : Number.isInteger(endpoint.offset) && endpoint.offset >= 0 && endpoint.offset + length <= PAGE;
    segments.forEach((segment, i) => {
      const ok =
        Number.isInteger(segment.length) &&
        segment.length >= 0 &&
        segment.length <= PAGE &&
        (segment.source.kind === 'grant' || segment.dest.kind === 'grant') &&
        endpointValid(segment.source, segment.length) &&
        endpointValid(segment.dest, segment.length);
      if (!ok) status[i] = GNTST_bad_copy_arg;
      else {
        valid.push(i);
        if (segment.source.kind === 'local') localBytes += segment.length;
        if (segment.dest.kind === 'local') localBytes += segment.length;
      }
    });
    if (valid.length === 0) return status;
    const base = this.staging.ensure(Math.max(localBytes, 1));
    const table = Buffer.alloc(valid.length * GRANT_COPY_SEGMENT_SIZE);
    const copyBack: { index: number; at: number; segment: GrantCopySegment }[] = [];
    let cursor = 0;
    valid.forEach((index, slot) => {
      const segment = segments[index] as GrantCopySegment;
      const offset = slot * GRANT_COPY_SEGMENT_SIZE;
      let flags = 0;
      const put = (endpoint: GrantCopyEndpoint, at: number, isSource: boolean) => {
        if (endpoint.kind === 'grant') {
          table.writeUInt32LE(endpoint.ref >>> 0, at + GRANT_COPY_FOREIGN_REF);
          table.writeUInt16LE(endpoint.offset, at + GRANT_COPY_FOREIGN_OFFSET);
          table.writeUInt16LE(endpoint.domid & 0xffff, at + GRANT_COPY_FOREIGN_DOMID);
          flags |= isSource ? GNTCOPY_source_gref : GNTCOPY_dest_gref;
        } else {
          table.writeBigUInt64LE(BigInt(base + cursor), at);
          if (isSource) this.staging.bytes.set(endpoint.bytes.subarray(0, segment.length), cursor);
          else copyBack.push({ index, at: cursor, segment });
          cursor += segment.length;
        }
      };
      put(segment.source, offset + GRANT_COPY_SOURCE, true);
      put(segment.dest, offset + GRANT_COPY_DEST, false);
      table.writeUInt16LE(segment.length, offset + GRANT_COPY_LEN);
      table.writeUInt16LE(flags, offset + GRANT_COPY_FLAGS);
    });
    check(
      call(this.library, 'xengnttab_grant_copy', this.handle, valid.length, table),
      'gnttab',
      'xengnttab_grant_copy',
    );
    valid.forEach((index, slot) => {
      status[index] = table.readInt16LE(slot * GRANT_COPY_SEGMENT_SIZE + GRANT_COPY_STATUS);
    });
    for (const { index, at, segment } of copyBack) {
      if (status[index] === GNTST_okay && segment.dest.kind === 'local') {
        segment.dest.bytes.set(this.staging.bytes.subarray(at, at + segment.length));
      }
    }
    return status;
  }

  setMaxGrants(count: number): void {
    check(
      call(this.library, 'xengnttab_set_max_grants', this.handle, count),
      'gnttab',
      'xengnttab_set_max_grants',
    );
  }

  liveMappings(): number {
    return this.live.size;
  }

  grantAccess(): number {
    throw new XenError(
      'EOPNOTSUPP',
      'gnttab',
      'grant_access',
      'user space cannot grant arbitrary frames; use share()',
    );
  }

  endAccess(): void {
    throw new XenError(
      'EOPNOTSUPP',
      'gnttab',
      'end_access',
      'user space cannot end access to arbitrary refs; use unshare()',
    );
  }

  share(grantee: number, count: number, options?: GrantShareOptions): SharedGrantPages {
    if (!this.shareHandle) {
      const probe = probeXenHost();
      if (!probe.services.gntshr.available)
        throw new XenUnavailableError('gntshr', 'xengntshr_open', probe.services.gntshr.missing);
      this.shareHandle = call(this.library, 'xengntshr_open', null, 0);
      if (!this.shareHandle) throw failure('gntshr', 'xengntshr_open');
    }
    const refs = new Uint32Array(count);
    const address = call(
      this.library,
      'xengntshr_share_pages',
      this.shareHandle,
      grantee,
      count,
      refs,
      options?.readOnly ? 0 : 1,
    ) as HostAddress;
    if (!address) throw failure('gntshr', 'xengntshr_share_pages');
    let shared = true;
    return {
      grantee,
      refs: [...refs],
      bytes: new Uint8Array(libc().view(address, count * PAGE)),
      unshare: () => {
        if (!shared) throw new XenError('EINVAL', 'gntshr', 'unshare', 'pages are not shared');
        shared = false;
        check(
          call(this.library, 'xengntshr_unshare', this.shareHandle, address, count),
          'gntshr',
          'xengntshr_unshare',
        );
      },
    };
  }

  close(): void {
    if (this.closed) return;
    for (const mapping of [...this.live]) mapping.unmap();
    this.closed = true;
    this.staging.close();
    call(this.library, 'xengnttab_close', this.handle);
    if (this.shareHandle) call(this.library, 'xengntshr_close', this.shareHandle);
  }
}

// --- foreign memory ------------------------------------------------------------------

export class NativeForeignMemory implements ForeignMemory {
  private readonly handle: unknown;
  private readonly live = new Set<ForeignMapping>();

  constructor(private readonly library: BoundLibrary) {
    this.handle = call(library, 'xenforeignmemory_open', null, 0);
    if (!this.handle) throw failure('foreignmemory', 'xenforeignmemory_open');
  }

  private track(
    domid: number,
    pages: number,
    writable: boolean,
    address: HostAddress,
    release: () => void,
  ): ForeignMapping {
    let mapped = true;
    const mapping: ForeignMapping = {
      domid,
      pages,
      writable,
      bytes: new Uint8Array(libc().view(address, pages * PAGE)),
      get mapped() {
        return mapped;
      },
      unmap: () => {
        if (!mapped) throw new XenError('EINVAL', 'foreignmemory', 'unmap', 'address is not mapped');
        mapped = false;
        this.live.delete(mapping);
        release();
      },
    };
    this.live.add(mapping);
    return mapping;
  }

  map(domid: number, frames: readonly bigint[], options: ForeignMapOptions): ForeignMapping {
    if (frames.length === 0) throw new XenError('EINVAL', 'foreignmemory', 'map', 'no frames');
    const prot = options.writable ? PROT_READ | PROT_WRITE : PROT_READ;
    const errors = new Int32Array(frames.length);
    const address = call(
      this.library,
      'xenforeignmemory_map',
      this.handle,
      domid,
      prot,
      frames.length,
      BigUint64Array.from(frames),
      errors,
    ) as HostAddress;
    if (!address) throw failure('foreignmemory', 'xenforeignmemory_map');
    const bad = errors.findIndex((e) => e !== 0);
    if (bad >= 0) {
      // Touching a page that failed to map would SIGBUS: never hand out such a mapping.
      call(this.library, 'xenforeignmemory_unmap', this.handle, address, frames.length);
      throw new XenError(
        errnoName(-(errors[bad] as number)),
        'foreignmemory',
        'map',
        `frame ${frames[bad]} (page ${bad})`,
      );
    }
    return this.track(domid, frames.length, options.writable, address, () =>
      check(
        call(this.library, 'xenforeignmemory_unmap', this.handle, address, frames.length),
        'foreignmemory',
        'xenforeignmemory_unmap',
      ),
    );
  }

  mapResource(domid: number, resource: ForeignResource, options: ForeignMapOptions): ForeignMapping {
    const prot = options.writable ? PROT_READ | PROT_WRITE : PROT_READ;
    const address = new BigUint64Array(1);
    const handle = call(
      this.library,
      'xenforeignmemory_map_resource',
      this.handle,
      domid,
      resource.type,
      resource.id,
      resource.frame,
      resource.pages,
      address,
      prot,
      0,
    );
    if (!handle) throw failure('foreignmemory', 'xenforeignmemory_map_resource');
    return this.track(domid, resource.pages, options.writable, Number(address[0]), () =>
      check(
        call(this.library, 'xenforeignmemory_unmap_resource', this.handle, handle),
        'foreignmemory',
        'unmap_resource',
      ),
    );
  }

  close(): void {
    for (const mapping of [...this.live]) mapping.unmap();
    call(this.library, 'xenforeignmemory_close', this.handle);
  }
}

// --- device model --------------------------------------------------------------------

const BUFIOREQ_MODES: Record<BufferedIoreqMode, number> = { off: 0, legacy: 1, atomic: 2 };

export class NativeDeviceModel implements DeviceModel {
  private readonly handle: unknown;

  constructor(private readonly library: BoundLibrary) {
    this.handle = call(library, 'xendevicemodel_open', null, 0);
    if (!this.handle) throw failure('devicemodel', 'xendevicemodel_open');
  }

  private op(name: string, ...args: unknown[]): void {
    check(call(this.library, `xendevicemodel_${name}`, this.handle, ...args), 'devicemodel', name);
  }

  createIoreqServer(domid: number, bufioreq: BufferedIoreqMode): number {
    const id = new Uint16Array(1);
    this.op('create_ioreq_server', domid, BUFIOREQ_MODES[bufioreq], id);
    return id[0] as number;
  }

  getBufioreqPort(domid: number, id: number): number | undefined {
    const port = new Uint32Array(1);
    this.op('get_ioreq_server_info', domid, id, null, null, port);
    return port[0] || undefined;
  }

  mapIoRange(domid: number, id: number, kind: IoRangeKind, start: bigint, end: bigint): void {
    this.op('map_io_range_to_ioreq_server', domid, id, kind === 'memory' ? 1 : 0, start, end);
  }

  unmapIoRange(domid: number, id: number, kind: IoRangeKind, start: bigint, end: bigint): void {
    this.op('unmap_io_range_from_ioreq_server', domid, id, kind === 'memory' ? 1 : 0, start, end);
  }

  mapPciDevice(domid: number, id: number, pci: PciAddress): void {
    this.op('map_pcidev_to_ioreq_server', domid, id, pci.segment, pci.bus, pci.device, pci.function);
  }

  unmapPciDevice(domid: number, id: number, pci: PciAddress): void {
    this.op('unmap_pcidev_from_ioreq_server', domid, id, pci.segment, pci.bus, pci.device, pci.function);
  }

  setIoreqServerState(domid: number, id: number, enabled: boolean): void {
    this.op('set_ioreq_server_state', domid, id, enabled ? 1 : 0);
  }

  destroyIoreqServer(domid: number, id: number): void {
    this.op('destroy_ioreq_server', domid, id);
  }

  setPciIntxLevel(domid: number, pci: PciAddress, intx: number, level: number): void {
    this.op('set_pci_intx_level', domid, pci.segment, pci.bus, pci.device, intx, level);
  }

  setIsaIrqLevel(domid: number, irq: number, level: number): void {
    this.op('set_isa_irq_level', domid, irq, level);
  }

  setIrqLevel(domid: number, irq: number, level: number): void {
    this.op('set_irq_level', domid, irq, level);
  }

  injectMsi(domid: number, address: bigint, data: number): void {
    this.op('inject_msi', domid, address, data);
  }

  nrVcpus(domid: number): number {
    const vcpus = [0];
    this.op('nr_vcpus', domid, vcpus);
    return vcpus[0] as number;
  }

  close(): void {
    call(this.library, 'xendevicemodel_close', this.handle);
  }
}

// --- xenstore ------------------------------------------------------------------------

/**
 * Opens xenstore the way libxenstore does: the xenstored socket, else the xenbus device
 * (which speaks the same xs_wire protocol). Uses our wire client rather than libxenstore's
 * blocking calls, so nothing blocks the event loop; the protocol is the stable ABI.
 */
export async function openNativeXenStore(env: NodeJS.ProcessEnv = process.env): Promise<XenStore> {
  const probe = probeXenHost(env);
  const path = probe.xenstored;
  if (!path) throw new XenUnavailableError('xenstore', 'xs_open', probe.services.xenstore.missing);
  if (statSync(path).isSocket()) return connectXenStore(path);
  const fd = openSync(path, constants.O_RDWR);
  let closed = false;
  // The xenbus device returns whole replies and watch events per read, and keeps them while
  // nobody reads: libuv reads it on the event loop (no pool thread held for the connection).
  // Writes never block: the device queues a request and answers it through reads.
  let watch: FdStreamWatch | undefined;
  const client = new XenStoreClient({
    send: (bytes) => {
      if (!closed) writeSync(fd, bytes);
    },
    close: () => {
      if (closed) return;
      closed = true;
      watch?.close();
    },
  });
  const ended = () => {
    if (closed) return;
    closed = true;
    watch?.close();
    client.transportClosed();
  };
  watch = watchFdStream(fd, (bytes) => client.receive(bytes), {
    readSize: 4096 + 16,
    onEnd: ended,
    onError: ended,
  });
  return client;
}

// --- all together --------------------------------------------------------------------

/**
 * How the evtchn fd is waited for: `poller` (default: the process-wide epoll on one pool
 * thread) or `loop` (libuv's own loop; see NativeEventChannels for why it is not the default).
 * `XVIO_EVTCHN_WAIT` in the environment sets the default, for comparing the two on a real host.
 */
export function openNativeEventChannels(
  options: { via?: 'auto' | FdWaitPath } = {},
  env: NodeJS.ProcessEnv = process.env,
): EventChannels {
  const fromEnv = env.XVIO_EVTCHN_WAIT;
  const via =
    options.via ?? (fromEnv === 'loop' || fromEnv === 'poller' || fromEnv === 'auto' ? fromEnv : 'poller');
  return new NativeEventChannels(requireService('evtchn', 'xenevtchn_open'), via);
}

export function openNativeGrantTables(): GrantTables {
  return new NativeGrantTables(requireService('gnttab', 'xengnttab_open'));
}

export function openNativeForeignMemory(): ForeignMemory {
  return new NativeForeignMemory(requireService('foreignmemory', 'xenforeignmemory_open'));
}

export function openNativeDeviceModel(): DeviceModel {
  return new NativeDeviceModel(requireService('devicemodel', 'xendevicemodel_open'));
}

/**
 * Opens all five services on a real Xen domain. Throws XenUnavailableError listing
 * everything missing (all services are checked before anything is opened).
 */
export async function openNativeXenServices(env: NodeJS.ProcessEnv = process.env): Promise<XenServices> {
  const probe = probeXenHost(env);
  const missing = Object.values(probe.services).flatMap((service) => service.missing);
  // gntshr is opened lazily by share(); a backend does not need it.
  const required = Object.entries(probe.services)
    .filter(([name]) => name !== 'gntshr')
    .flatMap(([, service]) => service.missing);
  if (required.length > 0) {
    const unique = [...new Map(missing.map((m) => [`${m.kind}:${m.name}`, m])).values()];
    throw new XenUnavailableError('host', 'open_services', unique);
  }
  const store = await openNativeXenStore(env);
  const events = openNativeEventChannels();
  const grants = openNativeGrantTables();
  const foreignMemory = openNativeForeignMemory();
  const deviceModel = openNativeDeviceModel();
  const domid = Number((await store.tryRead('domid')) ?? '0');
  return {
    kind: 'native',
    domid: Number.isInteger(domid) ? domid : 0,
    store,
    events,
    grants,
    foreignMemory,
    deviceModel,
    close: async () => {
      grants.close();
      foreignMemory.close();
      events.close();
      deviceModel.close();
      await store.close();
    },
  };
}

export { xenstoredPaths };
