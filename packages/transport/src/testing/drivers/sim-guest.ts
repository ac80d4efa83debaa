import {
  createForeignMappingMemory,
  createGrantCopyMemory,
  createGrantMapMemory,
  createPersistentPoolMemory,
  type GuestMemory,
} from '@xvio/grant-pool';
import {
  createIoreqServer,
  type IoreqServer,
  type SimDomain,
  type XenServices,
  type XenSimulator,
} from '@xvio/xen';
import { MmioTransport } from '../../mmio/mmio-transport.js';
import { libxlMmioSlot } from '../../mmio/mmio-wire.js';
import { PciTransport } from '../../pci/pci-transport.js';
import type { VirtioDevice } from '../../virtio-device.js';
import { VIRTIO_F_ACCESS_PLATFORM } from '../../virtio-features.js';
import { addXenbusDevice, XenbusBackend } from '../../xenbus/xenbus-backend.js';
import { type GuestDma, grantDma, physicalDma, poolDma } from './guest-dma.js';
import type { GuestVirtioDriver } from './guest-driver.js';
import { MmioGuestDriver } from './mmio-guest-driver.js';
import { MSI_ADDRESS, PciGuestDriver } from './pci-guest-driver.js';
import { XenbusGuestDriver } from './xenbus-guest-driver.js';

export type SimTransportKind = 'mmio' | 'pci' | 'xenbus';
export type SimMemoryKind = 'foreign' | 'grant-map' | 'grant-copy' | 'persistent-pool';

export interface SimGuestOptions {
  readonly sim: XenSimulator;
  /** The guest (frontend) domain. MMIO on an `arm` guest uses SPIs, elsewhere MSIs; PCI needs `hvm` or `pvh`. */
  readonly guest: SimDomain;
  /** The backend domain's services (default: dom0's). */
  readonly backend?: XenServices;
  readonly transport: SimTransportKind;
  readonly memory: SimMemoryKind;
  readonly devices: readonly VirtioDevice[];
  /** Pages of each device's persistent pool (default 128). */
  readonly poolPages?: number;
  /** Queue size the guest drivers pick (default min(max, 64)). */
  readonly queueSize?: number;
  readonly timeoutMs?: number;
  /** The guest drivers negotiate VIRTIO_F_EVENT_IDX when offered (default true). */
  readonly eventIdx?: boolean;
  /** PCI: the guest uses MSI-X (default) or INTx only (`pci=nomsi`). */
  readonly msix?: boolean;
  /** Leave the guest drivers unloaded (call `probe()` per device). */
  readonly probe?: boolean;
  readonly onError?: (error: unknown, device: VirtioDevice) => void;
}

/** One device as both ends see it. */
export interface SimGuestDevice {
  readonly device: VirtioDevice;
  readonly transport: MmioTransport | PciTransport | XenbusBackend;
  /** The backend's view of the guest's memory (one strategy instance per device). */
  readonly memory: GuestMemory;
  /** How the guest driver hands buffers to this device. */
  readonly dma: GuestDma;
  /** The loaded guest driver (after `probe`). */
  driver: GuestVirtioDriver;
  /** Loads the guest driver (again, after `driver.remove()`). */
  probe(): Promise<GuestVirtioDriver>;
}

export interface SimGuest {
  readonly devices: readonly SimGuestDevice[];
  /** The guest's ioreq server (MMIO and PCI). */
  readonly server: IoreqServer | undefined;
  /** Unloads the drivers, closes the transports and the ioreq server. */
  close(): Promise<void>;
}

/**
 * Serves `devices` to a simulated guest over one transport and one memory strategy, and loads
 * the guest's Linux-like driver for each: what `xvio demo` and the transport tests run.
 * MMIO devices sit in libxl's Arm slots (0x02000000 + 0x200 n, SPI 33 + n), PCI functions at
 * 00:05.0, 00:06.0, ..., XenBus devices at devid 0, 1, ...
 */
