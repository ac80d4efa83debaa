// A backend restart under a running virtio-pci driver, through the Xen simulator: the first
// backend process dies (its event channels and mappings go, its ioreq server, claims and any
// trapped access stay in Xen); a new process adopts the server, restores the function from
// the state the first one saved, and the driver goes on without a reset.
import { createRegionsMemory, type GuestMemory } from '@xvio/grant-pool';
import {
  adoptIoreqServer,
  createIoreqServer,
  createXenSimulator,
  type IoreqServer,
  type SimDomain,
  type XenServices,
  type XenSimulator,
} from '@xvio/xen';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MemoryTemplateHost, TemplateDevice } from '../../dev-template/src/index.js';
import {
  PciStateError,
  PciTransport,
  type PciTransportState,
  parsePciTransportState,
  serializePciTransportState,
} from '../src/pci/index.js';
import { PciGuestDriver, physicalDma } from '../src/testing/drivers/index.js';
import type { DeviceContext, VirtioDevice } from '../src/virtio-device.js';
import { STATUS_DEVICE_NEEDS_RESET, STATUS_DRIVER_OK } from '../src/virtio-status.js';
import { decode, text } from './sim-fixtures.js';

const pci = { segment: 0, bus: 0, device: 5, function: 0 };

let sim: XenSimulator;
let guest: SimDomain;
const cleanup: (() => Promise<void> | void)[] = [];

beforeEach(() => {
  sim = createXenSimulator();
  guest = sim.createDomain({ type: 'hvm', memoryBytes: 16 * 1024 * 1024, vcpus: 2 });
});

afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
  await sim.close();
});

/** Foreign mapping of all guest RAM through one process's services. */
function foreignMemory(services: XenServices): GuestMemory {
  const frames = Array.from({ length: guest.ramPages }, (_, i) => BigInt(i));
  const mapping = services.foreignMemory.map(guest.domid, frames, { writable: true });
  return createRegionsMemory([
    { guestAddress: 0n, userAddress: 0n, bytes: mapping.bytes, unmap: () => mapping.unmap() },
  ]);
}

/** A template-typed device that takes requests and never completes them (it dies holding them). */
class HoldingDevice implements VirtioDevice {
  readonly deviceType = 0xbf;
  readonly name = 'holding';
  readonly queueMaxSizes: readonly number[];
  readonly features: bigint;
  readonly configSize = 0;
  held = 0;
  private context: DeviceContext | undefined;
  constructor(like: TemplateDevice) {
    this.queueMaxSizes = like.queueMaxSizes;
    this.features = like.features;
  }
  readConfig(): void {}
  writeConfig(): void {}
  activate(context: DeviceContext): void {
    this.context = context;
  }
  notify(queueIndex: number): void {
    while (this.context?.queues[queueIndex]?.pop()) this.held++;
  }
  reset(): void {
    this.context = undefined;
  }
}

interface Backend {
  services: XenServices;
  server: IoreqServer;
  transport: PciTransport;
  /** The state as the backend last persisted it (a JSON text, as in a file). */
  saved: () => string;
  /** The process dies: nothing is given back to Xen. */
  kill: () => Promise<void>;
}

function startBackend(device: VirtioDevice, restore?: { id: number; state: PciTransportState }): Backend {
  const services = sim.services(0);
  const server = restore
    ? adoptIoreqServer(services, { domid: guest.domid, id: restore.id })
    : createIoreqServer(services, { domid: guest.domid });
  let saved = '';
  const transport = new PciTransport({
    server,
    device,
    memory: foreignMemory(services),
    pci,
    ...(restore ? { restore: restore.state } : {}),
    onStateChange: (changed) => {
      saved = serializePciTransportState(changed.snapshot());
    },
  });
  server.enable();
  saved = serializePciTransportState(transport.snapshot());
  let alive = true;
  cleanup.push(async () => {
    if (!alive) return;
    transport.close();
    await server.close();
    await services.close();
  });
  return {
    services,
    server,
    transport,
    saved: () => saved,
    kill: async () => {
      alive = false;
      server.abandon();
      await services.close();
    },
  };
}

