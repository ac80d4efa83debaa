// One guest + one backend over any transport and memory strategy, for the matrix and the benchmark.
import {
  createForeignMappingMemory,
  createGrantCopyMemory,
  createGrantMapMemory,
  createPersistentPoolMemory,
  type GuestMemory,
} from '@xvio/grant-pool';
import type { SimDomainType } from '@xvio/xen';
import { MmioTransport } from '../src/mmio/index.js';
import { PciTransport } from '../src/pci/index.js';
import {
  type GuestDma,
  type GuestVirtioDriver,
  grantDma,
  MmioGuestDriver,
  PciGuestDriver,
  physicalDma,
  poolDma,
  XenbusGuestDriver,
} from '../src/testing/drivers/index.js';
import type { VirtioDevice } from '../src/virtio-device.js';
import { VIRTIO_F_ACCESS_PLATFORM } from '../src/virtio-features.js';
import { addXenbusDevice, XenbusBackend } from '../src/xenbus/index.js';
import { type SimFixture, simFixture, templateDevice } from './sim-fixtures.js';

export type TransportKind = 'mmio' | 'pci' | 'xenbus';
export type StrategyKind = 'foreign' | 'grant-map' | 'grant-copy' | 'persistent-pool';

export const TRANSPORTS: readonly TransportKind[] = ['mmio', 'pci', 'xenbus'];
export const STRATEGIES: readonly StrategyKind[] = ['foreign', 'grant-map', 'grant-copy', 'persistent-pool'];

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
  /** MMIO on an x86 HVM guest with an MSI instead of an Arm SPI. */
  readonly guestType?: SimDomainType;
  /** Do not probe the guest driver. */
  readonly noProbe?: boolean;
}

export async function createRig(
  transportKind: TransportKind,
  strategy: StrategyKind,
  options: RigOptions = {},
): Promise<Rig> {
  const guestType = options.guestType ?? GUEST_TYPE[transportKind];
  const fixture = await simFixture(guestType, { ioreq: transportKind !== 'xenbus' });
  const { sim, guest, dom0 } = fixture;
  const device = options.device ?? templateDevice();
  let memory: GuestMemory;
  let dma: GuestDma;
  let poolRefs: readonly number[] | undefined;
  let release = () => {};
  switch (strategy) {
    case 'foreign':
      memory = createForeignMappingMemory({
        foreignMemory: dom0.foreignMemory,
        domid: guest.domid,
        guestMemoryBytes: guest.memory.length,
      });
      dma = physicalDma();
      break;
    case 'grant-map':
      memory = createGrantMapMemory({ grants: dom0.grants, domid: guest.domid });
      dma = grantDma(guest, 0);
      break;
    case 'grant-copy':
      memory = createGrantCopyMemory({ grants: dom0.grants, domid: guest.domid });
      dma = grantDma(guest, 0);
      break;
    case 'persistent-pool': {
      const pool = poolDma(guest, 0, 128);
      poolRefs = pool.refs;
      release = () => pool.release();
      dma = pool;
      memory = createPersistentPoolMemory({
        grants: dom0.grants,
        domid: guest.domid,
        // MMIO and PCI have no pool negotiation: the refs come from configuration.
        ...(transportKind === 'xenbus' ? {} : { poolRefs }),
      });
      break;
    }
  }
  const platformFeatures = strategy === 'foreign' ? 0n : VIRTIO_F_ACCESS_PLATFORM;
  let transport: MmioTransport | PciTransport | XenbusBackend;
  let probe: () => Promise<GuestVirtioDriver>;
  const timeoutMs = 5000;
  if (transportKind === 'mmio') {
    const msi = guestType !== 'arm';
    transport = new MmioTransport({
      server: fixture.server,
      device,
      memory,
      base: MMIO_BASE,
      interrupt: msi ? { kind: 'msi', address: 0xfee0_0000n, data: 0x30 } : { kind: 'spi', irq: MMIO_SPI },
      platformFeatures,
    });
    fixture.server.enable();
    probe = () =>
      MmioGuestDriver.probe(sim, {
        domid: guest.domid,
        base: MMIO_BASE,
        irq: msi ? 0x30 : MMIO_SPI,
        dma,
        timeoutMs,
      });
  } else if (transportKind === 'pci') {
    transport = new PciTransport({
      server: fixture.server,
      device,
      memory,
      pci: PCI_FUNCTION,
      platformFeatures,
    });
    fixture.server.enable();
    probe = () =>
      PciGuestDriver.probe(sim, {
        domid: guest.domid,
        pci: PCI_FUNCTION,
        dma,
        msix: options.msix ?? true,
        timeoutMs,
      });
  } else {
    await addXenbusDevice(dom0.store, 0, guest.domid, 0);
    const backend = new XenbusBackend({
      services: dom0,
      backendDomid: 0,
      frontendDomid: guest.domid,
      devid: 0,
      device,
      memory,
      platformFeatures,
      ...(strategy === 'persistent-pool'
        ? { pool: memory as unknown as { loadPoolTable(ref: number): number } }
        : {}),
    });
    await backend.start();
    transport = backend;
    probe = () =>
      XenbusGuestDriver.probe(sim, {
        domid: guest.domid,
        devid: 0,
        dma,
        timeoutMs,
        ...(poolRefs ? { poolRefs } : {}),
      });
  }
  const rig: Rig = {
    fixture,
    device,
    memory,
    dma,
    transport,
    driver: undefined as unknown as GuestVirtioDriver,
    probe: async () => {
      rig.driver = await probe();
      return rig.driver;
    },
    close: async () => {
      await rig.driver?.quiesce();
      if (transport instanceof XenbusBackend) await transport.close();
      else transport.close();
      release();
      await fixture.close();
    },
  };
  if (!options.noProbe) await rig.probe();
  return rig;
}
