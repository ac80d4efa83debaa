import type { BufferedIoreqMode, DeviceModel, PciAddress } from './xen-device-model.js';
import { XenError } from './xen-errors.js';
import type { EventChannel, EventChannels } from './xen-event-channels.js';
import type { ForeignMapping, ForeignMemory } from './xen-foreign-memory.js';
import {
  BUF_IOREQ_SIZE,
  BUFFERED_IOPAGE_READ_POINTER,
  BUFFERED_IOPAGE_SLOTS,
  BUFFERED_IOPAGE_WRITE_POINTER,
  IOREQ_BUFFER_SLOT_NUM,
  IOREQ_DATA,
  IOREQ_TYPE_COPY,
  IOREQ_TYPE_INVALIDATE,
  IOREQ_TYPE_PCI_CONFIG,
  IOREQ_TYPE_PIO,
  IOREQ_TYPE_TIMEOFFSET,
  IOREQ_VP_EPORT,
  type IoreqFields,
  ioreqOffset,
  pciSbdf,
  readBufIoreq,
  readIoreq,
  readIoreqState,
  resourceFrameIoreq,
  SHARED_IOPAGE_MAX_VCPUS,
  STATE_IOREQ_INPROCESS,
  STATE_IOREQ_READY,
  STATE_IORESP_READY,
  splitSbdf,
  writeIoreqState,
  XENMEM_RESOURCE_IOREQ_SERVER,
  XENMEM_RESOURCE_IOREQ_SERVER_FRAME_BUFIOREQ,
} from './xen-ioreq-wire.js';

/**
 * A guest I/O access forwarded by Xen to an ioreq server. Everything here came from the
 * guest: handlers bound what they read (`offset`, `size`) before using it.
 */
export interface IoRequestBase {
  readonly direction: 'read' | 'write';
  /** Access size in bytes. Xen sends 1, 2, 4 or 8; a handler must cope with any. */
  readonly size: number;
  /** For writes: the value, masked to `size`. For reads: 0n. */
  readonly value: bigint;
  /** The vCPU that is blocked until this request is answered (-1 for a buffered write). */
  readonly vcpu: number;
  /** True for a buffered (posted) write: no answer is expected and the vCPU did not wait. */
  readonly buffered: boolean;
}

export interface MmioRequest extends IoRequestBase {
  readonly kind: 'mmio';
  /** Guest-physical address. */
  readonly address: bigint;
  /** Address minus the start of the claimed range. */
  readonly offset: number;
}

export interface PortRequest extends IoRequestBase {
  readonly kind: 'port';
  readonly port: number;
  /** Port minus the start of the claimed range. */
  readonly offset: number;
}

export interface PciConfigRequest extends IoRequestBase {
  readonly kind: 'pci-config';
  readonly pci: PciAddress;
  /** Config-space register offset (0..4095). */
  readonly register: number;
}

export type IoRequest = MmioRequest | PortRequest | PciConfigRequest;

/**
 * Answers one request. For a read, return the value (only the low `size` bytes are used;
 * `undefined` reads as all ones, like an unassigned bus). For a write the return value is
 * ignored. A promise keeps the vCPU blocked until it settles, as on Xen; a handler that
 * throws or rejects answers all ones and is reported through `onError`.
 */
export type IoHandler<R extends IoRequest = IoRequest> = (
  request: R,
) => bigint | number | undefined | Promise<bigint | number | undefined>;

/** A claimed range or PCI function; `close` gives it back to Xen (unmap from the server). */
export interface IoClaim {
  close(): void;
}

export interface ClaimOptions {
  /**
   * The range is already mapped to this server in Xen (an adopted server keeps the ranges its
   * previous owner claimed): route it here without XEN_DMOP_map_io_range_to_ioreq_server, so no
   * guest access falls through to another device model while the owner changes.
   */
  readonly adopt?: boolean;
}

