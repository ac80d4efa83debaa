import { createGuestMemory, type GuestMemory } from '@xvio/grant-pool';
import { type DeviceController, VIRTIO_F_ACCESS_PLATFORM, type VirtioDevice } from '@xvio/transport';
import { LibxlMmioDevice, type LibxlVirtioDevice, listLibxlVirtioDevices } from '@xvio/transport/mmio';
import type { IoreqServer, XenServices, XenStoreWatch } from '@xvio/xen';
import type { Logger } from 'pino';
import { describeError } from './cli-errors.js';
import { deviceLogger } from './cli-logger.js';
import { type DeviceRegistry, deviceEntryByType } from './device-registry.js';

/** A device found in libxl's nodes and served. */
export interface DiscoveredDevice {
  readonly domid: number;
  readonly devid: number;
  readonly device: VirtioDevice;
  readonly controller: DeviceController;
  readonly memory: GuestMemory;
}

export interface LibxlDiscoveryOptions {
  readonly services: XenServices;
  readonly backendDomid: number;
  readonly registry: DeviceRegistry;
  readonly log: Logger;
  /** The ioreq server of a domain (created once per domain by the caller). */
  ioreqServer(domid: number): IoreqServer;
  /** A device started or stopped: for metrics. */
  onServe(device: DiscoveredDevice): void;
  onStop(device: DiscoveredDevice): void;
}

export interface LibxlDiscovery {
  /** Devices served now. */
  readonly served: ReadonlyMap<string, DiscoveredDevice>;
  /** Waits until the scan a change triggered has finished (tests). */
  settled(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Serves every virtio device libxl configures with this backend, as `xl create` adds them:
 * a watch on `backend/virtio` rescans; each new `<domid>/<devid>` whose `type` names a device
 * this build has is served through its libxl node (InitWait, Connected, Closed), with grant
 * mapping when `grant_usage` is 1 and foreign mapping otherwise (libxl's rule). Nodes for
 * devices this build lacks, and malformed nodes, are logged once and left alone.
 */
export async function startLibxlDiscovery(options: LibxlDiscoveryOptions): Promise<LibxlDiscovery> {
  const { services, log } = options;
  const root = `/local/domain/${options.backendDomid}/backend/virtio`;
  const served = new Map<string, DiscoveredDevice & { close(): Promise<void> }>();
  const reported = new Set<string>();
  let closed = false;
  let scanning: Promise<void> = Promise.resolve();

  const report = (key: string, message: string) => {
    if (reported.has(key)) return;
    reported.add(key);
    log.warn({ node: key }, message);
  };

  const serve = async (descriptor: LibxlVirtioDevice) => {
    const key = `${descriptor.frontendDomid}/${descriptor.devid}`;
    const entry = descriptor.deviceId === undefined ? undefined : deviceEntryByType(descriptor.deviceId);
    if (!entry) {
      report(descriptor.backendPath, `${descriptor.type} is not a device xvio serves: left alone`);
      return;
    }
    let device: VirtioDevice;
    try {
      const loaded = await options.registry.load(entry.name);
      device = loaded.create({ name: `dom${descriptor.frontendDomid}-${entry.name}${descriptor.devid}` });
    } catch (error) {
      report(descriptor.backendPath, `cannot serve ${descriptor.type}: ${describeError(error)}`);
      return;
    }
    const grantUsage = (await services.store.tryRead(`${descriptor.backendPath}/grant_usage`))?.trim();
    // libxl: grants unless the backend is dom0, or as grant_usage says (strtoul: non-zero is on).
    const grants =
      grantUsage === undefined ? options.backendDomid !== 0 : /^(0x)?0*[1-9a-f]/i.test(grantUsage);
    const memory = createGuestMemory(
      { strategy: grants ? 'grant-map' : 'foreign', domid: descriptor.frontendDomid } as Parameters<
        typeof createGuestMemory
      >[0],
      services,
    );
    const deviceLog = deviceLogger(log, device.name);
    let servedDevice: LibxlMmioDevice;
    try {
      const server = options.ioreqServer(descriptor.frontendDomid);
      servedDevice = await LibxlMmioDevice.start({
        store: services.store,
        server,
        descriptor,
        device,
        memory,
        platformFeatures: grants ? VIRTIO_F_ACCESS_PLATFORM : 0n,
        onError: (error) => deviceLog.warn({ err: error }, 'transport error'),
        onRemoved: () => {
          const gone = served.get(key);
          served.delete(key);
          if (gone) options.onStop(gone);
          device.reset();
          deviceLog.info('the toolstack removed the device');
        },
      });
      server.enable();
    } catch (error) {
      report(descriptor.backendPath, `cannot serve ${descriptor.type}: ${describeError(error)}`);
      return;
    }
    const record = {
      domid: descriptor.frontendDomid,
      devid: descriptor.devid,
      device,
      controller: servedDevice.transport.controller,
      memory,
      close: () => servedDevice.close(),
    };
    served.set(key, record);
    options.onServe(record);
    deviceLog.info(
      { domid: record.domid, devid: record.devid, memory: memory.kind },
      'serving a device libxl configured',
    );
  };

  const scan = async () => {
    if (closed) return;
    const { devices, errors } = await listLibxlVirtioDevices(services.store, options.backendDomid);
    for (const error of errors) report(error.message, `malformed libxl node: ${error.message}`);
    for (const descriptor of devices) {
      if (closed) return;
      if (served.has(`${descriptor.frontendDomid}/${descriptor.devid}`)) continue;
      // libxl writes the node in one transaction with state 1 (Initialising): ours to serve.
      // Initialising (1) as libxl wrote it, or InitWait..Connected (2-4) left by a backend
      // that was restarted; Closing and Closed mean the device is going or gone.
      const state = await services.store.tryRead(`${descriptor.backendPath}/state`);
      if (state === undefined || !['1', '2', '3', '4'].includes(state.trim())) continue;
      await serve(descriptor);
    }
  };
  const rescan = () => {
    scanning = scanning.then(scan).catch((error: unknown) => log.warn({ err: error }, 'libxl scan failed'));
  };

  const watch: XenStoreWatch = await services.store.watch(root, { onEvent: rescan });
  rescan();
  log.info({ path: root }, 'watching for virtio devices libxl configures');
  return {
    served,
    settled: () => scanning,
    close: async () => {
      closed = true;
      await watch.close();
      await scanning;
      for (const record of [...served.values()].reverse()) {
        await record.close();
        record.device.reset();
      }
      served.clear();
    },
  };
}
