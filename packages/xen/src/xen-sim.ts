// An in-process Xen: domains with memfd-backed memory, vCPUs, grant tables in guest memory,
// event channels, ioreq servers, foreign mapping, interrupts and xenstored. Each service
// handle acts as one domain, with the checks Xen applies to that domain.

import type {
  BufferedIoreqMode,
  DeviceModel,
  InterruptEvent,
  IoRangeKind,
  PciAddress,
} from './xen-device-model.js';
import { XenError } from './xen-errors.js';
import type {
  ForeignMapOptions,
  ForeignMapping,
  ForeignMemory,
  ForeignResource,
} from './xen-foreign-memory.js';
import {
  GRANT_ENTRIES_PER_PAGE,
  GRANT_ENTRY_V1_SIZE,
  type GrantEntryV1,
  readGrantEntry,
} from './xen-grant-wire.js';
import {
  IOREQ_TYPE_COPY,
  IOREQ_TYPE_INVALIDATE,
  IOREQ_TYPE_PCI_CONFIG,
  IOREQ_TYPE_PIO,
  pciSbdf,
} from './xen-ioreq-wire.js';
import type { XenServices } from './xen-services.js';
import { SimEventChannels, SimEventCore } from './xen-sim-events.js';
import { type SimGrantDomain, SimGrantTables } from './xen-sim-grants.js';
import { type SimAccessOptions, SimIoreqCore, type SimPendingIoreq } from './xen-sim-ioreq.js';
import { mapScattered, SIM_PAGE_SIZE, SimMemoryFile, type SimPageMapping } from './xen-sim-memory.js';
import { SimXenstored, type XenstoredOptions } from './xenstored.js';

/** Interrupts the simulator keeps for inspection (see `XenSimulator.interrupts`). */
export const SIM_INTERRUPT_LOG_LIMIT = 4096;
export type SimDomainType = 'hvm' | 'pvh' | 'pv' | 'arm';

export interface SimDomainOptions {
  /** Default: the lowest free id from 1 (0 is dom0). */
  readonly domid?: number;
  readonly name?: string;
  /** Guest RAM in bytes, a multiple of 4096 (default 16 MiB). */
  readonly memoryBytes?: number;
  readonly vcpus?: number;
  /** Default 'hvm'. */
  readonly type?: SimDomainType;
  /** v1 grant-table frames (512 entries each; default 4). */
  readonly grantFrames?: number;
  /** May map other domains' memory and run device models (default: dom0 only). */
  readonly privileged?: boolean;
}

export interface XenSimulatorOptions {
  /** dom0's own settings (it always exists, privileged). */
  readonly dom0?: Omit<SimDomainOptions, 'domid' | 'privileged'>;
  readonly xenstored?: XenstoredOptions;
}

/** A simulated vCPU: issues trapped I/O that blocks until an ioreq server answers. */
export interface SimVcpu {
  readonly domid: number;
  readonly index: number;
  mmioRead(address: bigint, size: number, options?: SimAccessOptions): Promise<bigint>;
  mmioWrite(address: bigint, size: number, value: bigint, options?: SimAccessOptions): Promise<void>;
  portRead(port: number, size: number, options?: SimAccessOptions): Promise<bigint>;
  portWrite(port: number, size: number, value: bigint, options?: SimAccessOptions): Promise<void>;
  pciConfigRead(pci: PciAddress, register: number, size: number, options?: SimAccessOptions): Promise<bigint>;
  pciConfigWrite(
    pci: PciAddress,
    register: number,
    size: number,
    value: bigint,
    options?: SimAccessOptions,
  ): Promise<void>;
  /** The ioreq this vCPU waits for, if any. */
  readonly blockedOn: SimPendingIoreq | undefined;
}