export interface IoreqServerStats {
  /** Requests answered (every type, including INVALIDATE). */
  answered: number;
  /** IOREQ_TYPE_INVALIDATE broadcasts seen. */
  invalidates: number;
  /** Buffered writes consumed from the buffered ring. */
  buffered: number;
  /** Requests for an address no claim covers (answered all ones). */
  unclaimed: number;
  /** Handlers that threw or rejected. */
  handlerErrors: number;
  /** Requests with data_is_ptr or count > 1 that are not supported (answered all ones). */
  unsupported: number;
  /** Slots found in a state the protocol does not allow (counted, ignored). */
  protocolErrors: number;
  /** Requests an adopted server found waiting when enabled (their vCPUs were blocked meanwhile). */
  resumed: number;
  /** Of those, requests the previous owner had taken (IOREQ_INPROCESS) and never answered. */
  orphaned: number;
}

export interface IoreqServerOptions {
  readonly domid: number;
  /** Buffered ioreqs (default 'off'; 'atomic' to receive posted writes). */
  readonly bufioreq?: BufferedIoreqMode;
  /** Called for handler failures and protocol errors; the server keeps running. */
  readonly onError?: (error: Error, request: IoRequest | undefined) => void;
}

/**
 * An ioreq server for one domain: a device model's end of trapped guest I/O.
 * Life cycle: create -> claim ranges -> `enable()` -> serve -> `close()`.
 * Every ioreq is answered, including the INVALIDATE broadcast Xen sends to all servers: an
 * unanswered ioreq blocks that vCPU forever, even after the server is destroyed.
 */
export interface IoreqServer {
  readonly domid: number;
  /** Xen's ioreq server id. */
  readonly id: number;
  readonly vcpus: number;
  readonly stats: Readonly<IoreqServerStats>;
  /** Claims guest-physical `[start, start + length)` for MMIO. */
  claimMmio(start: bigint, length: bigint, handler: IoHandler<MmioRequest>, options?: ClaimOptions): IoClaim;
  /** Claims I/O ports `[start, start + length)`. */
  claimPorts(start: number, length: number, handler: IoHandler<PortRequest>, options?: ClaimOptions): IoClaim;
  /** Claims a PCI function's configuration space. */
  claimPciDevice(pci: PciAddress, handler: IoHandler<PciConfigRequest>, options?: ClaimOptions): IoClaim;
  /** XEN_DMOP_set_ioreq_server_state(1). */
  enable(): void;
  /** XEN_DMOP_set_ioreq_server_state(0). */
  disable(): void;
  /** Interrupts for this domain (through the DeviceModel). */
  setPciIntxLevel(pci: PciAddress, intx: number, level: number): void;
  setIsaIrqLevel(irq: number, level: number): void;
  setIrqLevel(irq: number, level: number): void;
  injectMsi(address: bigint, data: number): void;
  /** Requests currently being handled (a promise not yet settled), by vCPU. */
  inFlight(): number[];
  /** Disables, unclaims, unbinds the event channels, unmaps the pages and destroys the server. */
  close(): Promise<void>;
  /**
   * Lets go of the server without touching it in Xen: unbinds the event channels and unmaps
   * the pages, leaving the server, its claims and any request a vCPU waits on as they are
   * (what an exiting process leaves behind). `adoptIoreqServer` takes it over. Idempotent.
   */
  abandon(): void;
  /** True for a server taken over with `adoptIoreqServer`. */
  readonly adopted: boolean;
}

// ---------------------------------------------------------------------------------------
// The implementation, shared by the native and simulated services: it only touches the
// ioreq pages through ForeignMemory, the doorbells through EventChannels and the claims
// through DeviceModel, so the simulator exercises exactly the code real Xen runs.

/** The services an ioreq server needs (a `XenServices` has them all). */
export interface IoreqServerServices {
  readonly deviceModel: DeviceModel;
  readonly foreignMemory: ForeignMemory;
  readonly events: EventChannels;
}

interface MmioClaim {
  readonly start: bigint;
  readonly end: bigint;
  readonly handler: IoHandler<MmioRequest>;
}

interface PortClaim {
  readonly start: number;
  readonly end: number;
  readonly handler: IoHandler<PortRequest>;
}

// Ordering between our loads/stores of the shared page and Xen's on another CPU: an
// Atomics operation is a full barrier for V8 and, for stores, a locked instruction on x86.
const fenceCell = new Int32Array(new SharedArrayBuffer(4));
function barrier(): void {
  Atomics.store(fenceCell, 0, 0);
}

function maskFor(size: number): bigint {
  const bytes = Math.min(Math.max(size, 0), 8);
  return bytes === 8 ? 0xffff_ffff_ffff_ffffn : (1n << BigInt(bytes * 8)) - 1n;
}

