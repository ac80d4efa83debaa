import { createXenSimulator, type XenSimulator } from '@xvio/xen';
import { afterEach, describe, expect, it } from 'vitest';
import {
  LibxlBackendNode,
  LibxlDeviceError,
  libxlBackendPath,
  listLibxlVirtioDevices,
  readLibxlVirtioDevice,
} from './mmio-libxl.js';

/** What libxl__set_xenstore_virtio plus the generic device code write for one device. */
async function writeLibxlNode(sim: XenSimulator, domid: number, devid: number, keys: Record<string, string>) {
  const store = sim.services(0).store;
  const path = libxlBackendPath(0, domid, devid);
  for (const [key, value] of Object.entries({
    frontend: `/local/domain/${domid}/device/virtio/${devid}`,
    'frontend-id': String(domid),
    online: '1',
    state: '1',
    ...keys,
  })) {
    await store.write(`${path}/${key}`, value);
  }
  return { store, path };
}

describe('libxl virtio-mmio nodes', () => {
  let sim: XenSimulator | undefined;
  afterEach(async () => {
    await sim?.close();
    sim = undefined;
  });

  it('reads irq, base, type and transport as libxl writes them', async () => {
    sim = createXenSimulator();
    const guest = sim.createDomain({ type: 'arm' });
    const { store, path } = await writeLibxlNode(sim, guest.domid, 0, {
      irq: '33',
      base: String(0x0200_0000),
      type: 'virtio,device4',
      transport: 'mmio',
    });
    const device = await readLibxlVirtioDevice(store, path);
    expect(device).toMatchObject({
      frontendDomid: guest.domid,
      devid: 0,
      irq: 33,
      base: 0x0200_0000n,
      deviceId: 4,
    });
    const listed = await listLibxlVirtioDevices(store, 0);
    expect(listed.devices).toHaveLength(1);
    expect(listed.errors).toEqual([]);
  });

  it('reports malformed nodes without throwing from the listing', async () => {
    sim = createXenSimulator();
    const guest = sim.createDomain({ type: 'arm' });
    await writeLibxlNode(sim, guest.domid, 0, { irq: '33', base: '12x', type: 'virtio,device4' });
    await writeLibxlNode(sim, guest.domid, 1, {
      irq: '34',
      base: String(0x0200_0200),
      type: 'virtio,device4',
      transport: 'pci',
    });
    await writeLibxlNode(sim, guest.domid, 2, {
      irq: '35',
      base: String(0x0200_0400),
      type: 'virtio,devicezz',
    });
    const listed = await listLibxlVirtioDevices(sim.services(0).store, 0);
    expect(listed.devices).toEqual([]);
    expect(listed.errors.map((e) => e.code).sort()).toEqual([
      'invalid-key',
      'invalid-key',
      'unsupported-transport',
    ]);
    expect(listed.errors.every((e) => LibxlDeviceError.isInstance(e))).toBe(true);
  });

  it('goes to InitWait, Connected, and Closed when the toolstack removes the device', async () => {
    sim = createXenSimulator();
    const guest = sim.createDomain({ type: 'arm' });
    const { store, path } = await writeLibxlNode(sim, guest.domid, 0, {
      irq: '33',
      base: String(0x0200_0000),
      type: 'virtio,device4',
    });
    const node = new LibxlBackendNode(store, await readLibxlVirtioDevice(store, path));
    let removed = 0;
    await node.initWait(() => {
      removed++;
      void node.close();
    });
    expect(await store.read(`${path}/state`)).toBe('2');
    await node.connected();
    expect(await store.read(`${path}/state`)).toBe('4');
    await store.write(`${path}/online`, '0');
    await store.write(`${path}/state`, '5');
    for (let i = 0; i < 100 && (await store.read(`${path}/state`)) !== '6'; i++)
      await new Promise((r) => setTimeout(r, 2));
    expect(removed).toBe(1);
    expect(await store.read(`${path}/state`)).toBe('6');
  });
});
