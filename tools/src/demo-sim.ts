import type { DeviceController, VirtioDevice } from '@xvio/transport';
import { VIRTIO_F_ACCESS_PLATFORM } from '@xvio/transport';
import { describeError } from './cli-errors.js';
import type { DemoBuffer, QueueWorkload } from './demo-workloads.js';

// The simulator, the transports, the memory strategies and the guest drivers are loaded by
// name and typed here structurally: a build (or a checkout) without one of them still runs
// the in-process demo and says what is missing.

interface SimDomain {
  readonly domid: number;
}
interface XenServicesLike {
  readonly grants: unknown;
  readonly store: unknown;
}
interface XenSimulatorLike {
  /** Every interrupt raised so far (the simulator keeps them for tests' assertions). */
  readonly interrupts?: readonly unknown[];
  createDomain(options: { type: 'hvm' | 'pv'; memoryBytes: number; vcpus: number; name?: string }): SimDomain;
  services(domid?: number): XenServicesLike;
  close(): Promise<void>;
}
interface IoreqServerLike {
  enable(): void;
  close(): Promise<void>;
}
interface GuestQueueLike {
  add(buffers: readonly DemoBuffer[]): number | undefined;
  collect(): { head: number; length: number; written: Uint8Array[] }[];
  readonly broken?: unknown;
}
interface GuestDriverLike {
  queue(index: number): GuestQueueLike;
  kick(index: number): Promise<void>;
  nextInterrupt(): Promise<void>;
  remove(): Promise<void>;
}
interface GuestDmaLike {
  readonly refs?: readonly number[];
  release?(): void;
}
interface BackendLike {
  readonly controller: DeviceController;
}

interface SimModules {
  xen: {
    createXenSimulator(): XenSimulatorLike;
    createIoreqServer(services: XenServicesLike, options: { domid: number }): IoreqServerLike;
  };
  pci: {
    PciTransport: new (options: {
      server: IoreqServerLike;
      device: VirtioDevice;
      memory: unknown;
      pci: { segment: number; bus: number; device: number; function: number };
      platformFeatures?: bigint;
      onError?: (error: unknown) => void;
    }) => BackendLike & { close(): void };
  };
  xenbus: {
    addXenbusDevice(
      store: unknown,
      backendDomid: number,
      frontendDomid: number,
      devid: number,
    ): Promise<unknown>;
    XenbusBackend: new (options: {
      services: XenServicesLike;
      backendDomid: number;
      frontendDomid: number;
      devid: number;
      device: VirtioDevice;
      memory: unknown;
      platformFeatures?: bigint;
      pool?: unknown;
      onError?: (error: unknown) => void;
    }) => BackendLike & { start(): Promise<void>; close(): Promise<void> };
  };
  guest: {
    PciGuestDriver: {
      probe(sim: XenSimulatorLike, options: Record<string, unknown>): Promise<GuestDriverLike>;
    };
    XenbusGuestDriver: {
      probe(sim: XenSimulatorLike, options: Record<string, unknown>): Promise<GuestDriverLike>;
    };
    grantDma(domain: SimDomain, backendDomid: number): GuestDmaLike;
    poolDma(domain: SimDomain, backendDomid: number, pages: number): GuestDmaLike;
  };
  grantPool: {
    createGrantMapMemory(options: { grants: unknown; domid: number }): unknown;
    createPersistentPoolMemory(options: { grants: unknown; domid: number }): unknown;
  };
}

const MODULES: Record<keyof SimModules, { specifier: string; exports: readonly string[] }> = {
  xen: { specifier: '@xvio/xen', exports: ['createXenSimulator', 'createIoreqServer'] },
  pci: { specifier: '@xvio/transport/pci', exports: ['PciTransport'] },
  xenbus: { specifier: '@xvio/transport/xenbus', exports: ['addXenbusDevice', 'XenbusBackend'] },
  guest: {
    specifier: '@xvio/transport/guest',
    exports: ['PciGuestDriver', 'XenbusGuestDriver', 'grantDma', 'poolDma'],
  },
  grantPool: {
    specifier: '@xvio/grant-pool',
    exports: ['createGrantMapMemory', 'createPersistentPoolMemory'],
  },
};