function toValue(result: bigint | number | undefined, size: number): bigint {
  if (result === undefined) return maskFor(size);
  const value = typeof result === 'bigint' ? result : BigInt(Math.trunc(result));
  return BigInt.asUintN(64, value) & maskFor(size);
}

class IoreqServerImpl implements IoreqServer {
  readonly domid: number;
  readonly id: number;
  readonly vcpus: number;
  readonly adopted: boolean;
  readonly stats: IoreqServerStats = {
    answered: 0,
    invalidates: 0,
    buffered: 0,
    unclaimed: 0,
    handlerErrors: 0,
    unsupported: 0,
    protocolErrors: 0,
    resumed: 0,
    orphaned: 0,
  };
  private readonly page: ForeignMapping;
  private readonly view: DataView;
  private readonly bufPage: ForeignMapping | undefined;
  private readonly bufView: DataView | undefined;
  private readonly channels: EventChannel[] = [];
  private bufChannel: EventChannel | undefined;
  private readonly busy = new Set<number>();
  private readonly mmio: MmioClaim[] = [];
  private readonly ports: PortClaim[] = [];
  private readonly pci = new Map<number, IoHandler<PciConfigRequest>>();
  private closed = false;

  constructor(
    private readonly services: IoreqServerServices,
    private readonly options: IoreqServerOptions,
    adoptId?: number,
  ) {
    const { deviceModel, foreignMemory, events } = services;
    this.domid = options.domid;
    this.adopted = adoptId !== undefined;
    // An adopted server keeps the buffered mode it was created with: Xen tells whether it has
    // a buffered page by giving its port (XEN_DMOP_get_ioreq_server_info, which also fails
    // with ENOENT for no such server and EPERM for a server another domain emulates).
    const adoptedBufPort =
      adoptId === undefined ? undefined : deviceModel.getBufioreqPort(this.domid, adoptId);
    const bufioreq =
      adoptId === undefined ? (options.bufioreq ?? 'off') : adoptedBufPort === undefined ? 'off' : 'atomic';
    this.vcpus = deviceModel.nrVcpus(this.domid);
    if (this.vcpus > SHARED_IOPAGE_MAX_VCPUS) {
      throw new XenError(
        'EOPNOTSUPP',
        'devicemodel',
        'create_ioreq_server',
        `${this.vcpus} vCPUs need more than one ioreq page`,
      );
    }
    this.id = adoptId ?? deviceModel.createIoreqServer(this.domid, bufioreq);
    try {
      this.page = foreignMemory.mapResource(
        this.domid,
        { type: XENMEM_RESOURCE_IOREQ_SERVER, id: this.id, frame: resourceFrameIoreq(0), pages: 1 },
        { writable: true },
      );
      this.view = new DataView(
        this.page.bytes.buffer,
        this.page.bytes.byteOffset,
        this.page.bytes.byteLength,
      );
      if (bufioreq !== 'off') {
        this.bufPage = foreignMemory.mapResource(
          this.domid,
          {
            type: XENMEM_RESOURCE_IOREQ_SERVER,
            id: this.id,
            frame: XENMEM_RESOURCE_IOREQ_SERVER_FRAME_BUFIOREQ,
            pages: 1,
          },
          { writable: true },
        );
        this.bufView = new DataView(
          this.bufPage.bytes.buffer,
          this.bufPage.bytes.byteOffset,
          this.bufPage.bytes.byteLength,
        );
        const bufPort = adoptedBufPort ?? deviceModel.getBufioreqPort(this.domid, this.id);
        if (bufPort !== undefined) {
          this.bufChannel = events.bindInterdomain(this.domid, bufPort);
          this.bufChannel.onEvent(() => this.drainBuffered());
        }
      }
    } catch (error) {
      if (this.adopted) this.unbindAndUnmap();
      else this.release();
      throw error;
    }
  }

