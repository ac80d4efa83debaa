import type { IoreqServer, PciAddress } from '@xvio/xen';

/**
 * How a transport raises its interrupt in the guest. A virtio-mmio device has one line
 * (4.2.3.4: "the device raises an interrupt" and InterruptStatus says why).
 * - `spi`: an Arm GIC SPI through XEN_DMOP_set_irq_level (libxl's virtio-mmio: SPIs 33-43).
 * - `isa` / `pci-intx`: x86 HVM level-triggered lines (set_isa_irq_level / set_pci_intx_level).
 * - `msi`: x86 HVM or PVH through XEN_DMOP_inject_msi; edge-triggered, one message per event.
 * - `none`: the guest polls (tests and benchmarks of register cost).
 */
export type InterruptRoute =
  | { readonly kind: 'spi'; readonly irq: number }
  | { readonly kind: 'isa'; readonly irq: number }
  | { readonly kind: 'pci-intx'; readonly pci: PciAddress; readonly intx: number }
  | { readonly kind: 'msi'; readonly address: bigint; readonly data: number }
  | { readonly kind: 'none' };

/**
 * A level-or-edge interrupt line over an ioreq server. `raise` is called for each event,
 * `lower` when the driver acknowledged everything. Level routes only call Xen on a change;
 * an MSI route sends one message per `raise` (an MSI is an edge).
 */
export class InterruptLine {
  private asserted = false;
  /** Hypercalls made, and those that failed (a host fault: counted, reported, never thrown at the guest). */
  readonly counters = { raised: 0, lowered: 0, failures: 0 };

  constructor(
    private readonly server: Pick<
      IoreqServer,
      'setIrqLevel' | 'setIsaIrqLevel' | 'setPciIntxLevel' | 'injectMsi'
    >,
    readonly route: InterruptRoute,
    private readonly onError?: (error: unknown) => void,
  ) {}

  get level(): boolean {
    return this.asserted;
  }

  raise(): void {
    if (this.route.kind === 'msi') {
      this.asserted = true;
      this.call(() => {
        const route = this.route as Extract<InterruptRoute, { kind: 'msi' }>;
        this.server.injectMsi(route.address, route.data);
      });
      this.counters.raised++;
      return;
    }
    if (this.asserted) return;
    this.asserted = true;
    this.counters.raised++;
    this.set(1);
  }

  lower(): void {
    if (!this.asserted) return;
    this.asserted = false;
    this.counters.lowered++;
    if (this.route.kind !== 'msi') this.set(0);
  }

  private set(level: number): void {
    const route = this.route;
    this.call(() => {
      switch (route.kind) {
        case 'spi':
          this.server.setIrqLevel(route.irq, level);
          break;
        case 'isa':
          this.server.setIsaIrqLevel(route.irq, level);
          break;
        case 'pci-intx':
          this.server.setPciIntxLevel(route.pci, route.intx, level);
          break;
        default:
          break;
      }
    });
  }

  private call(body: () => void): void {
    try {
      body();
    } catch (error) {
      this.counters.failures++;
      this.onError?.(error);
    }
  }
}
