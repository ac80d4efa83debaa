// XEN_MMAP grant regions end to end: a simulated Xen guest whose driver grants rings and
// buffers as Linux's xen-grant-dma does, a frontend that sends grant regions of that guest
// over a real vhost-user socket, and the backend mapping each request through gntdev
// (simulated, permissions enforced) and unmapping it before the used element is published.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GRANT_ADDRESS_FLAG } from '@xvio/grant-pool';
import { createXenSimulator, type XenServices, type XenSimulator } from '@xvio/xen';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ChainIo } from '../chain-io.js';
import { openChain } from '../chain-io.js';
import { serviceQueue } from '../queue-service.js';
import {
  DESC_ADDR,
  DESC_FLAGS,
  DESC_NEXT,
  DESC_SIZE,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from '../split-ring-wire.js';
import type { DeviceContext, VirtioDevice } from '../virtio-device.js';
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_VERSION_1 } from '../virtio-features.js';
import { createEventFd, TestFrontend } from './vhost-user-frontend.js';
import { closeFd } from './vhost-user-libc.js';
import { serveVhostUser, type VhostUserServer } from './vhost-user-server.js';
import {
  encodeSingleRegion,
  encodeU64,
  ProtocolFeature,
  Request,
  VHOST_USER_F_PROTOCOL_FEATURES,
  XEN_MMAP_GRANT,
  XEN_MMAP_NO_ADVANCE_MAP,
} from './vhost-user-wire.js';
import { createXenRegionMapper } from './vhost-user-xen.js';
import { XenGrantFrontend, type XenGrantLayout } from './vhost-user-xen-frontend.js';

/**
 * Echoes each request: the readable bytes, reversed, into the writable buffers. With
 * `hold`, requests are mapped and kept (a device waiting for its host) instead.
 */
function echoDevice(options: { hold?: boolean } = {}) {
  let context: DeviceContext | undefined;
  const held: ChainIo[] = [];
  const device = {
    deviceType: 0x1f,
    name: 'echo0',
    queueMaxSizes: [64],
    features: 0n,
    configSize: 0,
    requests: 0,
    faults: 0,
    held,
    readConfig() {},
    writeConfig() {},
    activate(next: DeviceContext) {
      context = next;
    },
    notify(queueIndex: number) {
      if (!context) return;
      const active = context;
      const result = serviceQueue(active, queueIndex, (chain) => {
        const io = openChain(active.memory, chain);
        device.requests++;
        if (options.hold) {
          held.push(io);
          return 'defer';
        }
        const input = new Uint8Array(io.reader.remaining);
        io.reader.read(input);
        io.writer.write(input.reverse());
        return io.close();
      });
      device.faults += result.faulted;
    },
    reset() {
      context = undefined;
    },
  };
  return device satisfies VirtioDevice;
}

let dir: string;
let sim: XenSimulator;
let backendServices: XenServices;
let servers: VhostUserServer[];
let frontends: XenGrantFrontend[];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'xvio-vu-grant-'));
  sim = createXenSimulator();
  backendServices = sim.services(0);
  servers = [];
  frontends = [];
});

afterEach(async () => {
  for (const frontend of frontends) frontend.dispose();
  for (const server of servers) await server.close();
  await backendServices.close();
  rmSync(dir, { recursive: true, force: true });
});

const FEATURES = VIRTIO_F_VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES;

async function setup(device: VirtioDevice, layout: XenGrantLayout, eventIdx = false) {
  const socketPath = join(dir, `${layout}.sock`);
  const server = serveVhostUser({
    socketPath,
    device: () => device,
    xenMapper: createXenRegionMapper({ grants: backendServices.grants }),
    log: process.env.VU_DEBUG ? console : undefined,
  });
  servers.push(server);
  const guest = sim.createDomain({ memoryBytes: 4 << 20 });
  const fdsBefore = readdirSync('/proc/self/fd').length;
  const frontend = await XenGrantFrontend.connect({
    socketPath,
    guest,
    queueSizes: [16],
    layout,
    features: FEATURES | (eventIdx ? VIRTIO_F_EVENT_IDX : 0n),
    eventIdx,
  });
  frontends.push(frontend);
  return { server, guest, frontend, queue: frontend.queues[0]!, fdsBefore };
}

/** Waits until `condition` holds (the backend runs on the same event loop). */
async function until(condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 5));
  if (!condition()) throw new Error(`timed out waiting for ${what}`);
}

