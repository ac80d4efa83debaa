import { afterEach, describe, expect, it } from 'vitest';
import { MmioTransport } from '../src/mmio/index.js';
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
});
