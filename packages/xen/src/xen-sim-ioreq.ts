// Xen's side of ioreq servers, simulated: the per-server ioreq and buffered pages, the
// vCPU event channels, range claims, and vCPUs that block on STATE_IOREQ_READY until the
// server answers with STATE_IORESP_READY (xen/common/ioreq.c, xen/arch/x86/hvm/emulate.c).

import type { BufferedIoreqMode, IoRangeKind, PciAddress } from './xen-device-model.js';
import { XenError } from './xen-errors.js';
import {
  BUF_IOREQ_SIZE,
  BUFFERED_IOPAGE_READ_POINTER,
  BUFFERED_IOPAGE_SLOTS,
  BUFFERED_IOPAGE_WRITE_POINTER,
  IOREQ_BUFFER_SLOT_NUM,
  IOREQ_TYPE_COPY,
  IOREQ_TYPE_INVALIDATE,
  IOREQ_TYPE_PCI_CONFIG,
  IOREQ_TYPE_PIO,
  IOREQ_VP_EPORT,
  ioreqOffset,
  pciSbdf,
  readIoreq,
  readIoreqState,
  STATE_IOREQ_NONE,
  STATE_IOREQ_READY,
  STATE_IORESP_READY,
  writeBufIoreq,
  writeIoreq,
  writeIoreqState,
} from './xen-ioreq-wire.js';
import type { SimEventCore } from './xen-sim-events.js';
import { SIM_PAGE_SIZE, SimMemoryFile } from './xen-sim-memory.js';

/** Xen's MAX_NR_IOREQ_SERVERS. */
export const SIM_MAX_IOREQ_SERVERS = 8;

interface Range {
  readonly kind: IoRangeKind | 'pci';
  readonly start: bigint;
  readonly end: bigint;
}

export interface SimIoreqServerState {
  readonly id: number;
  readonly domid: number;
  readonly emulator: number;
  readonly bufioreq: BufferedIoreqMode;
  /** Frame 0: buffered page; frame 1: ioreq page (XENMEM_resource_ioreq_server). */
  readonly resource: SimMemoryFile;
  readonly vcpuPorts: number[];
  readonly bufPort: number | undefined;
  readonly ranges: Range[];
  enabled: boolean;
  destroyed: boolean;
  invalidated: boolean;
}

/** An ioreq a vCPU is blocked on. */
export interface SimPendingIoreq {
  readonly domid: number;
  readonly vcpu: number;
  readonly serverId: number;
  readonly type: number;
  readonly addr: bigint;
  readonly size: number;
  readonly direction: 'read' | 'write';
  readonly since: number;
}

export interface SimIoreqDomain {
  readonly domid: number;
  readonly type: 'hvm' | 'pvh' | 'pv' | 'arm';
  readonly vcpuCount: number;
}

export interface SimAccessOptions {
  /**
   * Reject with `ETIMEDOUT` after this long. The vCPU stays blocked (as on Xen, where an
   * unanswered ioreq blocks it for good); later accesses on it queue behind.
   */
  timeoutMs?: number;
  /** Post a write through the buffered ring when the server has one and the address fits (20 bits). */
  buffered?: boolean;
}

interface Waiter {
  server: SimIoreqServerState;
  resolve: (value: bigint) => void;
  pending: SimPendingIoreq;
}

export class SimIoreqCore {
  private readonly servers = new Map<number, SimIoreqServerState[]>();
  private nextId = 0;
  /** Per domain, per vCPU: the ioreq being waited for. */
  private readonly waiting = new Map<number, Map<number, Waiter>>();
  /** Per domain, per vCPU: the tail of the access queue (a vCPU executes one access at a time). */
  private readonly queues = new Map<string, Promise<unknown>>();
  /** Accesses no server claimed (reads answered all ones). */
  unclaimed = 0;

  constructor(
    private readonly events: SimEventCore,
    private readonly lookup: (domid: number) => SimIoreqDomain | undefined,
  ) {}