describe('vhost-user XEN_MMAP grant regions', () => {
  for (const layout of ['on-demand', 'rings-in-advance'] as const) {
    it(`serves requests whose rings and buffers are grants (${layout} layout), unmapping each before completing it`, async () => {
      const device = echoDevice();
      const { frontend, queue } = await setup(device, layout, true);
      const ringMappings = backendServices.grants.liveMappings();
      for (let round = 0; round < 20; round++) {
        const data = Uint8Array.from({ length: 100 + round * 300 }, (_, i) => (i * 7 + round) & 0xff);
        // Buffers cross pages (the driver spreads their offsets): consecutive references.
        queue.add([{ data }, { writable: 64 }, { writable: data.length - 64 }]);
        frontend.kick(0, round === 0);
        await frontend.waitCall(0);
        const [used, ...more] = queue.collect();
        expect(more).toEqual([]);
        expect(used!.length).toBe(data.length);
        const echoed = new Uint8Array(data.length);
        echoed.set(used!.written[0]!, 0);
        echoed.set(used!.written[1]!, 64);
        expect(echoed).toEqual(data.slice().reverse());
        // The driver revoked every grant of the request (Linux marks the device broken otherwise).
        expect(queue.broken).toBe(false);
        expect(backendServices.grants.liveMappings()).toBe(ringMappings);
      }
      expect(device.requests).toBe(20);
      // Rings stay mapped while the device runs: views, or the regions mapped in advance.
      expect(ringMappings).toBe(layout === 'on-demand' ? 3 : 1);
    });
  }

  it('maps a readable buffer read-only and never writes a buffer granted read-only', async () => {
    const device = echoDevice();
    const { frontend, guest, queue } = await setup(device, 'on-demand');
    const head = queue.add([{ data: new Uint8Array(32).fill(5) }, { writable: 32 }])!;
    // The guest gets the device-writable buffer wrong: it grants that page read-only (same
    // reference, read-only entry), as a buggy or hostile driver may.
    const table = guest.services().grants;
    const descriptors = readChain(guest, queue, head);
    const writable = descriptors.find((d) => d.flags & VIRTQ_DESC_F_WRITE)!;
    const ref = Number((writable.address & ~GRANT_ADDRESS_FLAG) >> 12n);
    const frame = guest.grantEntry(ref).frame;
    table.endAccess(ref);
    expect(table.grantAccess(0, frame, { readOnly: true })).toBe(ref);
    frontend.kick(0, true);
    await frontend.waitCall(0);
    const [used] = queue.collect();
    // A guest fault: the request completes empty, the buffer keeps the driver's bytes.
    expect(used!.length).toBe(0);
    expect(device.faults).toBe(1);
    expect(guest.memory[Number(writable.physical)]).toBe(0xee);
    expect(backendServices.grants.liveMappings()).toBe(3);
    // The device goes on with the next request.
    queue.add([{ data: Uint8Array.of(1, 2, 3) }, { writable: 3 }]);
    frontend.kick(0, true);
    await frontend.waitCall(0);
    expect(queue.collect()[0]!.written[0]).toEqual(Uint8Array.of(3, 2, 1));
  });

  it('releases every grant mapping when the frontend drops mid-request, so the guest can revoke them', async () => {
    const device = echoDevice({ hold: true });
    const { server, frontend, queue, fdsBefore } = await setup(device, 'on-demand');
    queue.add([{ data: new Uint8Array(5000).fill(1) }, { writable: 9000 }]);
    frontend.kick(0, true);
    await until(() => device.held.length === 1, 'the request to be held');
    // Three ring views and the held request's two batches (read-only and writable pages).
    expect(backendServices.grants.liveMappings()).toBe(5);
    const disconnected = new Promise((resolve) => server.on('disconnect', resolve));
    frontend.close();
    await disconnected;
    expect(backendServices.grants.liveMappings()).toBe(0);
    // The device finishing late releases nothing twice.
    device.held[0]!.close();
    expect(backendServices.grants.liveMappings()).toBe(0);
    queue.destroy();
    expect(queue.broken).toBe(false);
    // Every fd of the connection is gone too (region fds, kicks and calls, the socket).
    frontend.dispose();
    expect(readdirSync('/proc/self/fd').length).toBe(fdsBefore);
  });

  it('adds and removes grant regions one by one (CONFIGURE_MEM_SLOTS)', async () => {
    const socketPath = join(dir, 'slots.sock');
    const server = serveVhostUser({
      socketPath,
      device: () => echoDevice(),
      xenMapper: createXenRegionMapper({ grants: backendServices.grants }),
      offerMemorySlots: true,
    });
    servers.push(server);
    const guest = sim.createDomain({ memoryBytes: 1 << 20 });
    const frontend = new TestFrontend(socketPath);
    frontend.send(
      Request.SET_PROTOCOL_FEATURES,
      encodeU64(ProtocolFeature.REPLY_ACK | ProtocolFeature.XEN_MMAP | ProtocolFeature.CONFIGURE_MEM_SLOTS),
    );
    const region = {
      guestAddress: GRANT_ADDRESS_FLAG,
      size: BigInt(guest.grantEntries * 4096),
      userAddress: 0n,
      mmapOffset: 0n,
      xenFlags: XEN_MMAP_GRANT | XEN_MMAP_NO_ADVANCE_MAP,
      domid: guest.domid,
    };
    const fd = createEventFd();
    try {
      expect(await frontend.acked(Request.ADD_MEM_REG, encodeSingleRegion(region, true), [fd])).toBe(0n);
      expect(server.backend!.memory.regions).toHaveLength(1);
      // Overlapping guest space is refused; the same frontend address (0) is not.
      const overlapping = { ...region, guestAddress: GRANT_ADDRESS_FLAG + 0x1000n, size: 0x1000n };
      expect(await frontend.acked(Request.ADD_MEM_REG, encodeSingleRegion(overlapping, true), [fd])).toBe(1n);
      const next = { ...region, guestAddress: region.guestAddress + region.size, size: 0x1000n };
      expect(await frontend.acked(Request.ADD_MEM_REG, encodeSingleRegion(next, true), [fd])).toBe(0n);
      expect(await frontend.acked(Request.REM_MEM_REG, encodeSingleRegion(region, true))).toBe(0n);
      expect(await frontend.acked(Request.REM_MEM_REG, encodeSingleRegion(region, true))).toBe(1n);
      expect(server.backend!.memory.regions.map((r) => r.guestAddress)).toEqual([next.guestAddress]);
    } finally {
      closeFd(fd);
      frontend.close();
    }
  });

  it('marks the device broken when a descriptor points outside every region', async () => {
    const device = echoDevice();
    const { server, guest, frontend, queue } = await setup(device, 'on-demand');
    const head = queue.add([{ writable: 16 }])!;
    // A guest-physical address under grant usage: reaches no region of the table.
    guest.memoryView.setBigUint64(descriptorPhysical(guest, queue, head) + DESC_ADDR, 0x1000n, true);
    frontend.kick(0, true);
    await until(() => server.backend?.metrics.deviceFailures === 1, 'NEEDS_RESET');
    expect(backendServices.grants.liveMappings()).toBe(3);
  });
});

