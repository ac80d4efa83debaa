import { createGuestMemory, type GuestMemory } from '@xvio/grant-pool';
import { type DeviceController, VIRTIO_F_ACCESS_PLATFORM, type VirtioDevice } from '@xvio/transport';
import {
  LibxlMmioDevice,
  libxlBackendPath,
  libxlMmioSlot,
  MmioTransport,
  readLibxlVirtioDevice,
} from '@xvio/transport/mmio';
import { PciTransport } from '@xvio/transport/pci';
import { addXenbusDevice, XenbusBackend } from '@xvio/transport/xenbus';
import type { IoreqServer, XenServices, XenSimulator } from '@xvio/xen';
import type { Logger } from 'pino';
import { CliError, describeError } from './cli-errors.js';
import { deviceLogger } from './cli-logger.js';
import type { DeviceRegistry } from './device-registry.js';
import { loadOptionalModule } from './optional-modules.js';
import type { DevicePlan, DomainPlan, RunPlan } from './run-config.js';
import { type DiscoveredDevice, type LibxlDiscovery, startLibxlDiscovery } from './run-discovery.js';

/** One device being served: where, over what, and the controller metrics read. */
export interface ServedDevice {
  readonly domid: number;
  readonly plan: DevicePlan;
  readonly device: VirtioDevice;
  readonly controller: DeviceController;
  readonly memory: GuestMemory;
}

export interface RunningBackend {
  /** Devices of the configuration (discovered ones are in `discovery.served`). */
  readonly devices: readonly ServedDevice[];
  readonly discovery: LibxlDiscovery | undefined;
  /** The simulated machine (`xen = "sim"`): its domains have no guest OS unless a test drives one. */
  readonly simulator: XenSimulator | undefined;
  /** The backend domain's services (dom0's in the simulator). */
  readonly services: XenServices;
  close(): Promise<void>;
}

interface XenModule {
  createXenSimulator(): XenSimulator;
  createIoreqServer(services: XenServices, options: { domid: number }): IoreqServer;
  openNativeXenServices(): Promise<XenServices>;
}

/**
 * The simulator has no toolstack: for a virtio-mmio device the backend writes what libxl
 * writes for `virtio = ["type=virtio,device<N>, transport=mmio, ..."]`
 * (libxl__set_xenstore_virtio and the generic device nodes), so the same path serves it.
 */
async function writeLibxlNodes(
  services: XenServices,
  path: string,
  domid: number,
  entry: DevicePlan,
  deviceType: number,
): Promise<void> {
  const slot = libxlMmioSlot(entry.devid);
  if (!slot)
    throw new CliError(
      'invalid-config',
      `${entry.source}.devid: ${entry.devid} has no libxl virtio-mmio slot`,
    );
  const nodes: Record<string, string> = {
    frontend: `/local/domain/${domid}/device/virtio/${entry.devid}`,
    'frontend-id': String(domid),
    online: '1',
    state: '1',
    irq: String(slot.irq),
    base: `0x${slot.base.toString(16)}`,
    type: `virtio,device${deviceType.toString(16)}`,
    transport: 'mmio',
    grant_usage: entry.memory === 'foreign' ? '0' : '1',
  };
  for (const [key, value] of Object.entries(nodes)) await services.store.write(`${path}/${key}`, value);
}

/** First PCI slot given to virtio functions (00:05.0 onwards, after the emulated chipset's). */
const FIRST_PCI_SLOT = 5;
const SIM_GUEST_MEMORY = 64 * 1024 * 1024;

/**
 * The simulator needs a domain of a type the transports fit: virtio-mmio's libxl layout is
 * Arm's (SPIs), virtio-pci needs HVM (an ioreq server and MSI-X), XenBus works on any (PV).
 */
function simDomainType(domain: DomainPlan): 'hvm' | 'pv' | 'arm' {
  const transports = new Set(domain.devices.map((device) => device.transport));
  if (transports.has('mmio') && transports.has('pci')) {
    throw new CliError(
      'invalid-config',
      `domains: domain ${domain.domid} mixes mmio and pci, which no simulated domain type has (mmio is Arm's layout, pci is HVM)`,
    );
  }
  if (transports.has('mmio')) return 'arm';
  if (transports.has('pci')) return 'hvm';
  return 'pv';
}

/**
 * Serves a validated plan: for each domain, each device behind its transport with its own
 * memory strategy, on the simulator or on this host's Xen. Everything started is closed by
 * `close()` (newest first), also when starting fails half-way.
 */
export interface ServeHooks {
  /** A device discovered in libxl's nodes started or stopped being served (for metrics). */
  onDiscovered?(device: DiscoveredDevice): void;
  onRemoved?(device: DiscoveredDevice): void;
}

