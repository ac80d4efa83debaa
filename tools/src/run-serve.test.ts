import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  grantDma,
  MmioGuestDriver,
  PciGuestDriver,
  physicalDma,
  XenbusGuestDriver,
} from '@xvio/transport/guest';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from './cli-logger.js';
import { createWorkspaceRegistry } from './device-registry.js';
import { loadRunPlan, planRun } from './run-config.js';
import { type RunningBackend, serveRunPlan } from './run-serve.js';

const quiet = createLogger({ level: 'silent', destination: { write: () => undefined } });

let backend: RunningBackend | undefined;
afterEach(async () => {
  await backend?.close();
  backend = undefined;
});

/** An rng request of 256 bytes; returns how many bytes the device wrote. */
async function entropy(driver: {
  request(index: number, buffers: { writable: number }[]): Promise<{ length: number }>;
}) {
  return (await driver.request(0, [{ writable: 256 }])).length;
}

describe('run on the simulator', () => {
  it('serves each device over its configured transport and memory strategy', async () => {
    const plan = await planRun(
      {
        xen: 'sim',
        domains: [
          { domid: 1, devices: [{ type: 'rng', transport: 'pci', memory: 'grant-map' }] },
          { domid: 2, devices: [{ type: 'rng', transport: 'xenbus', memory: 'grant-copy' }] },
          {
            domid: 3,
            devices: [{ type: 'rng', transport: 'mmio', memory: 'foreign', options: { source: 'seeded:1' } }],
          },
        ],
      },
      'test.toml',
      '.',
    );
    backend = await serveRunPlan(plan, createWorkspaceRegistry(), quiet);
    const sim = backend.simulator!;
    expect(backend.devices.map((served) => [served.domid, served.device.name, served.memory.kind])).toEqual([
      [1, 'dom1-rng0', 'grant-map'],
      [2, 'dom2-rng0', 'grant-copy'],
      [3, 'dom3-rng0', 'foreign'],
    ]);
    const pci = await PciGuestDriver.probe(sim, {
      domid: 1,
      pci: { segment: 0, bus: 0, device: 5, function: 0 },
      dma: grantDma(sim.domain(1), 0),
    });
    expect(await entropy(pci)).toBe(256);
    const xenbus = await XenbusGuestDriver.probe(sim, {
      domid: 2,
      devid: 0,
      dma: grantDma(sim.domain(2), 0),
    });
    expect(await entropy(xenbus)).toBe(256);
    // The libxl backend node of the mmio device: InitWait while serving, Connected after DRIVER_OK.
    const node = '/local/domain/0/backend/virtio/3/0';
    expect(await backend.services.store.read(`${node}/type`)).toBe('virtio,device4');
    expect(await backend.services.store.read(`${node}/state`)).toBe('2');
    const mmio = await MmioGuestDriver.probe(sim, {
      domid: 3,
      base: 0x0200_0000n,
      irq: 33,
      dma: physicalDma(),
    });
    expect(await entropy(mmio)).toBe(256);
    for (let i = 0; i < 100 && (await backend.services.store.read(`${node}/state`)) !== '4'; i++) {
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    expect(await backend.services.store.read(`${node}/state`)).toBe('4');
    for (const served of backend.devices) {
      expect(served.controller.metrics.faults).toBe(0);
      expect(served.controller.metrics.activations).toBe(1);
    }
    await pci.remove();
    await xenbus.remove();
    await mmio.remove();
  });

  it('serves the devices of an xl domain configuration, as libxl lays them out', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'xvio-xl-'));
    try {
      const file = join(dir, 'guest.cfg');
      await writeFile(
        file,
        [
          'name = "arm-guest"',
          'virtio = [ "type=virtio,device4, transport=mmio, grant_usage=0, backend=0",',
          '           "type=virtio,device3, transport=mmio, grant_usage=0, backend=0" ]',
        ].join('\n'),
      );
      const plan = await loadRunPlan(file, dir, { xen: 'sim', domid: 4 });
      backend = await serveRunPlan(plan, createWorkspaceRegistry(), quiet);
      expect(
        backend.devices.map((served) => [served.device.name, served.plan.transport, served.memory.kind]),
      ).toEqual([
        ['dom4-rng0', 'mmio', 'foreign'],
        ['dom4-console1', 'mmio', 'foreign'],
      ]);
      // Second device: libxl's second slot (0x02000000 + 0x200, SPI 34).
      const rng = await MmioGuestDriver.probe(backend.simulator!, {
        domid: 4,
        base: 0x0200_0000n,
        irq: 33,
        dma: physicalDma(),
      });
      expect(await entropy(rng)).toBe(256);
      const console = await MmioGuestDriver.probe(backend.simulator!, {
        domid: 4,
        base: 0x0200_0200n,
        irq: 34,
        dma: physicalDma(),
      });
      expect(console.deviceId).toBe(3);
      await rng.remove();
      await console.remove();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('serves the virtio devices libxl writes under backend/virtio as they appear, and lets them go', async () => {
    const plan = await planRun({ xen: 'sim', discover: 'libxl' }, 'test.toml', '.');
    backend = await serveRunPlan(plan, createWorkspaceRegistry(), quiet);
    const store = backend.services.store;
    const node = '/local/domain/0/backend/virtio/7/0';
    // What libxl__set_xenstore_virtio and the generic device code write for
    // virtio = [ "type=virtio,device4, transport=mmio, grant_usage=0, backend=0" ].
    for (const [key, value] of Object.entries({
      frontend: '/local/domain/7/device/virtio/0',
      'frontend-id': '7',
      online: '1',
      irq: '33',
      base: '0x2000000',
      type: 'virtio,device4',
      transport: 'mmio',
      grant_usage: '0',
      state: '1',
    })) {
      await store.write(`${node}/${key}`, value);
    }
    const discovery = backend.discovery!;
    for (let i = 0; i < 200 && !discovery.served.has('7/0'); i++) {
      await new Promise((resolve) => setTimeout(resolve, 5));
      await discovery.settled();
    }
    const served = discovery.served.get('7/0')!;
    expect([served.device.name, served.memory.kind]).toEqual(['dom7-rng0', 'foreign']);
    expect(await store.read(`${node}/state`)).toBe('2');
    const sim = backend.simulator!;
    const mmio = await MmioGuestDriver.probe(sim, {
      domid: 7,
      base: 0x0200_0000n,
      irq: 33,
      dma: physicalDma(),
    });
    expect(await entropy(mmio)).toBe(256);
    await mmio.remove();
    // xl destroy / device detach: online 0, Closing.
    await store.write(`${node}/online`, '0');
    await store.write(`${node}/state`, '5');
    for (let i = 0; i < 200 && discovery.served.has('7/0'); i++)
      await new Promise((resolve) => setTimeout(resolve, 5));
    expect(discovery.served.has('7/0')).toBe(false);
    expect(await store.read(`${node}/state`)).toBe('6');
  });

  it('refuses a domain that mixes mmio and pci, and a backend outside dom0', async () => {
    const mixed = await planRun(
      {
        xen: 'sim',
        domains: [
          {
            domid: 1,
            devices: [
              { type: 'rng', transport: 'pci' },
              { type: 'rng', transport: 'mmio' },
            ],
          },
        ],
      },
      'test.toml',
      '.',
    );
    await expect(serveRunPlan(mixed, createWorkspaceRegistry(), quiet)).rejects.toThrow(
      "domains: domain 1 mixes mmio and pci, which no simulated domain type has (mmio is Arm's layout, pci is HVM)",
    );
    const elsewhere = await planRun(
      { xen: 'sim', backend_domid: 4, domains: [{ domid: 1, devices: [{ type: 'rng' }] }] },
      'test.toml',
      '.',
    );
    await expect(serveRunPlan(elsewhere, createWorkspaceRegistry(), quiet)).rejects.toThrow(
      'backend_domid: the simulator runs the backend in dom0 (0)',
    );
  });
});