  private domain(domid: number, operation: string): SimIoreqDomain {
    const domain = this.lookup(domid);
    if (!domain) throw new XenError('ESRCH', 'devicemodel', operation, `no domain ${domid}`);
    return domain;
  }

  server(domid: number, id: number, caller: number, operation: string): SimIoreqServerState {
    this.domain(domid, operation);
    const server = this.servers.get(domid)?.find((s) => s.id === id && !s.destroyed);
    if (!server)
      throw new XenError('ENOENT', 'devicemodel', operation, `no ioreq server ${id} for domain ${domid}`);
    if (server.emulator !== caller)
      throw new XenError(
        'EPERM',
        'devicemodel',
        operation,
        `server ${id} belongs to domain ${server.emulator}`,
      );
    return server;
  }

  create(domid: number, caller: number, bufioreq: BufferedIoreqMode): number {
    const domain = this.domain(domid, 'create_ioreq_server');
    // PV guests have no emulated I/O (observed: EINVAL on Xen 4.17).
    if (domain.type === 'pv')
      throw new XenError('EINVAL', 'devicemodel', 'create_ioreq_server', `domain ${domid} is PV`);
    const list = this.servers.get(domid) ?? [];
    if (list.filter((s) => !s.destroyed).length >= SIM_MAX_IOREQ_SERVERS) {
      throw new XenError(
        'ENOSPC',
        'devicemodel',
        'create_ioreq_server',
        `domain ${domid} has ${SIM_MAX_IOREQ_SERVERS} servers`,
      );
    }
    const id = this.nextId++;
    const resource = new SimMemoryFile(`xen-ioreq-d${domid}-s${id}`, 2);
    const vcpuPorts: number[] = [];
    const view = new DataView(
      resource.bytes.buffer,
      resource.bytes.byteOffset + SIM_PAGE_SIZE,
      SIM_PAGE_SIZE,
    );
    for (let vcpu = 0; vcpu < domain.vcpuCount; vcpu++) {
      // Xen allocates each vCPU's port in the guest, offered to the emulator, and consumes it itself.
      const port = this.events.allocUnbound(domid, caller, {
        deliver: (p) => {
          this.events.unmask(domid, p);
          this.onServerNotify(domid, vcpu);
        },
      });
      vcpuPorts.push(port);
      // As on Xen, vp_eport is published when the server is enabled (setState), not here.
      writeIoreq(view, ioreqOffset(vcpu), {
        addr: 0n,
        data: 0n,
        count: 0,
        size: 0,
        vpEport: 0,
        state: STATE_IOREQ_NONE,
        dataIsPtr: false,
        dirRead: false,
        df: false,
        type: 0,
      });
    }
    const bufPort = bufioreq === 'off' ? undefined : this.events.allocUnbound(domid, caller, undefined);
    list.push({
      id,
      domid,
      emulator: caller,
      bufioreq,
      resource,
      vcpuPorts,
      bufPort,
      ranges: [],
      enabled: false,
      destroyed: false,
      invalidated: false,
    });
    this.servers.set(domid, list);
    return id;
  }

  mapRange(domid: number, id: number, caller: number, kind: Range['kind'], start: bigint, end: bigint): void {
    const server = this.server(domid, id, caller, 'map_io_range_to_ioreq_server');
    if (start > end || start < 0n)
      throw new XenError('EINVAL', 'devicemodel', 'map_io_range_to_ioreq_server', 'start above end');
    if (kind === 'port' && end > 0xffffn)
      throw new XenError('EINVAL', 'devicemodel', 'map_io_range_to_ioreq_server', 'port above 0xffff');
    if (server.ranges.some((r) => r.kind === kind && r.start <= end && start <= r.end)) {
      // rangeset_add_range on an overlapping range of the same server
      throw new XenError(
        'EEXIST',
        'devicemodel',
        'map_io_range_to_ioreq_server',
        'range overlaps one already claimed',
      );
    }
    server.ranges.push({ kind, start, end });
  }