/** A simulated domain, as the test (its "guest") sees it. */
export interface SimDomain {
  readonly domid: number;
  readonly name: string;
  readonly type: SimDomainType;
  readonly vcpuCount: number;
  readonly privileged: boolean;
  /** Guest RAM as the guest sees it (guest-physical address = byte offset). */
  readonly memory: Uint8Array<ArrayBuffer>;
  readonly memoryView: DataView;
  readonly ramPages: number;
  /** Number of v1 grant entries. */
  readonly grantEntries: number;
  /** The guest frame number of the first grant-table frame (the frames follow RAM). */
  readonly grantTableFrame: number;
  /** Reads grant entry `ref` from the guest's grant table. */
  grantEntry(ref: number): GrantEntryV1;
  /** Allocates consecutive RAM frames from the top of RAM (for shared pages and test buffers); returns the first frame. */
  allocatePages(count: number): number;
  freePages(first: number, count: number): void;
  vcpu(index: number): SimVcpu;
  /** Sends IOREQ_TYPE_INVALIDATE from vCPU 0 to every enabled server and waits for the answers. */
  broadcastInvalidate(options?: SimAccessOptions): Promise<void>;
  /** Service handles acting as this domain. */
  services(): XenServices;
}

export interface XenSimulator {
  readonly dom0: SimDomain;
  createDomain(options?: SimDomainOptions): SimDomain;
  domain(domid: number): SimDomain;
  destroyDomain(domid: number): void;
  /** Service handles acting as `domid` (a new set per call). */
  services(domid?: number): XenServices;
  readonly xenstored: SimXenstored;
  /**
   * The interrupts device models raised, oldest first: the most recent
   * `SIM_INTERRUPT_LOG_LIMIT` at least (older ones are dropped, so a long run stays bounded).
   */
  readonly interrupts: readonly InterruptEvent[];
  /** Interrupts raised since the simulator started, dropped ones included. */
  readonly interruptCount: number;
  onInterrupt(listener: (event: InterruptEvent) => void): () => void;
  /** ioreqs that vCPUs wait for, older than `minAgeMs` (an unanswered ioreq blocks a vCPU for good). */
  unansweredIoreqs(minAgeMs?: number): SimPendingIoreq[];
  /** The pending and mask bits of a domain's event channel port (undefined when not bound). */
  eventChannelBits(domid: number, port: number): { pending: boolean; masked: boolean } | undefined;
  /** Counters: event notifications, unclaimed accesses. */
  readonly stats: { readonly eventsSent: number; readonly unclaimedAccesses: number };
  close(): Promise<void>;
}

const DEFAULT_MEMORY = 16 * 1024 * 1024;

class SimDomainImpl implements SimDomain, SimGrantDomain {
  readonly memoryFile: SimMemoryFile;
  readonly memory: Uint8Array<ArrayBuffer>;
  readonly memoryView: DataView;
  readonly ramPages: number;
  readonly grantEntries: number;
  readonly grantTableFrame: number;
  readonly grantTableOffset: number;
  readonly active = new Map<number, { readers: number; writers: number }>();
  private readonly vcpus: SimVcpu[] = [];
  private allocTop: number;
  private readonly freeList: { first: number; count: number }[] = [];

  constructor(
    private readonly sim: XenSimulatorImpl,
    readonly domid: number,
    readonly name: string,
    readonly type: SimDomainType,
    readonly vcpuCount: number,
    readonly privileged: boolean,
    memoryBytes: number,
    grantFrames: number,
  ) {
    this.ramPages = memoryBytes / SIM_PAGE_SIZE;
    this.grantEntries = grantFrames * GRANT_ENTRIES_PER_PAGE;
    this.grantTableFrame = this.ramPages;
    this.grantTableOffset = this.ramPages * SIM_PAGE_SIZE;
    this.memoryFile = new SimMemoryFile(`xen-sim-d${domid}`, this.ramPages + grantFrames);
    this.memory = this.memoryFile.bytes.subarray(0, memoryBytes);
    this.memoryView = new DataView(this.memory.buffer, this.memory.byteOffset, memoryBytes);
    this.allocTop = this.ramPages;
    for (let index = 0; index < vcpuCount; index++) this.vcpus.push(this.makeVcpu(index));
  }

