import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { adoptIoreqServer, createIoreqServer, type IoreqServer } from './xen-ioreq-server.js';
import type { XenServices } from './xen-services.js';
import { createXenSimulator, type SimDomain, type XenSimulator } from './xen-sim.js';

// A backend process that dies leaves its ioreq server in Xen (the server belongs to the
// emulating domain, not to the process): its claims stay, and a vCPU that trapped an access
// waits until some process of that domain answers. A restarted backend adopts the server.

let sim: XenSimulator;
let guest: SimDomain;
const servers: IoreqServer[] = [];

beforeEach(() => {
  sim = createXenSimulator();
  guest = sim.createDomain({ memoryBytes: 1 << 16, vcpus: 2 });
});

afterEach(async () => {
  for (const server of servers.splice(0)) await server.close();
  await sim.close();
});

const pci = { segment: 0, bus: 0, device: 5, function: 0 };
const MMIO_BASE = 0xfe00_0000n;
const settle = () => new Promise((resolve) => setTimeout(resolve, 20));

/** A backend "process": its own service handles, as a new process would open them. */
function process0(): XenServices {
  return sim.services(0);
}

describe('adopting an ioreq server after its creator died', () => {
  it('keeps the server, its claims and a waiting vCPU while no process serves it; the adopter answers', async () => {
    const first = process0();
    const old = createIoreqServer(first, { domid: guest.domid });
    old.claimPciDevice(pci, () => 0x1041_1af4n);
    old.claimMmio(MMIO_BASE, 0x1000n, () => 0x11n);
    old.enable();
    expect(await guest.vcpu(0).pciConfigRead(pci, 0, 4)).toBe(0x1041_1af4n);
    const id = old.id;
    // The process dies: the kernel unbinds its event channels and unmaps its pages; nobody
    // tells Xen about the server.
    old.abandon();
    await first.close();

    const waiting = guest.vcpu(1).mmioRead(MMIO_BASE + 8n, 4);
    await settle();
    expect(sim.unansweredIoreqs()).toEqual([
      expect.objectContaining({ vcpu: 1, serverId: id, addr: MMIO_BASE + 8n, direction: 'read' }),
    ]);

    const second = process0();
    const adopted = adoptIoreqServer(second, { domid: guest.domid, id });
    servers.push(adopted);
    expect(adopted.adopted).toBe(true);
    expect(adopted.id).toBe(id);
    // The claims are still Xen's: mapping them again would be EEXIST; they are registered only.
    adopted.claimPciDevice(pci, () => 0x1000_1af4n, { adopt: true });
    adopted.claimMmio(MMIO_BASE, 0x1000n, (request) => 0x2200n + BigInt(request.offset), { adopt: true });
    adopted.enable();
    expect(await waiting).toBe(0x2208n);
    expect(adopted.stats.resumed).toBe(1);
    expect(adopted.stats.orphaned).toBe(0);
    expect(await guest.vcpu(0).pciConfigRead(pci, 0, 4)).toBe(0x1000_1af4n);
    expect(sim.unansweredIoreqs()).toEqual([]);
    expect(sim.stats.unclaimedAccesses).toBe(0);
    await second.close();
  });

  it('answers a request the dead process had taken (IOREQ_INPROCESS) and never answered', async () => {
    const first = process0();
    const old = createIoreqServer(first, { domid: guest.domid });
    const taken: number[] = [];
    // The first owner takes the request and dies before answering.
    old.claimMmio(MMIO_BASE, 0x100n, (request) => {
      taken.push(request.offset);
      return new Promise<bigint>(() => {});
    });
    old.enable();
    const read = guest.vcpu(0).mmioRead(MMIO_BASE + 4n, 4);
    await settle();
    expect(taken).toEqual([4]);
    old.abandon();
    await first.close();
    expect(sim.unansweredIoreqs()).toHaveLength(1);

    const second = process0();
    const adopted = adoptIoreqServer(second, { domid: guest.domid, id: old.id });
    servers.push(adopted);
    adopted.claimMmio(MMIO_BASE, 0x100n, (request) => 0xab00n + BigInt(request.offset), { adopt: true });
    adopted.enable();
    expect(await read).toBe(0xab04n);
    expect(adopted.stats.resumed).toBe(1);
    expect(adopted.stats.orphaned).toBe(1);
    expect(sim.unansweredIoreqs()).toEqual([]);
    await second.close();
  });

  it('keeps the buffered mode of the adopted server and drains posted writes', async () => {
    const first = process0();
    const old = createIoreqServer(first, { domid: guest.domid, bufioreq: 'atomic' });
    old.claimMmio(0xa0000n, 0x1000n, () => undefined);
    old.enable();
    old.abandon();
    await first.close();
    const second = process0();
    const adopted = adoptIoreqServer(second, { domid: guest.domid, id: old.id });
    servers.push(adopted);
    const seen: bigint[] = [];
    adopted.claimMmio(
      0xa0000n,
      0x1000n,
      (request) => {
        seen.push(request.value);
        return undefined;
      },
      { adopt: true },
    );
    adopted.enable();
    await guest.vcpu(0).mmioWrite(0xa0010n, 4, 0x5a5an, { buffered: true });
    await settle();
    expect(seen).toEqual([0x5a5an]);
    expect(adopted.stats.buffered).toBe(1);
    await second.close();
  });

  it('refuses a server that does not exist (ENOENT) or that another domain emulates (EPERM)', async () => {
    const first = process0();
    const created = createIoreqServer(first, { domid: guest.domid });
    servers.push(created);
    const second = process0();
    expect(() => adoptIoreqServer(second, { domid: guest.domid, id: created.id + 7 })).toThrow(
      expect.objectContaining({ code: 'ENOENT' }),
    );
    const other = sim.createDomain({ memoryBytes: 1 << 16, privileged: true });
    expect(() => adoptIoreqServer(other.services(), { domid: guest.domid, id: created.id })).toThrow(
      expect.objectContaining({ code: 'EPERM' }),
    );
    await second.close();
  });

  it('destroys the server when the adopter closes it; abandoning is idempotent', async () => {
    const first = process0();
    const old = createIoreqServer(first, { domid: guest.domid });
    old.claimMmio(MMIO_BASE, 0x100n, () => 1n);
    old.enable();
    old.abandon();
    old.abandon();
    await first.close();
    const second = process0();
    const adopted = adoptIoreqServer(second, { domid: guest.domid, id: old.id });
    adopted.claimMmio(MMIO_BASE, 0x100n, () => 2n, { adopt: true });
    adopted.enable();
    expect(await guest.vcpu(0).mmioRead(MMIO_BASE, 1)).toBe(2n);
    await adopted.close();
    // Gone from Xen: nobody claims the range any more, and it cannot be adopted again.
    expect(await guest.vcpu(0).mmioRead(MMIO_BASE, 1)).toBe(0xffn);
    expect(() => adoptIoreqServer(second, { domid: guest.domid, id: old.id })).toThrow(
      expect.objectContaining({ code: 'ENOENT' }),
    );
    await second.close();
  });
});