  unmapRange(
    domid: number,
    id: number,
    caller: number,
    kind: Range['kind'],
    start: bigint,
    end: bigint,
  ): void {
    const server = this.server(domid, id, caller, 'unmap_io_range_from_ioreq_server');
    const index = server.ranges.findIndex((r) => r.kind === kind && r.start === start && r.end === end);
    if (index < 0)
      throw new XenError('ENOENT', 'devicemodel', 'unmap_io_range_from_ioreq_server', 'range is not claimed');
    server.ranges.splice(index, 1);
  }

  setState(domid: number, id: number, caller: number, enabled: boolean): void {
    const server = this.server(domid, id, caller, 'set_ioreq_server_state');
    const wasEnabled = server.enabled;
    server.enabled = enabled;
    if (enabled) {
      const page = new DataView(
        server.resource.bytes.buffer,
        server.resource.bytes.byteOffset + SIM_PAGE_SIZE,
        SIM_PAGE_SIZE,
      );
      for (const [vcpu, port] of server.vcpuPorts.entries())
        page.setUint32(ioreqOffset(vcpu) + IOREQ_VP_EPORT, port, true);
    }
    if (enabled && !wasEnabled && !server.invalidated) {
      server.invalidated = true;
      // The first ioreq every server sees on a live guest is the INVALIDATE broadcast
      // (mapcache invalidation); it has to be answered like any other.
      this.access(
        domid,
        0,
        { type: IOREQ_TYPE_INVALIDATE, addr: 0n, size: 0, dirRead: false, data: 0n },
        {},
        server,
      ).catch(() => undefined);
    }
  }

  destroy(domid: number, id: number, caller: number): void {
    const server = this.server(domid, id, caller, 'destroy_ioreq_server');
    server.destroyed = true;
    server.enabled = false;
    for (const port of server.vcpuPorts) this.events.close(domid, port);
    if (server.bufPort !== undefined) this.events.close(domid, server.bufPort);
    // A vCPU waiting on this server stays blocked: Xen does not complete its ioreq either.
    // Nothing reads the pages of a destroyed server again; the emulator's own mapping of
    // them stays valid until it unmaps (the memfd pages live while mapped).
    server.resource.close();
  }

  resource(
    domid: number,
    id: number,
    caller: number,
    frame: number,
    pages: number,
  ): { file: SimMemoryFile; frame: number } {
    const server = this.server(domid, id, caller, 'map_resource');
    if (!Number.isInteger(frame) || !Number.isInteger(pages) || pages < 1 || frame < 0 || frame + pages > 2) {
      throw new XenError(
        'EINVAL',
        'foreignmemory',
        'map_resource',
        `frames ${frame}+${pages} of an ioreq server`,
      );
    }
    if (frame === 0 && server.bufioreq === 'off') {
      throw new XenError('EINVAL', 'foreignmemory', 'map_resource', 'server has no buffered ioreq page');
    }
    return { file: server.resource, frame };
  }

  bufPort(domid: number, id: number, caller: number): number | undefined {
    return this.server(domid, id, caller, 'get_ioreq_server_info').bufPort;
  }

  destroyDomain(domid: number): void {
    for (const server of this.servers.get(domid) ?? []) {
      server.destroyed = true;
      server.resource.close();
    }
    this.servers.delete(domid);
    this.waiting.delete(domid);
  }

  close(): void {
    for (const domid of [...this.servers.keys()]) this.destroyDomain(domid);
  }

  /** Picks the enabled server claiming the access (hvm_select_ioreq_server). */
  private select(domid: number, type: number, addr: bigint, size: number): SimIoreqServerState | undefined {
    const list = this.servers.get(domid);
    if (!list) return undefined;
    for (const server of list) {
      if (!server.enabled || server.destroyed) continue;
      for (const range of server.ranges) {
        if (type === IOREQ_TYPE_PCI_CONFIG) {
          if (range.kind === 'pci' && range.start === addr >> 32n) return server;
        } else if ((type === IOREQ_TYPE_PIO ? 'port' : 'memory') === range.kind) {
          const last = addr + BigInt(Math.max(size, 1)) - 1n;
          if (addr >= range.start && last <= range.end) return server;
        }
      }
    }
    return undefined;
  }