  grantEntry(ref: number): GrantEntryV1 {
    if (!Number.isInteger(ref) || ref < 0 || ref >= this.grantEntries)
      throw new RangeError(`ref ${ref} out of range`);
    return readGrantEntry(this.memoryFile.dataView, this.grantTableOffset + ref * GRANT_ENTRY_V1_SIZE);
  }

  allocatePages(count: number): number {
    const index = this.freeList.findIndex((range) => range.count === count);
    if (index >= 0) return (this.freeList.splice(index, 1)[0] as { first: number }).first;
    if (!Number.isInteger(count) || count < 1 || count > this.allocTop) {
      throw new XenError(
        'ENOMEM',
        'sim',
        'allocate_pages',
        `cannot allocate ${count} pages in domain ${this.domid}`,
      );
    }
    this.allocTop -= count;
    return this.allocTop;
  }

  freePages(first: number, count: number): void {
    this.freeList.push({ first, count });
  }

  private makeVcpu(index: number): SimVcpu {
    const core = this.sim.ioreq;
    const domid = this.domid;
    const access = (
      type: number,
      addr: bigint,
      size: number,
      dirRead: boolean,
      data: bigint,
      options?: SimAccessOptions,
    ) => {
      if (![1, 2, 4, 8].includes(size)) {
        return Promise.reject(new XenError('EINVAL', 'sim', 'vcpu_access', `access size ${size}`));
      }
      return core.access(domid, index, { type, addr, size, dirRead, data }, options ?? {});
    };
    return {
      domid,
      index,
      mmioRead: (address, size, options) => access(IOREQ_TYPE_COPY, address, size, true, 0n, options),
      mmioWrite: async (address, size, value, options) => {
        await access(IOREQ_TYPE_COPY, address, size, false, value, options);
      },
      portRead: (port, size, options) => access(IOREQ_TYPE_PIO, BigInt(port), size, true, 0n, options),
      portWrite: async (port, size, value, options) => {
        await access(IOREQ_TYPE_PIO, BigInt(port), size, false, value, options);
      },
      pciConfigRead: (pci, register, size, options) =>
        access(IOREQ_TYPE_PCI_CONFIG, SimIoreqCore.pciAddress(pci, register), size, true, 0n, options),
      pciConfigWrite: async (pci, register, size, value, options) => {
        await access(
          IOREQ_TYPE_PCI_CONFIG,
          SimIoreqCore.pciAddress(pci, register),
          size,
          false,
          value,
          options,
        );
      },
      get blockedOn() {
        return core.pending().find((p) => p.domid === domid && p.vcpu === index);
      },
    };
  }

  vcpu(index: number): SimVcpu {
    const vcpu = this.vcpus[index];
    if (!vcpu) throw new RangeError(`domain ${this.domid} has no vCPU ${index}`);
    return vcpu;
  }

  async broadcastInvalidate(options?: SimAccessOptions): Promise<void> {
    await this.sim.ioreq.broadcast(this.domid, IOREQ_TYPE_INVALIDATE, options ?? {});
  }

  services(): XenServices {
    return this.sim.services(this.domid);
  }

  close(): void {
    this.memoryFile.close();
  }
}

class SimForeignMemory implements ForeignMemory {
  private readonly live = new Set<SimPageMapping>();

  constructor(
    private readonly sim: XenSimulatorImpl,
    private readonly domid: number,
  ) {}

  private mapping(domid: number, pages: SimPageMapping, count: number, writable: boolean): ForeignMapping {
    this.live.add(pages);
    let mapped = true;
    const live = this.live;
    return {
      domid,
      pages: count,
      writable,
      bytes: pages.bytes,
      get mapped() {
        return mapped;
      },
      unmap: () => {
        if (!mapped) throw new XenError('EINVAL', 'foreignmemory', 'unmap', 'address is not mapped');
        mapped = false;
        live.delete(pages);
        pages.unmap();
      },
    };
  }