  claimMmio(
    start: bigint,
    length: bigint,
    handler: IoHandler<MmioRequest>,
    options: ClaimOptions = {},
  ): IoClaim {
    if (length <= 0n || start < 0n) throw new XenError('EINVAL', 'devicemodel', 'claim_mmio', 'empty range');
    const end = start + length - 1n;
    if (this.mmio.some((c) => c.start <= end && start <= c.end)) {
      throw new XenError('EEXIST', 'devicemodel', 'claim_mmio', 'overlaps a claimed range');
    }
    if (!options.adopt) this.services.deviceModel.mapIoRange(this.domid, this.id, 'memory', start, end);
    const claim: MmioClaim = { start, end, handler };
    this.mmio.push(claim);
    return this.claimHandle(() => {
      this.mmio.splice(this.mmio.indexOf(claim), 1);
      this.services.deviceModel.unmapIoRange(this.domid, this.id, 'memory', start, end);
    });
  }

  claimPorts(
    start: number,
    length: number,
    handler: IoHandler<PortRequest>,
    options: ClaimOptions = {},
  ): IoClaim {
    const end = start + length - 1;
    if (!Number.isInteger(start) || !Number.isInteger(length) || length <= 0 || start < 0 || end > 0xffff) {
      throw new XenError('EINVAL', 'devicemodel', 'claim_ports', 'ports must lie in 0..0xffff');
    }
    if (this.ports.some((c) => c.start <= end && start <= c.end)) {
      throw new XenError('EEXIST', 'devicemodel', 'claim_ports', 'overlaps a claimed range');
    }
    if (!options.adopt)
      this.services.deviceModel.mapIoRange(this.domid, this.id, 'port', BigInt(start), BigInt(end));
    const claim: PortClaim = { start, end, handler };
    this.ports.push(claim);
    return this.claimHandle(() => {
      this.ports.splice(this.ports.indexOf(claim), 1);
      this.services.deviceModel.unmapIoRange(this.domid, this.id, 'port', BigInt(start), BigInt(end));
    });
  }

  claimPciDevice(pci: PciAddress, handler: IoHandler<PciConfigRequest>, options: ClaimOptions = {}): IoClaim {
    const sbdf = pciSbdf(pci.segment, pci.bus, pci.device, pci.function);
    if (this.pci.has(sbdf))
      throw new XenError('EEXIST', 'devicemodel', 'claim_pci', 'function already claimed');
    if (!options.adopt) this.services.deviceModel.mapPciDevice(this.domid, this.id, pci);
    this.pci.set(sbdf, handler);
    return this.claimHandle(() => {
      this.pci.delete(sbdf);
      this.services.deviceModel.unmapPciDevice(this.domid, this.id, pci);
    });
  }

  private claimHandle(undo: () => void): IoClaim {
    let open = true;
    return {
      close: () => {
        if (!open || this.closed) return;
        open = false;
        undo();
      },
    };
  }

  enable(): void {
    this.services.deviceModel.setIoreqServerState(this.domid, this.id, true);
    if (this.channels.length > 0) return;
    // Xen writes each vCPU's port (vp_eport) into the shared page when the server is
    // enabled, not when it is created (seen on Xen 4.17: binding the port read before
    // XEN_DMOP_set_ioreq_server_state fails with EINVAL). An ioreq raised between enabling
    // and binding found no listener, so look at every slot once after binding.
    for (let vcpu = 0; vcpu < this.vcpus; vcpu++) {
      const port = this.view.getUint32(ioreqOffset(vcpu) + IOREQ_VP_EPORT, true);
      const channel = this.services.events.bindInterdomain(this.domid, port);
      channel.onEvent(() => this.service(vcpu));
      this.channels.push(channel);
    }
    // A slot left IOREQ_INPROCESS was taken by a previous owner that never answered (it
    // exited mid-request): its vCPU still waits, so it is handled again here.
    for (let vcpu = 0; vcpu < this.vcpus; vcpu++) this.service(vcpu, true);
  }

  disable(): void {
    this.services.deviceModel.setIoreqServerState(this.domid, this.id, false);
  }

  setPciIntxLevel(pci: PciAddress, intx: number, level: number): void {
    this.services.deviceModel.setPciIntxLevel(this.domid, pci, intx, level);
  }

  setIsaIrqLevel(irq: number, level: number): void {
    this.services.deviceModel.setIsaIrqLevel(this.domid, irq, level);
  }

  setIrqLevel(irq: number, level: number): void {
    this.services.deviceModel.setIrqLevel(this.domid, irq, level);
  }

  injectMsi(address: bigint, data: number): void {
    this.services.deviceModel.injectMsi(this.domid, address, data);
  }