  /** Sends `type` (INVALIDATE) from vCPU 0 to every enabled server of the domain, one after another. */
  async broadcast(domid: number, type: number, options: SimAccessOptions): Promise<void> {
    const servers = (this.servers.get(domid) ?? []).filter((s) => s.enabled && !s.destroyed);
    for (const server of servers) {
      await this.access(domid, 0, { type, addr: 0n, size: 0, dirRead: false, data: 0n }, options, server);
    }
  }

  pending(): SimPendingIoreq[] {
    const out: SimPendingIoreq[] = [];
    for (const perVcpu of this.waiting.values())
      for (const waiter of perVcpu.values()) out.push(waiter.pending);
    return out;
  }

  /** Queues an access on a vCPU (one at a time, like a real vCPU); resolves with the read data. */
  access(
    domid: number,
    vcpu: number,
    request: { type: number; addr: bigint; size: number; dirRead: boolean; data: bigint },
    options: SimAccessOptions,
    only?: SimIoreqServerState,
  ): Promise<bigint> {
    const domain = this.domain(domid, 'vcpu_access');
    if (!Number.isInteger(vcpu) || vcpu < 0 || vcpu >= domain.vcpuCount) {
      return Promise.reject(
        new XenError('EINVAL', 'sim', 'vcpu_access', `domain ${domid} has no vCPU ${vcpu}`),
      );
    }
    const key = `${domid}:${vcpu}`;
    const previous = this.queues.get(key) ?? Promise.resolve();
    const run = previous.then(() => this.issue(domid, vcpu, request, options, only));
    this.queues.set(
      key,
      run.catch(() => undefined),
    );
    if (options.timeoutMs === undefined) return run;
    const timeoutMs = options.timeoutMs;
    return new Promise<bigint>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new XenError(
              'ETIMEDOUT',
              'sim',
              'vcpu_access',
              `vCPU ${vcpu} of domain ${domid} got no answer in ${timeoutMs} ms`,
            ),
          ),
        timeoutMs,
      );
      run.then(
        (value) => {
          clearTimeout(timer);
          resolve(value);
        },
        (error: unknown) => {
          clearTimeout(timer);
          reject(error);
        },
      );
    });
  }

  private issue(
    domid: number,
    vcpu: number,
    request: { type: number; addr: bigint; size: number; dirRead: boolean; data: bigint },
    options: SimAccessOptions,
    only: SimIoreqServerState | undefined,
  ): Promise<bigint> {
    const server = only ?? this.select(domid, request.type, request.addr, request.size);
    const mask = request.size >= 8 ? (1n << 64n) - 1n : (1n << BigInt(request.size * 8)) - 1n;
    if (!server || server.destroyed) {
      // No device: reads float high, writes are dropped.
      this.unclaimed++;
      return Promise.resolve(request.dirRead ? mask : 0n);
    }
    if (options.buffered && !request.dirRead && this.postBuffered(server, request))
      return Promise.resolve(0n);
    const view = new DataView(
      server.resource.bytes.buffer,
      server.resource.bytes.byteOffset + SIM_PAGE_SIZE,
      SIM_PAGE_SIZE,
    );
    const offset = ioreqOffset(vcpu);
    const state = readIoreqState(view, offset);
    if (state !== STATE_IOREQ_NONE) {
      return Promise.reject(
        new XenError('EBUSY', 'sim', 'vcpu_access', `ioreq slot of vCPU ${vcpu} is in state ${state}`),
      );
    }
    writeIoreq(view, offset, {
      addr: request.addr,
      data: request.dirRead ? 0n : request.data & mask,
      count: 1,
      size: request.size,
      vpEport: server.vcpuPorts[vcpu] as number,
      state: STATE_IOREQ_NONE,
      dataIsPtr: false,
      dirRead: request.dirRead,
      df: false,
      type: request.type,
    });
    return new Promise<bigint>((resolve) => {
      let perVcpu = this.waiting.get(domid);
      if (!perVcpu) {
        perVcpu = new Map();
        this.waiting.set(domid, perVcpu);
      }
      perVcpu.set(vcpu, {
        server,
        resolve: (value) => resolve(request.dirRead ? value & mask : 0n),
        pending: {
          domid,
          vcpu,
          serverId: server.id,
          type: request.type,
          addr: request.addr,
          size: request.size,
          direction: request.dirRead ? 'read' : 'write',
          since: Date.now(),
        },
      });
      // Publish the request (state last), then kick the server's port.
      writeIoreqState(view, offset, STATE_IOREQ_READY);
      this.events.send(domid, server.vcpuPorts[vcpu] as number);
    });
  }

  /** hvm_send_buffered_ioreq: false when the ring is full or the access does not fit a slot. */
  private postBuffered(
    server: SimIoreqServerState,
    request: { type: number; addr: bigint; size: number; data: bigint },
  ): boolean {
    if (server.bufioreq === 'off' || server.bufPort === undefined) return false;
    if (request.type !== IOREQ_TYPE_COPY && request.type !== IOREQ_TYPE_PIO) return false;
    if (request.addr > 0xfffffn || ![1, 2, 4, 8].includes(request.size)) return false;
    const view = server.resource.dataView;
    const read = view.getUint32(BUFFERED_IOPAGE_READ_POINTER, true);
    const write = view.getUint32(BUFFERED_IOPAGE_WRITE_POINTER, true);
    const slots = request.size === 8 ? 2 : 1;
    if (((write - read) >>> 0) + slots > IOREQ_BUFFER_SLOT_NUM) return false;
    const addr = Number(request.addr);
    const data = BigInt.asUintN(64, request.data);
    writeBufIoreq(view, BUFFERED_IOPAGE_SLOTS + (write % IOREQ_BUFFER_SLOT_NUM) * BUF_IOREQ_SIZE, {
      type: request.type,
      dirRead: false,
      size: request.size,
      addr,
      data: Number(data & 0xffffffffn),
    });
    if (slots === 2) {
      writeBufIoreq(view, BUFFERED_IOPAGE_SLOTS + ((write + 1) % IOREQ_BUFFER_SLOT_NUM) * BUF_IOREQ_SIZE, {
        type: request.type,
        dirRead: false,
        size: request.size,
        addr,
        data: Number(data >> 32n),
      });
    }
    // The slots are written before the pointer moves (Xen: smp_wmb between them).
    view.setUint32(BUFFERED_IOPAGE_WRITE_POINTER, (write + slots) >>> 0, true);
    this.events.send(server.domid, server.bufPort);
    return true;
  }

  /** The server notified a vCPU port: complete the ioreq if the slot says IORESP_READY. */
  private onServerNotify(domid: number, vcpu: number): void {
    const waiter = this.waiting.get(domid)?.get(vcpu);
    if (!waiter) return;
    const view = new DataView(
      waiter.server.resource.bytes.buffer,
      waiter.server.resource.bytes.byteOffset + SIM_PAGE_SIZE,
      SIM_PAGE_SIZE,
    );
    const offset = ioreqOffset(vcpu);
    // A notification without IORESP_READY is spurious: the vCPU keeps waiting (hvm_wait_for_io).
    if (readIoreqState(view, offset) !== STATE_IORESP_READY) return;
    const fields = readIoreq(view, offset);
    writeIoreqState(view, offset, STATE_IOREQ_NONE);
    this.waiting.get(domid)?.delete(vcpu);
    waiter.resolve(fields.data);
  }

  /** The ioreq address of a PCI config register: SBDF << 32 | register. */
  static pciAddress(pci: PciAddress, register: number): bigint {
    return (BigInt(pciSbdf(pci.segment, pci.bus, pci.device, pci.function)) << 32n) | BigInt(register);
  }
}