  map(domid: number, frames: readonly bigint[], options: ForeignMapOptions): ForeignMapping {
    const caller = this.sim.lookup(this.domid);
    if (!caller?.privileged)
      throw new XenError('EPERM', 'foreignmemory', 'map', `domain ${this.domid} may not map foreign memory`);
    const target = this.sim.lookup(domid);
    if (!target) throw new XenError('ESRCH', 'foreignmemory', 'map', `no domain ${domid}`);
    if (frames.length === 0) throw new XenError('EINVAL', 'foreignmemory', 'map', 'no frames');
    const pageFrames: number[] = [];
    for (const [index, frame] of frames.entries()) {
      if (typeof frame !== 'bigint' || frame < 0n || frame >= BigInt(target.ramPages)) {
        throw new XenError(
          'EINVAL',
          'foreignmemory',
          'map',
          `frame ${String(frame)} (page ${index}) is not guest RAM`,
        );
      }
      pageFrames.push(Number(frame));
    }
    const pages = target.memoryFile.mapPages(pageFrames, options.writable);
    return this.mapping(domid, pages, frames.length, options.writable);
  }

  mapResource(domid: number, resource: ForeignResource, options: ForeignMapOptions): ForeignMapping {
    const target = this.sim.lookup(domid);
    if (!target) throw new XenError('ESRCH', 'foreignmemory', 'map_resource', `no domain ${domid}`);
    if (resource.type === 0) {
      const { file, frame } = this.sim.ioreq.resource(
        domid,
        resource.id,
        this.domid,
        resource.frame,
        resource.pages,
      );
      const pages = mapScattered(
        Array.from({ length: resource.pages }, (_, i) => ({ file, frame: frame + i })),
        options.writable,
      );
      return this.mapping(domid, pages, resource.pages, options.writable);
    }
    if (resource.type === 1) {
      const caller = this.sim.lookup(this.domid);
      if (!caller?.privileged)
        throw new XenError('EPERM', 'foreignmemory', 'map_resource', 'grant table of another domain');
      const frames = target.grantEntries / GRANT_ENTRIES_PER_PAGE;
      if (resource.frame < 0 || resource.pages < 1 || resource.frame + resource.pages > frames) {
        throw new XenError('EINVAL', 'foreignmemory', 'map_resource', 'grant-table frames out of range');
      }
      const pages = target.memoryFile.mapPages(
        Array.from({ length: resource.pages }, (_, i) => target.grantTableFrame + resource.frame + i),
        options.writable,
      );
      return this.mapping(domid, pages, resource.pages, options.writable);
    }
    throw new XenError('EOPNOTSUPP', 'foreignmemory', 'map_resource', `resource type ${resource.type}`);
  }

  close(): void {
    for (const pages of this.live) pages.unmap();
    this.live.clear();
  }
}

class SimDeviceModel implements DeviceModel {
  constructor(
    private readonly sim: XenSimulatorImpl,
    private readonly caller: number,
  ) {}

  private privileged(operation: string): void {
    if (!this.sim.lookup(this.caller)?.privileged) {
      throw new XenError(
        'EPERM',
        'devicemodel',
        operation,
        `domain ${this.caller} is not a device model domain`,
      );
    }
  }

  private target(domid: number, operation: string): SimDomainImpl {
    const domain = this.sim.lookup(domid);
    if (!domain) throw new XenError('ESRCH', 'devicemodel', operation, `no domain ${domid}`);
    return domain;
  }

  createIoreqServer(domid: number, bufioreq: BufferedIoreqMode): number {
    this.privileged('create_ioreq_server');
    return this.sim.ioreq.create(domid, this.caller, bufioreq);
  }

