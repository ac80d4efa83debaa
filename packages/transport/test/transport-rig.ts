// One guest + one backend over any transport and memory strategy, for the matrix and the benchmark.
import type { GuestMemory } from '@xvio/grant-pool';
import type { IoreqServer, SimDomainType } from '@xvio/xen';
import type { MmioTransport } from '../src/mmio/index.js';
import type { PciTransport } from '../src/pci/index.js';
import {
  attachSimGuest,
  type GuestDma,
  type GuestVirtioDriver,
  type SimMemoryKind,
  type SimTransportKind,
} from '../src/testing/drivers/index.js';
import type { VirtioDevice } from '../src/virtio-device.js';
import type { XenbusBackend } from '../src/xenbus/index.js';
import { type SimFixture, simFixture, templateDevice } from './sim-fixtures.js';

export type TransportKind = SimTransportKind;
export type StrategyKind = SimMemoryKind;

export const TRANSPORTS: readonly TransportKind[] = ['mmio', 'pci', 'xenbus'];
export const STRATEGIES: readonly StrategyKind[] = ['foreign', 'grant-map', 'grant-copy', 'persistent-pool'];

/** Where attachSimGuest puts the first device. */
export const MMIO_BASE = 0x0200_0000n;
export const MMIO_SPI = 33;
export const PCI_FUNCTION = { segment: 0, bus: 0, device: 5, function: 0 };

/** The guest type each transport is tested on: MMIO as on Arm (libxl), PCI on x86 HVM, XenBus on PV. */
export const GUEST_TYPE: Record<TransportKind, SimDomainType> = { mmio: 'arm', pci: 'hvm', xenbus: 'pv' };

export interface Rig {
  readonly fixture: SimFixture;
  readonly device: VirtioDevice;
  readonly memory: GuestMemory;
  readonly dma: GuestDma;
  driver: GuestVirtioDriver;
  readonly transport: MmioTransport | PciTransport | XenbusBackend;
  /** Loads the guest driver again (after `driver.remove()`). */
  probe(): Promise<GuestVirtioDriver>;
  close(): Promise<void>;
}

export interface RigOptions {
  readonly device?: VirtioDevice;
  /** PCI: MSI-X (default) or INTx. */
  readonly msix?: boolean;
  /** MMIO on an x86 HVM guest gets an MSI instead of an Arm SPI. */
  readonly guestType?: SimDomainType;
  /** Do not probe the guest driver. */
  readonly noProbe?: boolean;
  /** The guest negotiates VIRTIO_F_EVENT_IDX (default true, as Linux). */
  readonly eventIdx?: boolean;
}

export async function createRig(
  transport: TransportKind,
  strategy: StrategyKind,
  options: RigOptions = {},
): Promise<Rig> {
  const base = await simFixture(options.guestType ?? GUEST_TYPE[transport], { ioreq: false });
  const device = options.device ?? templateDevice();
  const attached = await attachSimGuest({
    sim: base.sim,
    guest: base.guest,
    backend: base.dom0,
    transport,
    memory: strategy,
    devices: [device],
    probe: false,
    ...(options.msix !== undefined ? { msix: options.msix } : {}),
    ...(options.eventIdx !== undefined ? { eventIdx: options.eventIdx } : {}),
  });
  const entry = attached.devices[0]!;
  const fixture: SimFixture = { ...base, server: attached.server as IoreqServer };
  const probe = async () => {
    rig.driver = await entry.probe();
    return rig.driver;
  };
  const rig: Rig = {
    fixture,
    device,
    memory: entry.memory,
    dma: entry.dma,
    transport: entry.transport,
    driver: undefined as unknown as GuestVirtioDriver,
    probe,
    close: async () => {
      await attached.close();
      await base.close();
    },
  };
  if (!options.noProbe) await rig.probe();
  return rig;
}