  inFlight(): number[] {
    return [...this.busy];
  }

  private report(error: unknown, request: IoRequest | undefined): void {
    const wrapped = error instanceof Error ? error : new Error(String(error));
    this.options.onError?.(wrapped, request);
  }

  /** The vCPU's port fired: handle its slot if Xen published a request. */
  private service(vcpu: number, sweep = false): void {
    if (this.closed) return;
    const offset = ioreqOffset(vcpu);
    const state = readIoreqState(this.view, offset);
    // A kick without STATE_IOREQ_READY is a duplicate or stale notification; the slot may be ours already.
    const orphan = sweep && state === STATE_IOREQ_INPROCESS && !this.busy.has(vcpu);
    if (state !== STATE_IOREQ_READY && !orphan) return;
    if (orphan) this.stats.orphaned++;
    if (sweep && this.adopted) this.stats.resumed++;
    if (this.busy.has(vcpu)) {
      this.stats.protocolErrors++;
      return;
    }
    barrier();
    const fields = readIoreq(this.view, offset);
    writeIoreqState(this.view, offset, STATE_IOREQ_INPROCESS);
    this.busy.add(vcpu);
    let request: IoRequest | undefined;
    const finish = (value: bigint) => {
      this.busy.delete(vcpu);
      if (this.closed) return;
      if (fields.dirRead) this.view.setBigUint64(offset + IOREQ_DATA, value, true);
      barrier();
      writeIoreqState(this.view, offset, STATE_IORESP_READY);
      this.stats.answered++;
      (this.channels[vcpu] as EventChannel).notify();
    };
    try {
      const outcome = this.dispatch(fields, vcpu, (built) => {
        request = built;
      });
      if (outcome instanceof Promise) {
        outcome.then(
          (result) => finish(toValue(result, fields.size)),
          (error: unknown) => {
            this.stats.handlerErrors++;
            this.report(error, request);
            finish(maskFor(fields.size));
          },
        );
      } else {
        finish(outcome === NO_ANSWER ? 0n : toValue(outcome, fields.size));
      }
    } catch (error) {
      this.stats.handlerErrors++;
      this.report(error, request);
      finish(maskFor(fields.size));
    }
  }

  /** Routes one ioreq to its claim. Returns the handler's result (or NO_ANSWER for requests without data). */
  private dispatch(
    fields: IoreqFields,
    vcpu: number,
    built: (request: IoRequest) => void,
  ): bigint | number | undefined | typeof NO_ANSWER | Promise<bigint | number | undefined> {
    if (fields.type === IOREQ_TYPE_INVALIDATE) {
      this.stats.invalidates++;
      return NO_ANSWER;
    }
    if (fields.type === IOREQ_TYPE_TIMEOFFSET) return NO_ANSWER;
    if (fields.dataIsPtr || fields.count !== 1) {
      // rep string I/O through guest memory: not used by virtio transports.
      this.stats.unsupported++;
      return undefined;
    }
    const direction = fields.dirRead ? 'read' : 'write';
    const value = fields.dirRead ? 0n : fields.data & maskFor(fields.size);
    const base = { direction, size: fields.size, value, vcpu, buffered: false } as const;
    return this.route(fields.type, fields.addr, base, built);
  }

  private route(
    type: number,
    addr: bigint,
    base: IoRequestBase,
    built: (request: IoRequest) => void,
  ): bigint | number | undefined | Promise<bigint | number | undefined> {
    if (type === IOREQ_TYPE_COPY) {
      const last = addr + BigInt(Math.max(base.size, 1)) - 1n;
      const claim = this.mmio.find((c) => addr >= c.start && last <= c.end);
      if (claim) {
        const request: MmioRequest = {
          ...base,
          kind: 'mmio',
          address: addr,
          offset: Number(addr - claim.start),
        };
        built(request);
        return claim.handler(request);
      }
    } else if (type === IOREQ_TYPE_PIO) {
      const port = Number(addr & 0xffffn);
      const claim = this.ports.find((c) => port >= c.start && port + Math.max(base.size, 1) - 1 <= c.end);
      if (claim) {
        const request: PortRequest = { ...base, kind: 'port', port, offset: port - claim.start };
        built(request);
        return claim.handler(request);
      }
    } else if (type === IOREQ_TYPE_PCI_CONFIG) {
      const sbdf = Number(addr >> 32n);
      const handler = this.pci.get(sbdf);
      if (handler) {
        const request: PciConfigRequest = {
          ...base,
          kind: 'pci-config',
          pci: splitSbdf(sbdf),
          register: Number(addr & 0xfffn),
        };
        built(request);
        return handler(request);
      }
    } else {
      this.stats.unsupported++;
      return undefined;
    }
    this.stats.unclaimed++;
    return undefined;
  }