  getBufioreqPort(domid: number, id: number): number | undefined {
    return this.sim.ioreq.bufPort(domid, id, this.caller);
  }

  mapIoRange(domid: number, id: number, kind: IoRangeKind, start: bigint, end: bigint): void {
    this.sim.ioreq.mapRange(domid, id, this.caller, kind, start, end);
  }

  unmapIoRange(domid: number, id: number, kind: IoRangeKind, start: bigint, end: bigint): void {
    this.sim.ioreq.unmapRange(domid, id, this.caller, kind, start, end);
  }

  mapPciDevice(domid: number, id: number, pci: PciAddress): void {
    const sbdf = BigInt(pciSbdf(pci.segment, pci.bus, pci.device, pci.function));
    this.sim.ioreq.mapRange(domid, id, this.caller, 'pci', sbdf, sbdf);
  }

  unmapPciDevice(domid: number, id: number, pci: PciAddress): void {
    const sbdf = BigInt(pciSbdf(pci.segment, pci.bus, pci.device, pci.function));
    this.sim.ioreq.unmapRange(domid, id, this.caller, 'pci', sbdf, sbdf);
  }

  setIoreqServerState(domid: number, id: number, enabled: boolean): void {
    this.sim.ioreq.setState(domid, id, this.caller, enabled);
  }

  destroyIoreqServer(domid: number, id: number): void {
    this.sim.ioreq.destroy(domid, id, this.caller);
  }

  setPciIntxLevel(domid: number, pci: PciAddress, intx: number, level: number): void {
    this.privileged('set_pci_intx_level');
    const domain = this.target(domid, 'set_pci_intx_level');
    if (domain.type !== 'hvm')
      throw new XenError(
        'EOPNOTSUPP',
        'devicemodel',
        'set_pci_intx_level',
        `domain ${domid} is ${domain.type}`,
      );
    if (
      !Number.isInteger(intx) ||
      intx < 0 ||
      intx > 3 ||
      pci.device > 31 ||
      pci.function > 7 ||
      pci.bus > 255
    ) {
      throw new XenError('EINVAL', 'devicemodel', 'set_pci_intx_level', 'bad PCI address or INTx');
    }
    if (level !== 0 && level !== 1)
      throw new XenError('EINVAL', 'devicemodel', 'set_pci_intx_level', `level ${level}`);
    this.sim.raise({ kind: 'pci-intx', domid, pci: { ...pci }, intx, level });
  }

  setIsaIrqLevel(domid: number, irq: number, level: number): void {
    this.privileged('set_isa_irq_level');
    const domain = this.target(domid, 'set_isa_irq_level');
    if (domain.type !== 'hvm')
      throw new XenError(
        'EOPNOTSUPP',
        'devicemodel',
        'set_isa_irq_level',
        `domain ${domid} is ${domain.type}`,
      );
    if (!Number.isInteger(irq) || irq < 0 || irq > 15 || (level !== 0 && level !== 1)) {
      throw new XenError('EINVAL', 'devicemodel', 'set_isa_irq_level', `irq ${irq} level ${level}`);
    }
    this.sim.raise({ kind: 'isa-irq', domid, irq, level });
  }

  setIrqLevel(domid: number, irq: number, level: number): void {
    this.privileged('set_irq_level');
    const domain = this.target(domid, 'set_irq_level');
    // Arm only in Xen 4.17; x86 answers EOPNOTSUPP (observed).
    if (domain.type !== 'arm')
      throw new XenError('EOPNOTSUPP', 'devicemodel', 'set_irq_level', 'x86 has no set_irq_level');
    if (!Number.isInteger(irq) || irq < 32 || irq > 1019 || (level !== 0 && level !== 1)) {
      throw new XenError('EINVAL', 'devicemodel', 'set_irq_level', `irq ${irq} level ${level}`);
    }
    this.sim.raise({ kind: 'irq', domid, irq, level });
  }

