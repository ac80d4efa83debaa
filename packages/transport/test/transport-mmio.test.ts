import { type IoreqServer, XenError } from '@xvio/xen';
import { afterEach, describe, expect, it } from 'vitest';
import {
  LibxlMmioDevice,
  libxlBackendPath,
  listLibxlVirtioDevices,
  MmioTransport,
} from '../src/mmio/index.js';
import { MmioGuestDriver, physicalDma } from '../src/testing/drivers/index.js';
import { decode, foreignMemory, type SimFixture, simFixture, templateDevice, text } from './sim-fixtures.js';

describe('virtio-mmio through the simulator', () => {
  let fixture: SimFixture | undefined;
  afterEach(async () => {
    await fixture?.close();
    fixture = undefined;
  });

  it('probes, negotiates and completes a request with an SPI', async () => {
    fixture = await simFixture('arm');
    const transport = new MmioTransport({
      server: fixture.server,
      device: templateDevice(),
      memory: foreignMemory(fixture),
      base: 0x0200_0000n,
      interrupt: { kind: 'spi', irq: 33 },
    });
    fixture.server.enable();
    const driver = await MmioGuestDriver.probe(fixture.sim, {
      domid: fixture.guest.domid,
      base: 0x0200_0000n,
      irq: 33,
      dma: physicalDma(),
    });
    expect(driver.deviceId).toBe(0xbf);
    const used = await driver.request(0, [{ data: text('Hello') }, { writable: 13 }]);
    expect(used.length).toBe(13);
    expect(decode(used.written[0]!.subarray(8))).toBe('hELLO');
    expect(fixture.sim.interrupts.some((e) => e.kind === 'irq' && e.irq === 33 && e.level === 1)).toBe(true);
    await driver.quiesce();
    expect(fixture.sim.unansweredIoreqs()).toEqual([]);
    transport.close();
  });

  it('serves a device libxl configured: InitWait, Connected at DRIVER_OK, Closed on removal', async () => {
    fixture = await simFixture('arm');
    const store = fixture.dom0.store;
    const path = libxlBackendPath(0, fixture.guest.domid, 0);
    // What `virtio = ["type=virtio,devicebf, transport=mmio"]` makes libxl write (first device: slot 0).
    for (const [key, value] of Object.entries({
      frontend: `/local/domain/${fixture.guest.domid}/device/virtio/0`,
      'frontend-id': String(fixture.guest.domid),
      online: '1',
      state: '1',
      irq: '33',
      base: String(0x0200_0000),
      type: 'virtio,devicebf',
      transport: 'mmio',
    })) {
      await store.write(`${path}/${key}`, value);
    }
    const { devices } = await listLibxlVirtioDevices(store, 0);
    let removed = false;
    const served = await LibxlMmioDevice.start({
      store,
      server: fixture.server,
      descriptor: devices[0]!,
      device: templateDevice(),
      memory: foreignMemory(fixture),
      onRemoved: () => {
        removed = true;
      },
    });
    fixture.server.enable();
    expect(await store.read(`${path}/state`)).toBe('2');
    const driver = await MmioGuestDriver.probe(fixture.sim, {
      domid: fixture.guest.domid,
      base: devices[0]!.base,
      irq: devices[0]!.irq,
      dma: physicalDma(),
    });
    for (let i = 0; i < 100 && (await store.read(`${path}/state`)) !== '4'; i++)
      await new Promise((r) => setTimeout(r, 2));
    expect(await store.read(`${path}/state`)).toBe('4');
    await driver.request(0, [{ data: text('libxl') }, { writable: 13 }]);
    await driver.quiesce();
    await store.write(`${path}/online`, '0');
    await store.write(`${path}/state`, '5');
    for (let i = 0; i < 100 && !removed; i++) await new Promise((r) => setTimeout(r, 2));
    expect(removed).toBe(true);
    expect(await store.read(`${path}/state`)).toBe('6');
    expect(served.transport.closed).toBe(true);
    expect(await driver.read32(0)).toBe(0xffff_ffff); // the window is gone: reads float
    expect(fixture.sim.unansweredIoreqs()).toEqual([]);
  });

  it('raises an ISA IRQ on an x86 HVM guest and lowers it on acknowledgement', async () => {
    fixture = await simFixture('hvm');
    const transport = new MmioTransport({
      server: fixture.server,
      device: templateDevice(),
      memory: foreignMemory(fixture),
      base: 0xfeb0_0000n,
      interrupt: { kind: 'isa', irq: 5 },
    });
    fixture.server.enable();
    const driver = await MmioGuestDriver.probe(fixture.sim, {
      domid: fixture.guest.domid,
      base: 0xfeb0_0000n,
      irq: 5,
      dma: physicalDma(),
    });
    await driver.request(0, [{ data: text('isa') }, { writable: 11 }]);
    await driver.quiesce();
    const isa = fixture.sim.interrupts.filter((e) => e.kind === 'isa-irq');
    expect(isa.map((e) => ('level' in e ? e.level : -1))).toEqual([1, 0]);
    expect(transport.interrupt.counters.failures).toBe(0);
    transport.close();
  });

  it('close resets the device and unmaps guest memory even when Xen no longer has the server (guest gone)', async () => {
    fixture = await simFixture('hvm');
    const errors: unknown[] = [];
    const real = fixture.server;
    // What real Xen answers once the guest's domain, and with it the ioreq server, is destroyed.
    const server = Object.create(real) as IoreqServer;
    server.claimMmio = (start, length, handler, options) => {
      const claim = real.claimMmio(start, length, handler, options);
      return {
        close: () => {
          claim.close();
          throw new XenError('ENOENT', 'devicemodel', 'unmap_io_range_from_ioreq_server');
        },
      };
    };
    const memory = foreignMemory(fixture);
    const transport = new MmioTransport({
      server,
      device: templateDevice(),
      memory,
      base: 0xfeb0_0000n,
      interrupt: { kind: 'none' },
      onError: (error) => errors.push(error),
    });
    real.enable();
    const driver = await MmioGuestDriver.probe(fixture.sim, {
      domid: fixture.guest.domid,
      base: 0xfeb0_0000n,
      dma: physicalDma(),
    });
    await driver.request(0, [{ data: text('gone') }, { writable: 12 }]);
    await driver.quiesce();
    expect(memory.liveMappings()).toBeGreaterThan(0);
    expect(() => transport.close()).not.toThrow();
    expect(errors.some((e) => XenError.isInstance(e) && e.code === 'ENOENT')).toBe(true);
    expect(memory.liveMappings()).toBe(0);
    expect(transport.controller.status).toBe(0);
    expect(transport.closed).toBe(true);
    transport.close(); // idempotent: nothing more is reported
    expect(errors.filter((e) => XenError.isInstance(e))).toHaveLength(1);
  });

  it('counts a host interrupt failure (set_irq_level on x86) without failing the guest', async () => {
    fixture = await simFixture('hvm');
    const errors: unknown[] = [];
    const transport = new MmioTransport({
      server: fixture.server,
      device: templateDevice(),
      memory: foreignMemory(fixture),
      base: 0xfeb0_0000n,
      interrupt: { kind: 'spi', irq: 33 },
      onError: (error) => errors.push(error),
    });
    fixture.server.enable();
    const driver = await MmioGuestDriver.probe(fixture.sim, {
      domid: fixture.guest.domid,
      base: 0xfeb0_0000n,
      dma: physicalDma(),
    });
    const used = await driver.request(0, [{ data: text('poll') }, { writable: 12 }]);
    expect(used.length).toBe(12);
    expect(transport.interrupt.counters.failures).toBeGreaterThan(0);
    expect(errors.length).toBeGreaterThan(0);
    transport.close();
  });
});