  /** Consumes the buffered ring: posted writes, in order, no answers. */
  private drainBuffered(): void {
    const view = this.bufView;
    if (this.closed || !view) return;
    let read = view.getUint32(BUFFERED_IOPAGE_READ_POINTER, true);
    const write = view.getUint32(BUFFERED_IOPAGE_WRITE_POINTER, true);
    barrier();
    if ((write - read) >>> 0 > IOREQ_BUFFER_SLOT_NUM) {
      // A ring Xen would never produce: skip it rather than loop over garbage.
      this.stats.protocolErrors++;
      view.setUint32(BUFFERED_IOPAGE_READ_POINTER, write, true);
      return;
    }
    while (read !== write) {
      const slot = readBufIoreq(
        view,
        BUFFERED_IOPAGE_SLOTS + (read % IOREQ_BUFFER_SLOT_NUM) * BUF_IOREQ_SIZE,
      );
      let value = BigInt(slot.data);
      let used = 1;
      if (slot.size === 8) {
        const high = readBufIoreq(
          view,
          BUFFERED_IOPAGE_SLOTS + ((read + 1) % IOREQ_BUFFER_SLOT_NUM) * BUF_IOREQ_SIZE,
        );
        value |= BigInt(high.data) << 32n;
        used = 2;
      }
      const base: IoRequestBase = {
        direction: 'write',
        size: slot.size,
        value: value & maskFor(slot.size),
        vcpu: -1,
        buffered: true,
      };
      let request: IoRequest | undefined;
      try {
        const outcome = this.route(slot.type, BigInt(slot.addr), base, (built) => {
          request = built;
        });
        if (outcome instanceof Promise) {
          outcome.catch((error: unknown) => {
            this.stats.handlerErrors++;
            this.report(error, request);
          });
        }
      } catch (error) {
        this.stats.handlerErrors++;
        this.report(error, request);
      }
      this.stats.buffered++;
      read = (read + used) >>> 0;
    }
    barrier();
    view.setUint32(BUFFERED_IOPAGE_READ_POINTER, read, true);
  }

  private unbindAndUnmap(): void {
    for (const channel of this.channels) channel.close();
    this.bufChannel?.close();
    if (this.page?.mapped) this.page.unmap();
    if (this.bufPage?.mapped) this.bufPage.unmap();
  }

  private release(): void {
    this.unbindAndUnmap();
    try {
      this.services.deviceModel.destroyIoreqServer(this.domid, this.id);
    } catch (error) {
      this.report(error, undefined);
    }
  }

  abandon(): void {
    if (this.closed) return;
    this.closed = true;
    this.unbindAndUnmap();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    try {
      this.disable();
    } catch (error) {
      this.report(error, undefined);
    }
    this.closed = true;
    this.release();
  }
}

const NO_ANSWER = Symbol('no-answer');

/**
 * Creates an ioreq server for `options.domid`, maps its pages and binds its vCPU ports.
 * Claim ranges, then `enable()`.
 */
export function createIoreqServer(services: IoreqServerServices, options: IoreqServerOptions): IoreqServer {
  return new IoreqServerImpl(services, options);
}

/**
 * Takes over the ioreq server `id` of `options.domid` that another process of this domain
 * created (Xen keeps a server until its emulating domain destroys it, whatever becomes of the
 * process): maps its pages, and on `enable()` binds its vCPU ports again and answers every
 * request a vCPU waits on, including one its previous owner took and never answered. Claims
 * the previous owner made stay in Xen: register their handlers with `{ adopt: true }`.
 * Throws `XenError` `ENOENT` (no such server) or `EPERM` (another domain emulates it).
 */
export function adoptIoreqServer(
  services: IoreqServerServices,
  options: IoreqServerOptions & { readonly id: number },
): IoreqServer {
  return new IoreqServerImpl(services, options, options.id);
}