  injectMsi(domid: number, address: bigint, data: number): void {
    this.privileged('inject_msi');
    const domain = this.target(domid, 'inject_msi');
    if (domain.type === 'pv' || domain.type === 'arm') {
      throw new XenError('EOPNOTSUPP', 'devicemodel', 'inject_msi', `domain ${domid} is ${domain.type}`);
    }
    if (!Number.isInteger(data) || data < 0 || data > 0xffffffff)
      throw new XenError('EINVAL', 'devicemodel', 'inject_msi', `data ${data}`);
    this.sim.raise({ kind: 'msi', domid, address, data });
  }

  nrVcpus(domid: number): number {
    return this.target(domid, 'nr_vcpus').vcpuCount;
  }

  close(): void {}
}

class XenSimulatorImpl implements XenSimulator {
  private readonly domains = new Map<number, SimDomainImpl>();
  readonly events: SimEventCore;
  readonly ioreq: SimIoreqCore;
  readonly xenstored: SimXenstored;
  readonly interrupts: InterruptEvent[] = [];
  interruptCount = 0;
  private readonly interruptListeners = new Set<(event: InterruptEvent) => void>();
  private readonly openServices = new Set<XenServices>();
  private readonly retired: SimDomainImpl[] = [];
  readonly dom0: SimDomain;

  constructor(options: XenSimulatorOptions) {
    this.events = new SimEventCore((domid) => this.domains.has(domid));
    this.ioreq = new SimIoreqCore(this.events, (domid) =>
      this.domains.get(domid) ? (this.domains.get(domid) as SimDomainImpl) : undefined,
    );
    this.xenstored = new SimXenstored(options.xenstored);
    this.dom0 = this.createDomain({
      ...options.dom0,
      domid: 0,
      privileged: true,
      name: options.dom0?.name ?? 'Domain-0',
    });
  }

  lookup(domid: number): SimDomainImpl | undefined {
    return this.domains.get(domid);
  }