/** Loads what the simulated demo needs; `missing` says what this build lacks. */
export async function loadSimModules(): Promise<{ modules: SimModules | undefined; missing: string[] }> {
  const loaded: Partial<Record<keyof SimModules, unknown>> = {};
  const missing: string[] = [];
  for (const [name, { specifier, exports }] of Object.entries(MODULES) as [
    keyof SimModules,
    (typeof MODULES)['xen'],
  ][]) {
    try {
      const module = (await import(specifier)) as Record<string, unknown>;
      const absent = exports.filter((key) => module[key] === undefined);
      if (absent.length > 0) missing.push(`${specifier} (no ${absent.join(', ')})`);
      loaded[name] = module;
    } catch (error) {
      missing.push(`${specifier} (${describeError(error).split('\n')[0]})`);
    }
  }
  return { modules: missing.length === 0 ? (loaded as SimModules) : undefined, missing };
}

/** How each demo guest reaches its devices; printed as-is. */
export interface SimGuestSetup {
  readonly name: string;
  readonly over: string;
  readonly transport: 'pci' | 'xenbus';
}

export const SIM_GUESTS: readonly SimGuestSetup[] = [
  {
    name: 'guest1',
    transport: 'pci',
    over: 'HVM domain, virtio-pci (MSI-X) over an ioreq server, grant map per request (Linux grant DMA)',
  },
  {
    name: 'guest2',
    transport: 'xenbus',
    over: 'PV domain, virtio over XenBus (event channels), persistent grant pool',
  },
];

export interface SimDeviceRequest {
  readonly guest: number;
  readonly device: VirtioDevice;
  readonly workloads: readonly QueueWorkload[];
  /** Device-specific feature bits the guest driver refuses. */
  readonly refuse: bigint;
}

/** One device served to a simulated guest: the backend's controller and the guest's loop. */
export interface SimDevice {
  readonly controller: DeviceController;
  readonly memory: unknown;
  /** Why the guest's driver stopped early, if it did. */
  failure: string | undefined;
}

const DEVICE_FEATURE_MASK = (1n << 24n) - 1n;
const POOL_PAGES = 256;

/**
 * The simulated Xen machine of the demo: dom0 runs the devices behind real transports; each
 * guest's Linux-like driver keeps its queues busy through the simulator.
 */
export class SimDemo {
  readonly devices: SimDevice[] = [];
  private readonly sim: XenSimulatorLike;
  private readonly domains: SimDomain[];
  private readonly cleanups: (() => unknown)[] = [];
  private readonly loops: Promise<void>[] = [];
  private stopped = false;

  constructor(private readonly modules: SimModules) {
    this.sim = modules.xen.createXenSimulator();
    this.domains = [
      this.sim.createDomain({ type: 'hvm', memoryBytes: 64 * 1024 * 1024, vcpus: 2, name: 'guest1' }),
      this.sim.createDomain({ type: 'pv', memoryBytes: 64 * 1024 * 1024, vcpus: 1, name: 'guest2' }),
    ];
  }