type Guest = { memoryView: DataView; grantEntry(ref: number): { frame: number } };

/** The guest-physical address behind a grant address (the frame its reference grants). */
function physical(guest: Guest, address: bigint): bigint {
  const ref = Number((address & ~GRANT_ADDRESS_FLAG) >> 12n);
  return BigInt(guest.grantEntry(ref).frame) * 4096n + (address & 0xfffn);
}

/** Guest-physical address of descriptor `index` (the driver reads its own ring there). */
function descriptorPhysical(guest: Guest, queue: { descAddress: bigint }, index: number): number {
  return Number(physical(guest, queue.descAddress)) + index * DESC_SIZE;
}

/** The descriptors of a chain as the driver wrote them, with their buffers' guest-physical addresses. */
function readChain(
  guest: Guest,
  queue: { descAddress: bigint },
  head: number,
): { address: bigint; flags: number; physical: bigint }[] {
  const out: { address: bigint; flags: number; physical: bigint }[] = [];
  let index = head;
  for (let n = 0; n < 16; n++) {
    const at = descriptorPhysical(guest, queue, index);
    const address = guest.memoryView.getBigUint64(at + DESC_ADDR, true);
    const flags = guest.memoryView.getUint16(at + DESC_FLAGS, true);
    out.push({ address, flags, physical: physical(guest, address) });
    if (!(flags & VIRTQ_DESC_F_NEXT)) break;
    index = guest.memoryView.getUint16(at + DESC_NEXT, true);
  }
  return out;
}
