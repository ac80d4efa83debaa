import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { XenError } from './xen-errors.js';
import { createIoreqServer, type IoreqServer, type MmioRequest } from './xen-ioreq-server.js';
import type { XenServices } from './xen-services.js';
import { createXenSimulator, type SimDomain, type XenSimulator } from './xen-sim.js';

let sim: XenSimulator;
let guest: SimDomain;
let dom0: XenServices;
let server: IoreqServer;

beforeEach(() => {
  sim = createXenSimulator();
  guest = sim.createDomain({ memoryBytes: 1 << 16, vcpus: 2 });
  dom0 = sim.services(0);
});

afterEach(async () => {
  await server?.close();
  await sim.close();
});

const MMIO_BASE = 0xfe00_0000n;
const pci = { segment: 0, bus: 0, device: 5, function: 0 };

describe('ioreq server on the simulator', () => {
  it('answers the initial INVALIDATE broadcast and MMIO reads and writes of every size', async () => {
    server = createIoreqServer(dom0, { domid: guest.domid });
    const writes: MmioRequest[] = [];
    server.claimMmio(MMIO_BASE, 0x1000n, (request) => {
      if (request.direction === 'write') {
        writes.push(request);
        return undefined;
      }
      return 0x1122_3344_5566_7788n + BigInt(request.offset);
    });
    server.enable();
    const vcpu = guest.vcpu(1);
    expect(await vcpu.mmioRead(MMIO_BASE + 8n, 8)).toBe(0x1122_3344_5566_7790n);
    expect(await vcpu.mmioRead(MMIO_BASE, 4)).toBe(0x5566_7788n);
    expect(await vcpu.mmioRead(MMIO_BASE, 2)).toBe(0x7788n);
    expect(await vcpu.mmioRead(MMIO_BASE, 1)).toBe(0x88n);
    await vcpu.mmioWrite(MMIO_BASE + 0x10n, 8, 0xdead_beef_cafe_f00dn);
    await vcpu.mmioWrite(MMIO_BASE + 0x20n, 1, 0x1ffn);
    expect(writes.map((w) => [w.offset, w.size, w.value, w.vcpu])).toEqual([
      [0x10, 8, 0xdead_beef_cafe_f00dn, 1],
      [0x20, 1, 0xffn, 1],
    ]);
    expect(server.stats.invalidates).toBe(1);
    expect(server.stats.answered).toBe(7);
    expect(sim.unansweredIoreqs()).toEqual([]);
  });

  it('keeps a vCPU blocked while an asynchronous handler has not answered, and reports it', async () => {
    server = createIoreqServer(dom0, { domid: guest.domid });
    let release: (value: bigint) => void = () => {};
    server.claimMmio(MMIO_BASE, 0x100n, () => new Promise<bigint>((resolve) => (release = resolve)));
    server.enable();
    const read = guest.vcpu(0).mmioRead(MMIO_BASE, 4);
    await new Promise((resolve) => setTimeout(resolve, 20));
    const [blocked] = sim.unansweredIoreqs(10);
    expect(blocked).toMatchObject({
      domid: guest.domid,
      vcpu: 0,
      addr: MMIO_BASE,
      size: 4,
      direction: 'read',
    });
    expect(guest.vcpu(0).blockedOn).toBeDefined();
    expect(server.inFlight()).toEqual([0]);
    release(0xabcdn);
    expect(await read).toBe(0xabcdn);
    expect(sim.unansweredIoreqs()).toEqual([]);
  });

  it('rejects a timed-out access with ETIMEDOUT but leaves the vCPU blocked, as on Xen', async () => {
    server = createIoreqServer(dom0, { domid: guest.domid });
    server.claimMmio(MMIO_BASE, 0x100n, () => new Promise<bigint>(() => {}));
    server.enable();
    await expect(guest.vcpu(0).mmioRead(MMIO_BASE, 4, { timeoutMs: 30 })).rejects.toMatchObject({
      code: 'ETIMEDOUT',
    });
    expect(sim.unansweredIoreqs()).toHaveLength(1);
  });

  it('serves port I/O and PCI config space of a claimed function', async () => {
    server = createIoreqServer(dom0, { domid: guest.domid });
    server.claimPorts(0xc000, 0x40, (request) =>
      request.direction === 'read' ? request.offset + 1 : undefined,
    );
    const config = new Map<number, bigint>([[0, 0x1041_1af4n]]);
    server.claimPciDevice(pci, (request) => {
      if (request.direction === 'write') {
        config.set(request.register, request.value);
        return undefined;
      }
      return config.get(request.register) ?? 0n;
    });
    server.enable();
    const vcpu = guest.vcpu(0);
    expect(await vcpu.portRead(0xc010, 2)).toBe(0x11n);
    expect(await vcpu.pciConfigRead(pci, 0, 4)).toBe(0x1041_1af4n);
    await vcpu.pciConfigWrite(pci, 0x10, 4, 0xfebf_0000n);
    expect(config.get(0x10)).toBe(0xfebf_0000n);
    // Another function and unclaimed addresses float high without reaching the server.
    expect(await vcpu.pciConfigRead({ ...pci, device: 6 }, 0, 4)).toBe(0xffff_ffffn);
    expect(await vcpu.mmioRead(0x1000n, 2)).toBe(0xffffn);
    expect(sim.stats.unclaimedAccesses).toBe(2);
  });

  it('delivers buffered writes through the buffered ring in order, with 8-byte writes in two slots', async () => {
    server = createIoreqServer(dom0, { domid: guest.domid, bufioreq: 'atomic' });
    const seen: [number, bigint, boolean][] = [];
    server.claimMmio(0xa0000n, 0x20000n, (request) => {
      seen.push([request.offset, request.value, request.buffered]);
      return undefined;
    });
    server.enable();
    const vcpu = guest.vcpu(0);
    await vcpu.mmioWrite(0xa0000n, 2, 0x1234n, { buffered: true });
    await vcpu.mmioWrite(0xa0008n, 8, 0x0102_0304_0506_0708n, { buffered: true });
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    expect(seen).toEqual([
      [0, 0x1234n, true],
      [8, 0x0102_0304_0506_0708n, true],
    ]);
    expect(server.stats.buffered).toBe(2);
  });

  it('answers all ones and reports a handler that throws; the vCPU is not left blocked', async () => {
    const errors: Error[] = [];
    server = createIoreqServer(dom0, { domid: guest.domid, onError: (error) => errors.push(error) });
    server.claimMmio(MMIO_BASE, 0x10n, () => {
      throw new Error('device exploded');
    });
    server.enable();
    expect(await guest.vcpu(0).mmioRead(MMIO_BASE, 4)).toBe(0xffff_ffffn);
    expect(errors.map((e) => e.message)).toEqual(['device exploded']);
    expect(server.stats.handlerErrors).toBe(1);
  });

  it('records interrupts raised through the server', () => {
    server = createIoreqServer(dom0, { domid: guest.domid });
    server.setPciIntxLevel(pci, 0, 1);
    server.setIsaIrqLevel(5, 1);
    server.injectMsi(0xfee0_0000n, 0xdd);
    expect(sim.interrupts).toEqual([
      { kind: 'pci-intx', domid: guest.domid, pci, intx: 0, level: 1 },
      { kind: 'isa-irq', domid: guest.domid, irq: 5, level: 1 },
      { kind: 'msi', domid: guest.domid, address: 0xfee0_0000n, data: 0xdd },
    ]);
    // set_irq_level is Arm-only: x86 answers EOPNOTSUPP.
    expect(() => server.setIrqLevel(40, 1)).toThrow(expect.objectContaining({ code: 'EOPNOTSUPP' }));
  });

  it('publishes each vCPU port (vp_eport) in the ioreq page only once the server is enabled, as Xen 4.17 does', () => {
    const id = dom0.deviceModel.createIoreqServer(guest.domid, 'off');
    const page = dom0.foreignMemory.mapResource(
      guest.domid,
      { type: 0, id, frame: 1, pages: 1 },
      { writable: true },
    );
    const view = new DataView(page.bytes.buffer, page.bytes.byteOffset, page.bytes.byteLength);
    expect([view.getUint32(24, true), view.getUint32(32 + 24, true)]).toEqual([0, 0]);
    dom0.deviceModel.setIoreqServerState(guest.domid, id, true);
    const ports = [view.getUint32(24, true), view.getUint32(32 + 24, true)];
    expect(ports.every((port) => port > 0)).toBe(true);
    expect(ports[0]).not.toBe(ports[1]);
    page.unmap();
    dom0.deviceModel.destroyIoreqServer(guest.domid, id);
  });

  it('enforces who may create servers and claim ranges', () => {
    const other = sim.createDomain({ memoryBytes: 1 << 16 });
    expect(() => createIoreqServer(other.services(), { domid: guest.domid })).toThrow(
      expect.objectContaining({ code: 'EPERM' }),
    );
    const pv = sim.createDomain({ memoryBytes: 1 << 16, type: 'pv' });
    expect(() => createIoreqServer(dom0, { domid: pv.domid })).toThrow(
      expect.objectContaining({ code: 'EINVAL' }),
    );
    server = createIoreqServer(dom0, { domid: guest.domid });
    server.claimMmio(MMIO_BASE, 0x100n, () => 0n);
    let error: unknown;
    try {
      server.claimMmio(MMIO_BASE + 0x80n, 0x100n, () => 0n);
    } catch (caught) {
      error = caught;
    }
    expect(XenError.isInstance(error) && error.code).toBe('EEXIST');
  });
});
