import { afterEach, describe, expect, it } from 'vitest';
import { PciTransport } from '../src/pci/index.js';
import { PciGuestDriver, physicalDma } from '../src/testing/drivers/index.js';
import { decode, foreignMemory, type SimFixture, simFixture, templateDevice, text } from './sim-fixtures.js';

const pci = { segment: 0, bus: 0, device: 5, function: 0 };

describe('virtio-pci through the simulator', () => {
  let fixture: SimFixture | undefined;
  afterEach(async () => {
    await fixture?.close();
    fixture = undefined;
  });

  for (const msix of [true, false]) {
    it(`enumerates, places the BAR and completes a request (${msix ? 'MSI-X' : 'INTx'})`, async () => {
      fixture = await simFixture('hvm');
      const transport = new PciTransport({
        server: fixture.server,
        device: templateDevice(),
        memory: foreignMemory(fixture),
        pci,
      });
      fixture.server.enable();
      const driver = await PciGuestDriver.probe(fixture.sim, {
        domid: fixture.guest.domid,
        pci,
        dma: physicalDma(),
        msix,
      });
      expect(driver.deviceId).toBe(0xbf);
      expect(driver.barSize).toBe(0x8000n);
      const used = await driver.request(0, [{ data: text('Hello') }, { writable: 13 }]);
      expect(decode(used.written[0]!.subarray(8))).toBe('hELLO');
      await driver.quiesce();
      expect(fixture.sim.interrupts.some((e) => e.kind === (msix ? 'msi' : 'pci-intx'))).toBe(true);
      expect(fixture.sim.unansweredIoreqs()).toEqual([]);
      transport.close();
    });
  }

  it('runs on a PVH guest with MSI-X only (no INTx pin)', async () => {
    fixture = await simFixture('pvh');
    const transport = new PciTransport({
      server: fixture.server,
      device: templateDevice(),
      memory: foreignMemory(fixture),
      pci,
      intx: false,
    });
    fixture.server.enable();
    const driver = await PciGuestDriver.probe(fixture.sim, {
      domid: fixture.guest.domid,
      pci,
      dma: physicalDma(),
    });
    expect(await driver.configRead(0x3d, 1)).toBe(0); // interrupt pin: none
    const used = await driver.request(0, [{ data: text('pvh') }, { writable: 11 }]);
    expect(decode(used.written[0]!.subarray(8))).toBe('PVH');
    await driver.quiesce();
    expect(transport.counters.msiSent).toBeGreaterThan(0);
    expect(transport.counters.interruptFailures).toBe(0);
    transport.close();
  });
});
