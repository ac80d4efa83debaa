import { createGrantMapMemory } from '@xvio/grant-pool';
import { afterEach, describe, expect, it } from 'vitest';
import { VIRTIO_F_ACCESS_PLATFORM } from '../src/index.js';
import { grantDma, XenbusGuestDriver } from '../src/testing/drivers/index.js';
import { addXenbusDevice, XENBUS_STATE_CONNECTED, XenbusBackend } from '../src/xenbus/index.js';
import { decode, type SimFixture, simFixture, templateDevice, text } from './sim-fixtures.js';

describe('virtio-xenbus through the simulator', () => {
  let fixture: SimFixture | undefined;
  afterEach(async () => {
    await fixture?.close();
    fixture = undefined;
  });

  it('connects through the XenbusState handshake and completes a request', async () => {
    fixture = await simFixture('pv', { ioreq: false });
    const { sim, guest, dom0 } = fixture;
    await addXenbusDevice(dom0.store, 0, guest.domid, 0);
    const backend = new XenbusBackend({
      services: dom0,
      backendDomid: 0,
      frontendDomid: guest.domid,
      devid: 0,
      device: templateDevice(),
      memory: createGrantMapMemory({ grants: dom0.grants, domid: guest.domid }),
      platformFeatures: VIRTIO_F_ACCESS_PLATFORM,
    });
    await backend.start();
    const driver = await XenbusGuestDriver.probe(sim, {
      domid: guest.domid,
      devid: 0,
      dma: grantDma(guest, 0),
    });
    expect(await driver.backendState()).toBe(XENBUS_STATE_CONNECTED);
    const used = await driver.request(0, [{ data: text('Hello') }, { writable: 13 }]);
    expect(decode(used.written[0]!.subarray(8))).toBe('hELLO');
    await driver.remove();
    await backend.close();
  });

  for (const type of ['hvm', 'pvh', 'arm'] as const) {
    it(`works the same on a ${type} guest (xenstore, grants and event channels only)`, async () => {
      fixture = await simFixture(type, { ioreq: false });
      const { sim, guest, dom0 } = fixture;
      await addXenbusDevice(dom0.store, 0, guest.domid, 0);
      const backend = new XenbusBackend({
        services: dom0,
        backendDomid: 0,
        frontendDomid: guest.domid,
        devid: 0,
        device: templateDevice(),
        memory: createGrantMapMemory({ grants: dom0.grants, domid: guest.domid }),
        platformFeatures: VIRTIO_F_ACCESS_PLATFORM,
      });
      await backend.start();
      const driver = await XenbusGuestDriver.probe(sim, {
        domid: guest.domid,
        devid: 0,
        dma: grantDma(guest, 0),
      });
      const used = await driver.request(0, [{ data: text('Any') }, { writable: 11 }]);
      expect(decode(used.written[0]!.subarray(8))).toBe('aNY');
      expect(sim.interrupts).toEqual([]); // no emulated interrupt at all: event channels only
      await driver.remove();
      await backend.close();
    });
  }
});