export async function attachSimGuest(options: SimGuestOptions): Promise<SimGuest> {
  const { sim, guest } = options;
  const backend = options.backend ?? sim.services(0);
  const ownBackend = options.backend === undefined;
  const server =
    options.transport === 'xenbus' ? undefined : createIoreqServer(backend, { domid: guest.domid });
  const releases: (() => void)[] = [];
  const devices: SimGuestDevice[] = [];
  let msiData = 0x30;
  try {
    for (const [index, device] of options.devices.entries()) {
      const { memory, dma, poolRefs, release } = strategy(options, backend, options.transport === 'xenbus');
      releases.push(release);
      const platformFeatures = options.memory === 'foreign' ? 0n : VIRTIO_F_ACCESS_PLATFORM;
      const onError = (error: unknown) => options.onError?.(error, device);
      const common = {
        dma,
        timeoutMs: options.timeoutMs ?? 5000,
        ...(options.queueSize !== undefined ? { queueSize: options.queueSize } : {}),
        ...(options.eventIdx !== undefined ? { eventIdx: options.eventIdx } : {}),
      };
      let transport: MmioTransport | PciTransport | XenbusBackend;
      let load: () => Promise<GuestVirtioDriver>;
      if (options.transport === 'mmio') {
        const slot = libxlMmioSlot(index);
        if (!slot)
          throw new RangeError(`libxl places at most 11 virtio-mmio devices; device ${index} has no slot`);
        const arm = guest.type === 'arm';
        const data = msiData++;
        transport = new MmioTransport({
          server: server as IoreqServer,
          device,
          memory,
          base: slot.base,
          interrupt: arm ? { kind: 'spi', irq: slot.irq } : { kind: 'msi', address: MSI_ADDRESS, data },
          platformFeatures,
          onError,
        });
        load = () =>
          MmioGuestDriver.probe(sim, {
            ...common,
            domid: guest.domid,
            base: slot.base,
            irq: arm ? slot.irq : data,
          });
      } else if (options.transport === 'pci') {
        const pci = { segment: 0, bus: 0, device: 5 + index, function: 0 };
        transport = new PciTransport({
          server: server as IoreqServer,
          device,
          memory,
          pci,
          intx: guest.type === 'hvm' ? 0 : false,
          platformFeatures,
          onError,
        });
        const msiBase = 0x40 + index * 0x20;
        const barAddress = 0xe000_0000n + BigInt(index) * 0x10_0000n;
        const msix = options.msix ?? true;
        load = () =>
          PciGuestDriver.probe(sim, { ...common, domid: guest.domid, pci, msiBase, barAddress, msix });
      } else {
        await addXenbusDevice(backend.store, backend.domid, guest.domid, index);
        const xenbus = new XenbusBackend({
          services: backend,
          backendDomid: backend.domid,
          frontendDomid: guest.domid,
          devid: index,
          device,
          memory,
          platformFeatures,
          onError,
          ...(options.memory === 'persistent-pool'
            ? { pool: memory as unknown as { loadPoolTable(ref: number): number } }
            : {}),
        });
        await xenbus.start();
        transport = xenbus;
        load = () =>
          XenbusGuestDriver.probe(sim, {
            ...common,
            domid: guest.domid,
            devid: index,
            ...(poolRefs ? { poolRefs } : {}),
          });
      }
      const entry: SimGuestDevice = {
        device,
        transport,
        memory,
        dma,
        driver: undefined as unknown as GuestVirtioDriver,
        probe: async () => {
          entry.driver = await load();
          return entry.driver;
        },
      };
      devices.push(entry);
    }
    server?.enable();
    if (options.probe !== false) for (const entry of devices) await entry.probe();
  } catch (error) {
    await closeAll(devices, server, releases, ownBackend ? backend : undefined);
    throw error;
  }
  return {
    devices,
    server,
    close: () => closeAll(devices, server, releases, ownBackend ? backend : undefined),
  };
}

function strategy(
  options: SimGuestOptions,
  backend: XenServices,
  negotiatedPool: boolean,
): { memory: GuestMemory; dma: GuestDma; poolRefs: readonly number[] | undefined; release: () => void } {
  const { guest } = options;
  switch (options.memory) {
    case 'foreign':
      return {
        memory: createForeignMappingMemory({
          foreignMemory: backend.foreignMemory,
          domid: guest.domid,
          guestMemoryBytes: guest.memory.length,
        }),
        dma: physicalDma(),
        poolRefs: undefined,
        release: () => {},
      };
    case 'grant-map':
      return {
        memory: createGrantMapMemory({ grants: backend.grants, domid: guest.domid }),
        dma: grantDma(guest, backend.domid),
        poolRefs: undefined,
        release: () => {},
      };
    case 'grant-copy':
      return {
        memory: createGrantCopyMemory({ grants: backend.grants, domid: guest.domid }),
        dma: grantDma(guest, backend.domid),
        poolRefs: undefined,
        release: () => {},
      };
    case 'persistent-pool': {
      const pool = poolDma(guest, backend.domid, options.poolPages ?? 128);
      return {
        // XenBus negotiates the pool (persistent-pool-table); MMIO and PCI get it from configuration.
        memory: createPersistentPoolMemory({
          grants: backend.grants,
          domid: guest.domid,
          ...(negotiatedPool ? {} : { poolRefs: pool.refs }),
        }),
        dma: pool,
        poolRefs: pool.refs,
        release: () => pool.release(),
      };
    }
  }
}

async function closeAll(
  devices: readonly SimGuestDevice[],
  server: IoreqServer | undefined,
  releases: readonly (() => void)[],
  backend: XenServices | undefined,
): Promise<void> {
  for (const entry of devices) {
    await entry.driver?.quiesce();
    if (entry.transport instanceof XenbusBackend) await entry.transport.close();
    else entry.transport.close();
  }
  // The transports are closed, so the backend unmapped everything: revoking cannot fail.
  for (const release of releases) release();
  await server?.close();
  await backend?.close();
}