export async function serveRunPlan(
  plan: RunPlan,
  registry: DeviceRegistry,
  log: Logger,
  hooks: ServeHooks = {},
): Promise<RunningBackend> {
  const xen = (await loadOptionalModule('xen')) as unknown as XenModule;
  const cleanups: (() => unknown)[] = [];
  const close = async () => {
    for (const cleanup of cleanups.splice(0).reverse()) {
      try {
        await cleanup();
      } catch (error) {
        log.warn({ err: error }, 'cleanup failed');
      }
    }
  };
  let simulator: XenSimulator | undefined;
  let services: XenServices;
  if (plan.xen === 'sim') {
    if (plan.backendDomid !== 0) {
      throw new CliError('invalid-config', 'backend_domid: the simulator runs the backend in dom0 (0)');
    }
    const sim = xen.createXenSimulator();
    simulator = sim;
    cleanups.push(() => sim.close());
    for (const domain of plan.domains) {
      sim.createDomain({
        domid: domain.domid,
        type: simDomainType(domain),
        memoryBytes: SIM_GUEST_MEMORY,
        vcpus: 1,
        ...(domain.name ? { name: domain.name } : {}),
      });
    }
    services = sim.services(0);
  } else {
    try {
      services = await xen.openNativeXenServices();
    } catch (error) {
      throw new CliError('xen-unavailable', `cannot open this host's Xen services: ${describeError(error)}`, {
        cause: error,
      });
    }
  }
  const devices: ServedDevice[] = [];
  const servers = new Map<number, IoreqServer>();
  const serverOf = (domid: number) => {
    let server = servers.get(domid);
    if (!server) {
      const created = xen.createIoreqServer(services, { domid });
      cleanups.push(() => created.close());
      servers.set(domid, created);
      server = created;
    }
    return server;
  };
  let discovery: LibxlDiscovery | undefined;
  try {
    for (const domain of plan.domains) {
      let server: IoreqServer | undefined;
      const ioreqServer = () => {
        server = serverOf(domain.domid);
        return server;
      };
      for (const entry of domain.devices) {
        const loaded = await registry.load(entry.device);
        const name = `dom${domain.domid}-${entry.device}${entry.devid}`;
        const device = loaded.create({ name, ...entry.options }, `${entry.source}.options`);
        cleanups.push(() => device.reset());
        // The strategy's options take their defaults (validated by grant-pool's schema).
        const memory = createGuestMemory(
          { strategy: entry.memory, domid: domain.domid } as Parameters<typeof createGuestMemory>[0],
          services,
        );
        const grants = entry.memory !== 'foreign';
        const platformFeatures = grants ? VIRTIO_F_ACCESS_PLATFORM : 0n;
        const deviceLog = deviceLogger(log, device.name);
        const onError = (error: unknown) => deviceLog.warn({ err: error }, 'transport error');
        let controller: DeviceController;
        switch (entry.transport) {
          case 'pci': {
            const transport = new PciTransport({
              server: ioreqServer(),
              device,
              memory,
              pci: { segment: 0, bus: 0, device: FIRST_PCI_SLOT + entry.devid, function: 0 },
              platformFeatures,
              onError,
            });
            cleanups.push(() => transport.close());
            controller = transport.controller;
            break;
          }
          case 'mmio': {
            const path = libxlBackendPath(plan.backendDomid, domain.domid, entry.devid);
            if (simulator) await writeLibxlNodes(services, path, domain.domid, entry, device.deviceType);
            if (await services.store.exists(path)) {
              // libxl made this device (xl.cfg `virtio = [...]`): its window, its SPI, and its
              // backend states, which `xl create` waits for.
              const descriptor = await readLibxlVirtioDevice(services.store, path);
              const served = await LibxlMmioDevice.start({
                store: services.store,
                server: ioreqServer(),
                descriptor,
                device,
                memory,
                platformFeatures,
                onError,
                onRemoved: () => deviceLog.info('the toolstack removed the device'),
              });
              cleanups.push(() => served.close());
              controller = served.transport.controller;
            } else {
              const slot = libxlMmioSlot(entry.devid);
              if (!slot) {
                throw new CliError(
                  'invalid-config',
                  `${entry.source}.devid: ${entry.devid} has no libxl virtio-mmio slot`,
                );
              }
              const transport = new MmioTransport({
                server: ioreqServer(),
                device,
                memory,
                base: slot.base,
                interrupt: { kind: 'spi', irq: slot.irq },
                platformFeatures,
                onError,
              });
              cleanups.push(() => transport.close());
              controller = transport.controller;
            }
            break;
          }
          case 'xenbus': {
            await addXenbusDevice(services.store, plan.backendDomid, domain.domid, entry.devid);
            const backend = new XenbusBackend({
              services,
              backendDomid: plan.backendDomid,
              frontendDomid: domain.domid,
              devid: entry.devid,
              device,
              memory,
              platformFeatures,
              ...(entry.memory === 'persistent-pool'
                ? { pool: memory as unknown as { loadPoolTable(ref: number): number } }
                : {}),
              onError,
            });
            await backend.start();
            cleanups.push(() => backend.close());
            controller = backend.controller;
            break;
          }
        }
        devices.push({ domid: domain.domid, plan: entry, device, controller, memory });
        deviceLog.info({ domid: domain.domid, transport: entry.transport, memory: entry.memory }, 'serving');
      }
      server?.enable();
    }
    if (plan.discoverLibxl) {
      const configured = new Set(plan.domains.map((domain) => domain.domid));
      const created = new Set<number>();
      const found = await startLibxlDiscovery({
        services,
        backendDomid: plan.backendDomid,
        registry,
        log,
        ioreqServer: (domid) => {
          // The simulator has no `xl create`: a domain first named in libxl's nodes is made
          // here, as an Arm guest (libxl's virtio-mmio layout).
          if (simulator && !configured.has(domid) && !created.has(domid)) {
            simulator.createDomain({ domid, type: 'arm', memoryBytes: SIM_GUEST_MEMORY, vcpus: 1 });
            created.add(domid);
          }
          return serverOf(domid);
        },
        onServe: (device) => hooks.onDiscovered?.(device),
        onStop: (device) => hooks.onRemoved?.(device),
      });
      discovery = found;
      cleanups.push(() => found.close());
    }
  } catch (error) {
    await close();
    throw error;
  }
  return { devices, discovery, simulator, services, close };
}