describe('virtio-pci backend restart (simulator)', () => {
  it('a new process adopts the ioreq server, restores the function and serves on; the driver never resets', async () => {
    const first = startBackend(new TemplateDevice(new MemoryTemplateHost()));
    const driver = await PciGuestDriver.probe(sim, { domid: guest.domid, pci, dma: physicalDma() });
    const before = await driver.request(0, [{ data: text('before') }, { writable: 14 }]);
    expect(decode(before.written[0]!.subarray(8))).toBe('BEFORE');
    const msiBefore = sim.interrupts.filter((event) => event.kind === 'msi').length;
    const state = first.saved();
    const id = first.server.id;
    await first.kill();

    // The driver kicks while nobody serves: its vCPU waits on the notify write.
    const during = driver.request(0, [{ data: text('during') }, { writable: 14 }], 10_000);
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(sim.unansweredIoreqs()).toHaveLength(1);

    const second = startBackend(new TemplateDevice(new MemoryTemplateHost()), {
      id,
      state: parsePciTransportState(state),
    });
    expect(decode((await during).written[0]!.subarray(8))).toBe('DURING');
    const after = await driver.request(0, [{ data: text('after') }, { writable: 13 }]);
    expect(decode(after.written[0]!.subarray(8))).toBe('AFTER');
    await driver.quiesce();
    const status = await driver.status();
    expect(status & STATUS_DRIVER_OK).toBe(STATUS_DRIVER_OK);
    expect(status & STATUS_DEVICE_NEEDS_RESET).toBe(0);
    // Completions were signalled through the MSI-X table the first backend was given.
    expect(sim.interrupts.filter((event) => event.kind === 'msi').length).toBeGreaterThan(msiBefore);
    expect(second.transport.counters.barClaimFailures).toBe(0);
    expect(second.server.stats.unclaimed).toBe(0);
    expect(sim.unansweredIoreqs()).toEqual([]);
  });

  it('serves again the requests the dead backend had taken and never completed (resume at used.idx)', async () => {
    const holding = new HoldingDevice(new TemplateDevice(new MemoryTemplateHost()));
    const first = startBackend(holding);
    const driver = await PciGuestDriver.probe(sim, { domid: guest.domid, pci, dma: physicalDma() });
    const queue = driver.queue(0);
    queue.add([{ data: text('one') }, { writable: 11 }]);
    queue.add([{ data: text('two') }, { writable: 11 }]);
    await driver.kick(0);
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(holding.held).toBe(2);
    const state = first.saved();
    await first.kill();
    startBackend(new TemplateDevice(new MemoryTemplateHost()), {
      id: first.server.id,
      state: parsePciTransportState(state),
    });
    // No kick after the restart: the restored device looks at its queues by itself.
    const used = await driver.waitUsed(0, 2);
    expect(used.map((entry) => decode(entry.written[0]!.subarray(8))).sort()).toEqual(['ONE', 'TWO']);
  });

  it('keeps a driver that had not finished probing: it completes its set-up on the new backend', async () => {
    const first = startBackend(new TemplateDevice(new MemoryTemplateHost()));
    // Firmware placed the BAR and the driver got as far as reading the features.
    const vcpu = guest.vcpu(0);
    await vcpu.pciConfigWrite(pci, 0x10, 4, 0xe000_0000n);
    await vcpu.pciConfigWrite(pci, 0x04, 2, 0x6n);
    await vcpu.mmioWrite(0xe000_0000n + 0x14n, 1, 0x1n); // device_status: ACKNOWLEDGE
    await vcpu.mmioWrite(0xe000_0000n + 0x14n, 1, 0x3n); // then DRIVER
    const state = first.saved();
    await first.kill();
    const second = startBackend(new TemplateDevice(new MemoryTemplateHost()), {
      id: first.server.id,
      state: parsePciTransportState(state),
    });
    expect(second.transport.barAddress).toBe(0xe000_0000n);
    expect(Number(await vcpu.mmioRead(0xe000_0000n + 0x14n, 1))).toBe(3);
    expect(second.transport.controller.status).toBe(3);
  });

  it('sets NEEDS_RESET with a configuration interrupt when a ring cannot be resumed', async () => {
    const first = startBackend(new TemplateDevice(new MemoryTemplateHost()));
    const driver = await PciGuestDriver.probe(sim, { domid: guest.domid, pci, dma: physicalDma() });
    await driver.request(0, [{ data: text('x') }, { writable: 9 }]);
    const saved = parsePciTransportState(first.saved());
    await first.kill();
    // The used ring the state names is outside guest memory: the queue cannot be resumed.
    const broken: PciTransportState = {
      ...saved,
      controller: {
        ...saved.controller,
        queues: saved.controller.queues.map((queue) => ({ ...queue, device: 0x7fff_f000_0000n })),
      },
    };
    const configInterrupts = driver.interrupts.config;
    const second = startBackend(new TemplateDevice(new MemoryTemplateHost()), {
      id: first.server.id,
      state: broken,
    });
    await new Promise((resolve) => setTimeout(resolve, 20));
    await driver.quiesce();
    expect(second.transport.controller.status & STATUS_DEVICE_NEEDS_RESET).toBe(STATUS_DEVICE_NEEDS_RESET);
    expect(driver.interrupts.config).toBeGreaterThan(configInterrupts);
    expect((await driver.status()) & STATUS_DEVICE_NEEDS_RESET).toBe(STATUS_DEVICE_NEEDS_RESET);
    // The driver resets and sets the device up again on the new backend.
    await driver.reset();
    await driver.initialize();
    const again = await driver.request(0, [{ data: text('again') }, { writable: 13 }]);
    expect(decode(again.written[0]!.subarray(8))).toBe('AGAIN');
  });
});

