import type { BufferedIoreqMode, PciAddress } from './xen-device-model.js';

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
  claimMmio(start: bigint, length: bigint, handler: IoHandler<MmioRequest>): IoClaim;
  /** Claims I/O ports `[start, start + length)`. */
  claimPorts(start: number, length: number, handler: IoHandler<PortRequest>): IoClaim;
  /** Claims a PCI function's configuration space. */
  claimPciDevice(pci: PciAddress, handler: IoHandler<PciConfigRequest>): IoClaim;
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
}
