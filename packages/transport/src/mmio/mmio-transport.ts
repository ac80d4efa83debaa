import type { GuestMemory } from '@xvio/grant-pool';
import type { IoClaim, IoreqServer, MmioRequest } from '@xvio/xen';
import { DeviceController } from '../device-controller.js';
import type { VirtioDevice } from '../virtio-device.js';
import { VIRTIO_F_RING_PACKED } from '../virtio-features.js';
import { InterruptLine, type InterruptRoute } from './mmio-interrupt.js';
import { type MmioCounters, MmioRegisters } from './mmio-registers.js';
import { MMIO_WINDOW_SIZE } from './mmio-wire.js';

export interface MmioTransportOptions {
  /** The ioreq server of the guest (one per guest, shared by its devices; the caller enables it). */
  readonly server: IoreqServer;
  readonly device: VirtioDevice;
  /** Guest memory as this device reaches it (foreign mapping, grants, ...). One per device. */
  readonly memory: GuestMemory;
  /** Guest-physical base of the 0x200 window (libxl on Arm: 0x02000000 + 0x200 * n). */
  readonly base: bigint;
  readonly interrupt: InterruptRoute;
  /** Platform features, e.g. VIRTIO_F_ACCESS_PLATFORM when buffers are grant addresses. */
  readonly platformFeatures?: bigint;
  /** Offer packed rings (default true). */
  readonly packed?: boolean;
  /** Host faults (interrupt hypercalls that failed) and guest faults that set NEEDS_RESET. */
  readonly onError?: (error: unknown) => void;
  /** Called after every Status write (e.g. to tell the toolstack the driver is up). */
  readonly onStatus?: (status: number) => void;
}

/**
 * A virtio device behind a virtio-mmio window (spec 4.2, version 2) served through an ioreq
 * server's MMIO claim: every register access of the guest traps to us, is answered, and the
 * vCPU resumes. Life cycle: `new` (claims the window) -> traffic -> `close`.
 */
export class MmioTransport {
  readonly controller: DeviceController;
  readonly registers: MmioRegisters;
  readonly interrupt: InterruptLine;
  readonly base: bigint;
  private claim: IoClaim | undefined;
  private readonly onError: ((error: unknown) => void) | undefined;

  constructor(options: MmioTransportOptions) {
    this.base = options.base;
    this.onError = options.onError;
    this.interrupt = new InterruptLine(options.server, options.interrupt, options.onError);
    const controllerOptions = {
      memory: options.memory,
      hooks: {
        interruptQueue: () => this.registers.interruptQueue(),
        interruptConfig: () => this.registers.interruptConfig(),
      },
      transportMask: options.packed === false ? VIRTIO_F_RING_PACKED : 0n,
      platformFeatures: options.platformFeatures ?? 0n,
      ...(options.onError ? { onFault: options.onError } : {}),
    };
    this.controller = new DeviceController(options.device, controllerOptions);
    this.registers = new MmioRegisters(this.controller, {
      raise: () => this.interrupt.raise(),
      lower: () => this.interrupt.lower(),
      ...(options.onStatus ? { statusChanged: options.onStatus } : {}),
    });
    this.claim = options.server.claimMmio(options.base, BigInt(MMIO_WINDOW_SIZE), (request) =>
      this.handle(request),
    );
  }

  get counters(): Readonly<MmioCounters> {
    return this.registers.counters;
  }

  private handle(request: MmioRequest): bigint | undefined {
    // The claim is exactly one window, so `offset` is in 0..0x1ff; an access that straddles
    // the window's end is not routed to us by Xen (hvm_select_ioreq_server checks the end).
    if (request.direction === 'read') return this.registers.read(request.offset, request.size);
    this.registers.write(request.offset, request.size, request.value);
    return undefined;
  }

  /** Resets the device, lowers the line and gives the window back to Xen. Idempotent. */
  close(): void {
    if (!this.claim) return;
    const claim = this.claim;
    this.claim = undefined;
    // When the guest is gone, Xen has destroyed the ioreq server with the domain and giving the
    // window back fails (ENOENT, seen on real Xen after a guest powered off): report it, but
    // never skip the reset that unmaps guest memory (a mapping kept holds the dead domain).
    try {
      claim.close();
    } catch (error) {
      this.onError?.(error);
    }
    this.controller.reset();
    this.interrupt.lower();
  }

  get closed(): boolean {
    return this.claim === undefined;
  }
}