describe('PciTransportState', () => {
  it('survives serialization unchanged and refuses malformed or foreign states', async () => {
    const backend = startBackend(new TemplateDevice(new MemoryTemplateHost()));
    await PciGuestDriver.probe(sim, { domid: guest.domid, pci, dma: physicalDma() });
    const snapshot = backend.transport.snapshot();
    const text = serializePciTransportState(snapshot);
    expect(parsePciTransportState(text)).toEqual(snapshot);
    expect(snapshot.barClaim).toBe(0xe000_0000n);
    expect(snapshot.controller.status & STATUS_DRIVER_OK).toBe(STATUS_DRIVER_OK);

    const json = JSON.parse(text) as Record<string, unknown>;
    const broken = (patch: Record<string, unknown>) => () =>
      parsePciTransportState(JSON.stringify({ ...json, ...patch }));
    for (const patch of [
      { version: 2 },
      { config: 'zz' },
      { msixTable: '' },
      { queueSelect: -1 },
      { barClaim: '0x1ffffffffffffffff' },
      { controller: { ...(json.controller as object), queues: 'none' } },
    ]) {
      expect(broken(patch)).toThrow(expect.objectContaining({ code: 'invalid-state' }));
    }
    expect(() => parsePciTransportState('{')).toThrow(PciStateError);

    // A state for another device, or one whose read-only bytes were changed.
    await backend.kill();
    expect(() =>
      startBackend(new TemplateDevice(new MemoryTemplateHost()), {
        id: backend.server.id,
        state: { ...snapshot, deviceType: 4 },
      }),
    ).toThrow(expect.objectContaining({ code: 'state-mismatch' }));
    const config = snapshot.config.slice();
    config[0] = 0x86; // vendor id
    const restored = startBackend(new TemplateDevice(new MemoryTemplateHost()), {
      id: backend.server.id,
      state: { ...snapshot, config },
    });
    expect(restored.transport.readConfigSpace(0, 2)).toBe(0x1af4n);
  });
});
