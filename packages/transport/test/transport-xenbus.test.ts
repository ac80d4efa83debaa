import { createGrantMapMemory } from '@xvio/grant-pool';
import { afterEach, describe, expect, it } from 'vitest';
import { VIRTIO_F_ACCESS_PLATFORM } from '../src/index.js';
import { grantDma, XenbusGuestDriver } from '../src/testing/drivers/index.js';
import {
  addXenbusDevice,
  XENBUS_STATE_CONNECTED,
  XENBUS_STATE_INIT_WAIT,
  XenbusBackend,
  type XenbusGoneReason,
} from '../src/xenbus/index.js';
import { decode, type SimFixture, simFixture, templateDevice, text } from './sim-fixtures.js';
import { createRig } from './transport-rig.js';

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

describe('virtio-xenbus when the frontend domain dies', () => {
  const parentOf = (path: string) => path.slice(0, path.lastIndexOf('/'));
  /** Waits (bounded) for the backend to find its frontend gone on its own. */
  const goneWithin = async (backend: XenbusBackend, ms = 2000) => {
    const deadline = performance.now() + ms;
    while (backend.gone === undefined && performance.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    await backend.settled();
    return backend.gone;
  };

  for (const strategy of ['grant-map', 'persistent-pool'] as const) {
    it(`cleans up unaided when the guest is destroyed mid-transfer (${strategy})`, async () => {
      const rig = await createRig('xenbus', strategy);
      const { sim, guest, dom0 } = rig.fixture;
      try {
        const backend = rig.transport as XenbusBackend;
        const driver = rig.driver as XenbusGuestDriver;
        const used = await driver.request(0, [{ data: text('first') }, { writable: 13 }]);
        expect(decode(used.written[0]!.subarray(8))).toBe('FIRST');
        const ports = backend.eventChannelPorts;
        expect(ports.length).toBeGreaterThan(0);
        const configRef = Number(await dom0.store.read(`${backend.paths.backend}/config-ref`));
        expect(sim.dom0.grantEntry(configRef).flags).not.toBe(0);
        // Requests the backend has not served yet, then the guest dies (xl destroy).
        for (let i = 0; i < 8; i++) driver.queue(0).add([{ data: text(`in flight ${i}`) }, { writable: 24 }]);
        await driver.kick(0);
        sim.destroyDomain(guest.domid);
        const reason = await goneWithin(backend);
        expect(['frontend-removed', 'frontend-domain-gone']).toContain(reason);
        expect(backend.counters.frontendGone).toBe(1);
        expect(rig.memory.liveMappings()).toBe(0);
        expect(dom0.grants.liveMappings()).toBe(0);
        expect(backend.eventChannelPorts).toEqual([]);
        for (const port of ports) expect(sim.eventChannelBits(0, port)).toBeUndefined();
        expect(sim.dom0.grantEntry(configRef).flags).toBe(0);
        expect(backend.controller.status).toBe(0);
        expect(await dom0.store.exists(backend.paths.backend)).toBe(false);
        expect(await dom0.store.exists(parentOf(backend.paths.backend))).toBe(false);
        // A close afterwards (the toolstack's old way) changes nothing and does not fail.
        await backend.close();
        expect(backend.counters.frontendGone).toBe(1);
      } finally {
        await rig.fixture.close();
      }
    });
  }

  it('notices @releaseDomain for its frontend even when the frontend directory stays', async () => {
    const rig = await createRig('xenbus', 'grant-map');
    const { sim, guest, dom0 } = rig.fixture;
    try {
      const backend = rig.transport as XenbusBackend;
      // Another domain dying is not ours.
      const other = sim.createDomain({ type: 'pv', memoryBytes: 1 << 20 });
      sim.destroyDomain(other.domid);
      await new Promise((resolve) => setTimeout(resolve, 20));
      await backend.settled();
      expect(backend.gone).toBeUndefined();
      // Our guest's home disappears without its device nodes (a toolstack that keeps the
      // frontend directory elsewhere): only @releaseDomain can tell.
      const home = await dom0.store.getDomainPath(guest.domid);
      await dom0.store.write(`${home}/name`, 'still here');
      sim.xenstored.releaseDomain(guest.domid);
      expect(['frontend-removed', 'frontend-domain-gone']).toContain(await goneWithin(backend));
      expect(await dom0.store.exists(backend.paths.backend)).toBe(false);
      expect(rig.memory.liveMappings()).toBe(0);
    } finally {
      await rig.fixture.close();
    }
  });

  it('takes a frontend state of 0 (Unknown) as the frontend gone, but ignores a malformed one', async () => {
    const fixture = await simFixture('pv', { ioreq: false });
    try {
      const { guest, dom0 } = fixture;
      const paths = await addXenbusDevice(dom0.store, 0, guest.domid, 0);
      const reasons: XenbusGoneReason[] = [];
      const backend = new XenbusBackend({
        services: dom0,
        backendDomid: 0,
        frontendDomid: guest.domid,
        devid: 0,
        device: templateDevice(),
        memory: createGrantMapMemory({ grants: dom0.grants, domid: guest.domid }),
        platformFeatures: VIRTIO_F_ACCESS_PLATFORM,
        onFrontendGone: (reason) => reasons.push(reason),
      });
      await backend.start();
      const store = guest.services().store;
      await store.write(`${paths.frontend}/state`, 'garbage');
      await new Promise((resolve) => setTimeout(resolve, 20));
      await backend.settled();
      expect(backend.gone).toBeUndefined();
      expect(backend.xenbusState).toBe(XENBUS_STATE_INIT_WAIT);
      await store.write(`${paths.frontend}/state`, '0');
      expect(await goneWithin(backend)).toBe('frontend-unknown');
      expect(reasons).toEqual(['frontend-unknown']);
      expect(await dom0.store.exists(paths.backend)).toBe(false);
      expect(await dom0.store.exists(parentOf(paths.backend))).toBe(false);
    } finally {
      await fixture.close();
    }
  });
});