  createDomain(options: SimDomainOptions = {}): SimDomain {
    let domid = options.domid;
    if (domid === undefined) {
      domid = 1;
      while (this.domains.has(domid)) domid++;
    }
    if (!Number.isInteger(domid) || domid < 0 || domid >= 0x7ff0)
      throw new XenError('EINVAL', 'sim', 'create_domain', `domid ${domid}`);
    if (this.domains.has(domid))
      throw new XenError('EEXIST', 'sim', 'create_domain', `domain ${domid} exists`);
    const memoryBytes = options.memoryBytes ?? DEFAULT_MEMORY;
    if (!Number.isInteger(memoryBytes) || memoryBytes <= 0 || memoryBytes % SIM_PAGE_SIZE !== 0) {
      throw new XenError(
        'EINVAL',
        'sim',
        'create_domain',
        `memory ${memoryBytes} is not a positive multiple of 4096`,
      );
    }
    const vcpus = options.vcpus ?? 1;
    if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > 128)
      throw new XenError('EINVAL', 'sim', 'create_domain', `vcpus ${vcpus}`);
    const grantFrames = options.grantFrames ?? 4;
    if (!Number.isInteger(grantFrames) || grantFrames < 1 || grantFrames > 64) {
      throw new XenError('EINVAL', 'sim', 'create_domain', `grant frames ${grantFrames}`);
    }
    const name = options.name ?? `domU-${domid}`;
    const domain = new SimDomainImpl(
      this,
      domid,
      name,
      options.type ?? 'hvm',
      vcpus,
      options.privileged ?? domid === 0,
      memoryBytes,
      grantFrames,
    );
    this.domains.set(domid, domain);
    this.xenstored.introduceDomain(domid, name);
    return domain;
  }

  domain(domid: number): SimDomain {
    const domain = this.domains.get(domid);
    if (!domain) throw new XenError('ESRCH', 'sim', 'domain', `no domain ${domid}`);
    return domain;
  }

  destroyDomain(domid: number): void {
    const domain = this.domains.get(domid);
    if (!domain) throw new XenError('ESRCH', 'sim', 'destroy_domain', `no domain ${domid}`);
    if (domid === 0) throw new XenError('EINVAL', 'sim', 'destroy_domain', 'dom0 cannot be destroyed');
    this.ioreq.destroyDomain(domid);
    // The dying domain's own handles go with it: Xen releases its mappings of other domains'
    // grants (gnttab_release_mappings), so their granters can end access, and its ports
    // (deliveries still scheduled to them are dropped).
    for (const services of this.openServices) {
      if (services.domid !== domid) continue;
      services.grants.close();
      services.events.close();
    }
    this.events.destroyDomain(domid);
    this.domains.delete(domid);
    // What `xl destroy` leaves in xenstore: libxl removes the domain's home, and xenstored
    // fires @releaseDomain once the hypervisor reports the domain dead.
    this.xenstored.releaseDomain(domid);
    // Mappings of its pages stay valid (the memfd pages live while mapped), as Xen keeps a
    // domain's pages until every foreign mapping is gone. The guest's own view of its memory
    // stays mapped until the simulator closes, so a test still holding `domain.memory` reads
    // stale memory rather than crashing the process.
    this.retired.push(domain);
  }

  services(domid = 0): XenServices {
    if (!this.domains.has(domid)) throw new XenError('ESRCH', 'sim', 'services', `no domain ${domid}`);
    const events = new SimEventChannels(this.events, domid);
    const grants = new SimGrantTables({ lookup: (id) => this.domains.get(id) }, domid);
    const foreignMemory = new SimForeignMemory(this, domid);
    const deviceModel = new SimDeviceModel(this, domid);
    const store = this.xenstored.connect(domid);
    const services: XenServices = {
      kind: 'sim',
      domid,
      store,
      events,
      grants,
      foreignMemory,
      deviceModel,
      close: async () => {
        this.openServices.delete(services);
        grants.close();
        foreignMemory.close();
        events.close();
        deviceModel.close();
        await store.close();
      },
    };
    this.openServices.add(services);
    return services;
  }

  raise(event: InterruptEvent): void {
    this.interruptCount++;
    this.interrupts.push(event);
    // Keep at least the last SIM_INTERRUPT_LOG_LIMIT; trim in bulk so a push stays O(1) amortised.
    if (this.interrupts.length >= 2 * SIM_INTERRUPT_LOG_LIMIT) {
      this.interrupts.splice(0, this.interrupts.length - SIM_INTERRUPT_LOG_LIMIT);
    }
    for (const listener of [...this.interruptListeners]) listener(event);
  }

  onInterrupt(listener: (event: InterruptEvent) => void): () => void {
    this.interruptListeners.add(listener);
    return () => this.interruptListeners.delete(listener);
  }

  eventChannelBits(domid: number, port: number): { pending: boolean; masked: boolean } | undefined {
    return this.events.bits(domid, port);
  }

  unansweredIoreqs(minAgeMs = 0): SimPendingIoreq[] {
    const now = Date.now();
    return this.ioreq.pending().filter((p) => now - p.since >= minAgeMs);
  }

  get stats() {
    return { eventsSent: this.events.sent, unclaimedAccesses: this.ioreq.unclaimed };
  }

  async close(): Promise<void> {
    for (const services of [...this.openServices]) await services.close();
    this.ioreq.close();
    for (const domid of [...this.domains.keys()]) {
      this.events.destroyDomain(domid);
      this.domains.get(domid)?.close();
    }
    this.domains.clear();
    for (const domain of this.retired.splice(0)) domain.close();
    await this.xenstored.close();
  }
}

/** Starts a simulated Xen with dom0. */
export function createXenSimulator(options: XenSimulatorOptions = {}): XenSimulator {
  return new XenSimulatorImpl(options);
}