  /** Brings every device up: backend side first, then the guest driver probes it. */
  async start(requests: readonly SimDeviceRequest[], onError: (error: unknown) => void): Promise<void> {
    const dom0 = this.sim.services(0);
    const { modules } = this;
    const pciGuest = this.domains[0]!;
    const server = modules.xen.createIoreqServer(dom0, { domid: pciGuest.domid });
    this.cleanups.push(() => server.close());
    const pciDevices: { request: SimDeviceRequest; slot: number; entry: SimDevice }[] = [];
    let slot = 5;
    let devid = 0;
    for (const request of requests) {
      if (SIM_GUESTS[request.guest]!.transport === 'pci') {
        const memory = modules.grantPool.createGrantMapMemory({ grants: dom0.grants, domid: pciGuest.domid });
        const transport = new modules.pci.PciTransport({
          server,
          device: request.device,
          memory,
          pci: { segment: 0, bus: 0, device: slot, function: 0 },
          platformFeatures: VIRTIO_F_ACCESS_PLATFORM,
          onError,
        });
        this.cleanups.push(() => transport.close());
        const entry: SimDevice = { controller: transport.controller, memory, failure: undefined };
        this.devices.push(entry);
        pciDevices.push({ request, slot, entry });
        slot++;
      }
    }
    server.enable();
    for (const { request, slot: device, entry } of pciDevices) {
      const driver = await modules.guest.PciGuestDriver.probe(this.sim, {
        domid: pciGuest.domid,
        pci: { segment: 0, bus: 0, device, function: 0 },
        dma: modules.guest.grantDma(pciGuest, 0),
        msix: true,
        // The guest's firmware gives each function's BAR its own window.
        barAddress: 0xe000_0000n + BigInt(device - 5) * 0x10_0000n,
        deviceFeatures: DEVICE_FEATURE_MASK & ~request.refuse,
        queues: request.workloads.length,
      });
      this.run(driver, request.workloads, entry);
    }
    const xenbusGuest = this.domains[1]!;
    for (const request of requests) {
      if (SIM_GUESTS[request.guest]!.transport !== 'xenbus') continue;
      await modules.xenbus.addXenbusDevice(dom0.store, 0, xenbusGuest.domid, devid);
      const memory = modules.grantPool.createPersistentPoolMemory({
        grants: dom0.grants,
        domid: xenbusGuest.domid,
      });
      const backend = new modules.xenbus.XenbusBackend({
        services: dom0,
        backendDomid: 0,
        frontendDomid: xenbusGuest.domid,
        devid,
        device: request.device,
        memory,
        platformFeatures: VIRTIO_F_ACCESS_PLATFORM,
        pool: memory,
        onError,
      });
      await backend.start();
      this.cleanups.push(() => backend.close());
      const entry: SimDevice = { controller: backend.controller, memory, failure: undefined };
      this.devices.push(entry);
      const dma = modules.guest.poolDma(xenbusGuest, 0, POOL_PAGES);
      this.cleanups.push(() => dma.release?.());
      const driver = await modules.guest.XenbusGuestDriver.probe(this.sim, {
        domid: xenbusGuest.domid,
        devid,
        dma,
        poolRefs: dma.refs,
        deviceFeatures: DEVICE_FEATURE_MASK & ~request.refuse,
        queues: request.workloads.length,
      });
      this.run(driver, request.workloads, entry);
      devid++;
    }
  }

  /** The guest driver's loop: reap, refill, kick, wait for an interrupt (or poll). */
  private run(driver: GuestDriverLike, workloads: readonly QueueWorkload[], entry: SimDevice): void {
    this.cleanups.push(() => driver.remove());
    const inFlight = workloads.map(() => new Map<number, DemoBuffer[]>());
    const loop = async () => {
      while (!this.stopped) {
        for (const [index, workload] of workloads.entries()) {
          const queue = driver.queue(index);
          for (const used of queue.collect()) {
            const request = inFlight[index]!.get(used.head);
            inFlight[index]!.delete(used.head);
            if (request) workload.complete({ length: used.length, written: used.written }, request);
          }
          if (queue.broken) throw new Error(`queue ${index} is broken`);
          let added = false;
          while (inFlight[index]!.size < workload.depth) {
            const request = workload.next();
            if (!request) break;
            const head = queue.add(request);
            if (head === undefined) break;
            inFlight[index]!.set(head, request);
            added = true;
          }
          if (added) await driver.kick(index);
        }
        await Promise.race([driver.nextInterrupt(), new Promise((resolve) => setTimeout(resolve, 5))]);
      }
    };
    this.loops.push(
      loop().catch((error: unknown) => {
        entry.failure = describeError(error);
      }),
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.allSettled(this.loops);
    for (const cleanup of this.cleanups.reverse()) {
      try {
        await cleanup();
      } catch {
        // teardown of a simulated machine: nothing to report beyond what the counters say
      }
    }
    await this.sim.close();
  }
}
