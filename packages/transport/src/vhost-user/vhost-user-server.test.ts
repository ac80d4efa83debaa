import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createXenSimulator } from '@xvio/xen';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { openChain } from '../chain-io.js';
import type { DescriptorChain } from '../descriptor-chain.js';
import { serviceQueue } from '../queue-service.js';
import { MockSplitQueue } from '../testing/mock-split-queue.js';
import type { DeviceContext, VirtioDevice } from '../virtio-device.js';
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1 } from '../virtio-features.js';
import {
  createEventFd,
  createSharedGuestMemory,
  drainEventFd,
  type SharedGuestMemory,
  signalEventFd,
  TestFrontend,
  waitEventFd,
} from './vhost-user-frontend.js';
import { closeFd } from './vhost-user-libc.js';
import { mapFdRegion } from './vhost-user-memory.js';
import { serveVhostUser, type VhostUserServer } from './vhost-user-server.js';
import { acceptUnix, listenUnix } from './vhost-user-socket.js';
import {
  encodeConfig,
  encodeInflight,
  encodeMemTable,
  encodeSingleRegion,
  encodeU64,
  encodeVringState,
  ProtocolFeature,
  payloadView,
  Request,
  VHOST_USER_F_PROTOCOL_FEATURES,
  XEN_MMAP_FOREIGN,
  XEN_MMAP_GRANT,
} from './vhost-user-wire.js';
import { createXenRegionMapper } from './vhost-user-xen.js';

/** A device for protocol tests: fills every writable buffer with the request's number. */
function patternDevice() {
  let context: DeviceContext | undefined;
  const config = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
  const device = {
    deviceType: 4,
    name: 'pattern0',
    queueMaxSizes: [256],
    features: 0n,
    configSize: config.length,
    requests: 0,
    activations: 0,
    resets: 0,
    readConfig(offset: number, target: Uint8Array) {
      target.set(config.subarray(offset, offset + target.length));
    },
    writeConfig(offset: number, source: Uint8Array) {
      config.set(source, offset);
    },
    activate(next: DeviceContext) {
      context = next;
      device.activations++;
    },
    notify(queueIndex: number) {
      if (!context) return;
      const active = context;
      serviceQueue(active, queueIndex, (chain) => {
        const io = openChain(active.memory, chain);
        device.requests++;
        io.writer.write(new Uint8Array(io.writer.remaining).fill(device.requests & 0xff));
        return io.close();
      });
    },
    reset() {
      context = undefined;
      device.resets++;
    },
    config,
  };
  return device satisfies VirtioDevice;
}

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

function memfdMappings(): number {
  return readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((line) => line.includes('memfd:xvio-test-guest')).length;
}

let dir: string;
let socketPath: string;
let servers: VhostUserServer[];
let frontends: TestFrontend[];
let guests: SharedGuestMemory[];
let eventFds: number[];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'xvio-vu-'));
  socketPath = join(dir, 'vu.sock');
  servers = [];
  frontends = [];
  guests = [];
  eventFds = [];
});

afterEach(async () => {
  for (const frontend of frontends) frontend.close();
  for (const server of servers) await server.close();
  for (const guest of guests) guest.close();
  for (const fd of eventFds) closeFd(fd);
  rmSync(dir, { recursive: true, force: true });
});

function serve(device: () => VirtioDevice, options: { once?: boolean; pollUs?: number } = {}) {
  const server = serveVhostUser({
    socketPath,
    device,
    ...options,
    log: process.env.VU_DEBUG ? console : undefined,
  });
  servers.push(server);
  return server;
}

function connect(): TestFrontend {
  const frontend = new TestFrontend(socketPath);
  frontends.push(frontend);
  return frontend;
}

function guest(size = 1 << 20): SharedGuestMemory {
  const memory = createSharedGuestMemory(size);
  guests.push(memory);
  return memory;
}

function eventFd(): number {
  const fd = createEventFd();
  eventFds.push(fd);
  return fd;
}

/** A connected frontend with one running ring of `size` entries. */
async function running(
  device = patternDevice(),
  options: { eventIdx?: boolean; size?: number; pollUs?: number } = {},
) {
  const server = serve(() => device, options.pollUs === undefined ? {} : { pollUs: options.pollUs });
  const frontend = connect();
  const memory = guest();
  const features =
    VIRTIO_F_VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES | (options.eventIdx ? VIRTIO_F_EVENT_IDX : 0n);
  const handshake = await frontend.handshake(memory, { features });
  const queue = new MockSplitQueue(memory.memory, {
    size: options.size ?? 16,
    eventIdx: options.eventIdx,
    seed: 7,
  });
  const kick = eventFd();
  const call = eventFd();
  const statuses = await frontend.startRing(0, queue, { kick, call });
  // The backend signals a call fd it receives for a running ring (a call lost while the fd
  // was replaced would hang the driver): start from a quiet fd.
  drainEventFd(call);
  return { server, frontend, memory, queue, kick, call, device, handshake, statuses };
}

describe('vhost-user backend handshake', () => {
  it('offers virtio 1, protocol features, indirect and event idx, and the protocol features it implements', async () => {
    servers.push(
      serveVhostUser({
        socketPath,
        device: () => patternDevice(),
        offerMemorySlots: true,
        offerXenMmap: true,
      }),
    );
    const frontend = connect();
    const features = await frontend.getU64(Request.GET_FEATURES);
    expect(features & VIRTIO_F_VERSION_1).toBe(VIRTIO_F_VERSION_1);
    expect(features & VHOST_USER_F_PROTOCOL_FEATURES).toBe(VHOST_USER_F_PROTOCOL_FEATURES);
    expect(features & VIRTIO_F_EVENT_IDX).toBe(VIRTIO_F_EVENT_IDX);
    expect(features & VIRTIO_F_INDIRECT_DESC).toBe(VIRTIO_F_INDIRECT_DESC);
    const protocol = await frontend.getU64(Request.GET_PROTOCOL_FEATURES);
    for (const bit of [
      ProtocolFeature.MQ,
      ProtocolFeature.REPLY_ACK,
      ProtocolFeature.CONFIG,
      ProtocolFeature.INFLIGHT_SHMFD,
      ProtocolFeature.RESET_DEVICE,
      ProtocolFeature.CONFIGURE_MEM_SLOTS,
      ProtocolFeature.XEN_MMAP,
    ]) {
      expect(protocol & bit).toBe(bit);
    }
    expect(protocol & ProtocolFeature.BACKEND_REQ).toBe(0n);
    const plain = serveVhostUser({ socketPath: join(dir, 'plain.sock'), device: () => patternDevice() });
    servers.push(plain);
    const other = new TestFrontend(join(dir, 'plain.sock'));
    frontends.push(other);
    expect((await other.getU64(Request.GET_PROTOCOL_FEATURES)) & ProtocolFeature.CONFIGURE_MEM_SLOTS).toBe(
      0n,
    );
    frontend.send(Request.SET_PROTOCOL_FEATURES, encodeU64(protocol));
    expect(await frontend.getU64(Request.GET_QUEUE_NUM)).toBe(1n);
    expect(await frontend.getU64(Request.GET_MAX_MEM_SLOTS)).toBe(32n);
    expect(await frontend.acked(Request.SET_OWNER)).toBe(0n);
  });

  it('refuses features it did not offer, with a failure acknowledgement', async () => {
    serve(() => patternDevice());
    const frontend = connect();
    frontend.send(Request.SET_PROTOCOL_FEATURES, encodeU64(ProtocolFeature.REPLY_ACK));
    expect(await frontend.acked(Request.SET_FEATURES, encodeU64(VIRTIO_F_VERSION_1 | (1n << 5n)))).toBe(1n);
    expect(await frontend.acked(Request.SET_FEATURES, encodeU64(VIRTIO_F_VERSION_1))).toBe(0n);
    expect(await frontend.acked(Request.SET_PROTOCOL_FEATURES, encodeU64(ProtocolFeature.BACKEND_REQ))).toBe(
      1n,
    );
  });

  it('reads and writes config space, and answers an out-of-range read with an empty payload', async () => {
    const device = patternDevice();
    serve(() => device);
    const frontend = connect();
    const reply = await frontend.request(Request.GET_CONFIG, encodeConfig({ offset: 2, size: 4, flags: 0 }));
    expect([...reply.payload.subarray(12)]).toEqual([3, 4, 5, 6]);
    expect(payloadView(reply.payload).getUint32(0, true)).toBe(2);
    const data = Uint8Array.of(9, 9);
    expect(
      await frontend.acked(Request.SET_CONFIG, encodeConfig({ offset: 6, size: 2, flags: 0 }, data)),
    ).toBe(0n);
    expect([...device.config.subarray(6)]).toEqual([9, 9]);
    const outside = await frontend.request(
      Request.GET_CONFIG,
      encodeConfig({ offset: 6, size: 4, flags: 0 }),
    );
    expect(outside.payload.length).toBe(0);
    expect(
      await frontend.acked(Request.SET_CONFIG, encodeConfig({ offset: 7, size: 2, flags: 0 }, data)),
    ).toBe(1n);
  });
});

describe('vhost-user data path', () => {
  it('serves chains over real shared memory, kicked and called through eventfds', async () => {
    const { queue, kick, call, device, statuses, handshake } = await running();
    expect(handshake.status).toBe(0n);
    expect(handshake.table).toBe(0n);
    expect(statuses).toEqual([0n, 0n, 0n, 0n, 0n, 0n]);
    const { buffers } = queue.addChain([{ writable: true, length: 64 }]);
    signalEventFd(kick);
    expect(await waitEventFd(call)).toBeGreaterThan(0);
    const used = queue.takeUsed();
    expect(used).toEqual([{ id: expect.any(Number), length: 64 }]);
    const placed = buffers[0]!;
    const written = queue.memory.bytes.subarray(placed.offset, placed.offset + 64);
    expect(written.every((b) => b === 1)).toBe(true);
    expect(device.activations).toBe(1);
  });

  it('serves a whole batch with one used-index update and one call', async () => {
    const { server, queue, kick, call } = await running();
    for (let i = 0; i < 10; i++) queue.addChain([{ writable: true, length: 48 }]);
    const callsBefore = server.metrics().calls;
    signalEventFd(kick);
    await waitEventFd(call);
    expect(queue.takeUsed()).toHaveLength(10);
    expect(server.metrics().calls - callsBefore).toBe(1);
  });

  it('maintains avail_event and honours used_event (EVENT_IDX both ways)', async () => {
    const { server, queue, kick, call } = await running(patternDevice(), { eventIdx: true });
    queue.addChain([{ writable: true, length: 8 }]);
    signalEventFd(kick);
    await waitEventFd(call);
    queue.takeUsed();
    // The device asks to be kicked when the driver moves past what it consumed (2.7.10).
    expect(queue.availEvent).toBe(queue.availIndex);
    // The driver wants an interrupt only after 3 more used entries.
    queue.setUsedEvent((queue.usedIdx + 2) & 0xffff);
    const calls = server.metrics().calls;
    queue.addChain([{ writable: true, length: 8 }]);
    signalEventFd(kick);
    await vi.waitFor(() => expect(queue.usedIdx).toBe(2));
    expect(server.metrics().calls).toBe(calls);
    queue.addChain([{ writable: true, length: 8 }]);
    queue.addChain([{ writable: true, length: 8 }]);
    signalEventFd(kick);
    await waitEventFd(call);
    expect(queue.usedIdx).toBe(4);
  });

  it('serves a kick that arrived before the ring was enabled once it is', async () => {
    const device = patternDevice();
    serve(() => device);
    const frontend = connect();
    const memory = guest();
    await frontend.handshake(memory, { features: VIRTIO_F_VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES });
    const queue = new MockSplitQueue(memory.memory, { size: 8 });
    const kick = eventFd();
    const call = eventFd();
    await frontend.acked(Request.SET_VRING_NUM, encodeVringState(0, 8));
    await frontend.acked(Request.SET_VRING_CALL, encodeU64(0n), [call]);
    const { FRONTEND_USER_BASE } = await import('./vhost-user-frontend.js');
    const { encodeVringAddress } = await import('./vhost-user-wire.js');
    await frontend.acked(
      Request.SET_VRING_ADDR,
      encodeVringAddress({
        index: 0,
        flags: 0,
        desc: FRONTEND_USER_BASE + queue.descAddress,
        used: FRONTEND_USER_BASE + queue.usedAddress,
        avail: FRONTEND_USER_BASE + queue.availAddress,
        log: 0n,
      }),
    );
    await frontend.acked(Request.SET_VRING_KICK, encodeU64(0n), [kick]);
    queue.addChain([{ writable: true, length: 32 }]);
    signalEventFd(kick);
    // Started but not enabled: nothing is served.
    await frontend.getU64(Request.GET_FEATURES);
    expect(device.requests).toBe(0);
    await frontend.acked(Request.SET_VRING_ENABLE, encodeVringState(0, 1));
    await waitEventFd(call);
    expect(queue.takeUsed()).toHaveLength(1);
  });

  it('stops a ring on GET_VRING_BASE, resets the device, and resumes from the base', async () => {
    const { frontend, queue, kick, call, device } = await running();
    queue.addChain([{ writable: true, length: 8 }]);
    queue.addChain([{ writable: true, length: 8 }]);
    signalEventFd(kick);
    await waitEventFd(call);
    queue.takeUsed();
    expect(await frontend.stopRing(0)).toBe(2);
    expect(device.resets).toBe(1);
    const kick2 = eventFd();
    const call2 = eventFd();
    await frontend.startRing(0, queue, { kick: kick2, call: call2 }, 2);
    drainEventFd(call2);
    expect(device.activations).toBe(2);
    queue.addChain([{ writable: true, length: 8 }]);
    signalEventFd(kick2);
    await waitEventFd(call2);
    expect(queue.takeUsed()).toHaveLength(1);
    expect(queue.usedIdx).toBe(3);
  });

  it('marks the device failed and signals the err fd when the driver corrupts the ring', async () => {
    const { frontend, server, queue, kick } = await running();
    const err = eventFd();
    await frontend.acked(Request.SET_VRING_ERR, encodeU64(0n), [err]);
    queue.setAvailIdx(100); // more than the queue size ahead (2.7.13.3)
    signalEventFd(kick);
    expect(await waitEventFd(err)).toBeGreaterThan(0);
    expect(server.metrics().deviceFailures).toBe(1);
  });

  it('reads buffers across two memory regions added with ADD_MEM_REG and refuses to remove a ring region', async () => {
    const { frontend, queue, memory } = await running();
    const second = guest(1 << 16);
    const region = { ...second.region, guestAddress: 0x1000_0000n, userAddress: 0x7e00_0000_0000n };
    expect(await frontend.acked(Request.ADD_MEM_REG, encodeSingleRegion(region), [second.fd])).toBe(0n);
    expect(await frontend.acked(Request.ADD_MEM_REG, encodeSingleRegion(region), [second.fd])).toBe(1n);
    expect(await frontend.acked(Request.REM_MEM_REG, encodeSingleRegion(memory.region))).toBe(1n);
    expect(await frontend.acked(Request.REM_MEM_REG, encodeSingleRegion(region))).toBe(0n);
    expect(await frontend.acked(Request.REM_MEM_REG, encodeSingleRegion(region))).toBe(1n);
    expect(queue.size).toBe(16);
  });
});

describe('vhost-user adaptive polling (pollUs)', () => {
  const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

  it('serves chains published without a kick while the window is open, with kicks suppressed, then asks for kicks again', async () => {
    const { server, queue, kick, call } = await running(patternDevice(), { eventIdx: true, pollUs: 10_000 });
    queue.addChain([{ writable: true, length: 8 }]);
    signalEventFd(kick);
    await waitEventFd(call);
    expect(queue.takeUsed()).toHaveLength(1);
    // Polling: avail_event trails what was consumed, so Linux's vring_need_event says no kick.
    expect(queue.availEvent).toBe((queue.availIndex - 1) & 0xffff);
    for (let i = 0; i < 3; i++) {
      queue.setUsedEvent(queue.usedIdx); // as Linux's virtqueue_enable_cb: interrupt me for the next one
      queue.addChain([{ writable: true, length: 8 }]);
      await waitEventFd(call);
      expect(queue.takeUsed()).toHaveLength(1);
    }
    expect(server.metrics()).toMatchObject({ kicks: 1, pollWindows: 1 });
    expect(server.metrics().polled).toBeGreaterThanOrEqual(3);
    // The window (10 ms) passes with nothing new: kicks are asked for again.
    await vi.waitFor(() => expect(queue.availEvent).toBe(queue.availIndex), { timeout: 2000 });
    const polled = server.metrics().polled;
    queue.setUsedEvent(queue.usedIdx);
    queue.addChain([{ writable: true, length: 8 }]);
    await sleep(30);
    expect(queue.takeUsed()).toHaveLength(0);
    signalEventFd(kick);
    await waitEventFd(call);
    expect(queue.takeUsed()).toHaveLength(1);
    expect(server.metrics()).toMatchObject({ kicks: 2, pollWindows: 2, polled });
  });

  it('stops polling at once when the device defers, and serves what it deferred on the next kick', async () => {
    const device = patternDevice();
    let blocked = true;
    let notifies = 0;
    const serveNow = device.notify.bind(device);
    device.notify = (index: number) => {
      notifies++;
      if (!blocked) serveNow(index);
      else {
        // A device that cannot serve yet leaves the chain available (serviceQueue's 'defer').
      }
    };
    const { server, queue, kick, call } = await running(device, { eventIdx: true, pollUs: 10_000 });
    queue.addChain([{ writable: true, length: 8 }]);
    signalEventFd(kick);
    await vi.waitFor(() => expect(server.metrics().pollWindows).toBe(1));
    await sleep(20);
    // The first look found the chain still there and ended the window: no spinning.
    const settled = notifies;
    await sleep(30);
    expect(notifies).toBe(settled);
    expect(server.metrics()).toMatchObject({ polled: 0, pollWindows: 1 });
    blocked = false;
    signalEventFd(kick);
    await waitEventFd(call);
    expect(queue.takeUsed()).toHaveLength(1);
  });

  it('ends a poll window when the frontend goes away', async () => {
    const { server, frontend, queue, kick, call, device } = await running(patternDevice(), {
      eventIdx: true,
      pollUs: 10_000,
    });
    queue.addChain([{ writable: true, length: 8 }]);
    signalEventFd(kick);
    await waitEventFd(call);
    frontend.close();
    await vi.waitFor(() => expect(device.resets).toBe(1));
    const requests = device.requests;
    queue.addChain([{ writable: true, length: 8 }]);
    await sleep(30);
    expect(device.requests).toBe(requests);
    expect(server.metrics().polled).toBe(0);
  });

  it('marks the device failed, not the process, when the driver corrupts avail.idx while the window is open', async () => {
    const { frontend, server, queue, kick, call } = await running(patternDevice(), {
      eventIdx: true,
      pollUs: 10_000,
    });
    const err = eventFd();
    await frontend.acked(Request.SET_VRING_ERR, encodeU64(0n), [err]);
    queue.addChain([{ writable: true, length: 8 }]);
    signalEventFd(kick);
    await waitEventFd(call);
    expect(server.metrics().pollWindows).toBe(1);
    queue.setAvailIdx((queue.availIndex + 100) & 0xffff); // more than the queue size ahead (2.7.13.3)
    expect(await waitEventFd(err)).toBeGreaterThan(0);
    expect(server.metrics()).toMatchObject({ deviceFailures: 1, kicks: 1 });
  });

  it('refuses a pollUs that is not an integer from 0 to 10000, naming it', () => {
    for (const pollUs of [-1, 10_001, 1.5, Number.NaN]) {
      expect(() => serveVhostUser({ socketPath, device: () => patternDevice(), pollUs })).toThrow(
        /^pollUs: expected an integer from 0 to 10000/,
      );
    }
  });
});

describe('vhost-user malformed messages', () => {
  async function expectDisconnect(send: (frontend: TestFrontend) => void) {
    const server = serve(() => patternDevice());
    const frontend = connect();
    await frontend.getU64(Request.GET_FEATURES);
    const dropped = new Promise<void>((resolve) => server.once('disconnect', () => resolve()));
    send(frontend);
    const end = await frontend.whenEnded();
    await dropped;
    return end;
  }

  it('drops a frontend that sends a wrong payload size', async () => {
    await expectDisconnect((f) => f.send(Request.SET_FEATURES, new Uint8Array(4)));
  });

  it('drops a frontend that sends a payload size beyond the limit', async () => {
    const header = new Uint8Array(12);
    new DataView(header.buffer).setUint32(0, Request.SET_MEM_TABLE, true);
    new DataView(header.buffer).setUint32(4, 1, true);
    new DataView(header.buffer).setUint32(8, 8192, true);
    await expectDisconnect((f) => f.sendRaw(header));
  });

  it('drops a frontend that sends a wrong header version', async () => {
    await expectDisconnect((f) => f.send(Request.GET_FEATURES, undefined, undefined, 0x2));
  });

  it('drops a frontend that sends a kick without its fd, or fds where none belong', async () => {
    await expectDisconnect((f) => f.send(Request.SET_VRING_KICK, encodeU64(0n)));
    const fd = eventFd();
    await expectDisconnect((f) => f.send(Request.SET_OWNER, undefined, [fd]));
  });

  it('drops a frontend whose memory table lacks fds', async () => {
    const memory = guest();
    await expectDisconnect((f) =>
      f.send(Request.SET_MEM_TABLE, encodeMemTable([memory.region, memory.region]), [memory.fd]),
    );
  });

  it('refuses out-of-range vrings, overlapping regions and unknown requests with a failure ack, and keeps serving', async () => {
    serve(() => patternDevice());
    const frontend = connect();
    frontend.send(Request.SET_PROTOCOL_FEATURES, encodeU64(ProtocolFeature.REPLY_ACK));
    expect(await frontend.acked(Request.SET_VRING_NUM, encodeVringState(5, 8))).toBe(1n);
    expect(await frontend.acked(Request.SET_VRING_NUM, encodeVringState(0, 1000))).toBe(1n);
    const fd = eventFd();
    expect(await frontend.acked(Request.SET_VRING_CALL, encodeU64(9n), [fd])).toBe(1n);
    const memory = guest();
    const overlapping = { ...memory.region, guestAddress: 0x8_0000n, userAddress: 0x7d00_0000_0000n };
    expect(
      await frontend.acked(Request.SET_MEM_TABLE, encodeMemTable([memory.region, overlapping]), [
        memory.fd,
        memory.fd,
      ]),
    ).toBe(1n);
    const tooLong = { ...memory.region, size: 1n << 30n };
    expect(await frontend.acked(Request.SET_MEM_TABLE, encodeMemTable([tooLong]), [memory.fd])).toBe(1n);
    expect(await frontend.acked(99)).toBe(1n);
    expect(await frontend.getU64(Request.GET_QUEUE_NUM)).toBe(1n);
    expect(frontend.ended).toBe(false);
  });

  it('drops a frontend that asks GET_VRING_BASE of a vring that does not exist', async () => {
    await expectDisconnect((f) => f.send(Request.GET_VRING_BASE, encodeVringState(3, 0)));
  });
});

describe('vhost-user Xen memory regions', () => {
  async function xenFrontend(mapper?: Parameters<typeof serveVhostUser>[0]['xenMapper']) {
    const server = serveVhostUser({
      socketPath,
      device: () => patternDevice(),
      xenMapper: mapper,
      offerXenMmap: true,
    });
    servers.push(server);
    const frontend = connect();
    frontend.send(
      Request.SET_PROTOCOL_FEATURES,
      encodeU64(ProtocolFeature.REPLY_ACK | ProtocolFeature.XEN_MMAP),
    );
    return frontend;
  }

  it('refuses foreign-mapped regions cleanly when no Xen mapper is configured', async () => {
    const frontend = await xenFrontend();
    const memory = guest();
    const region = { ...memory.region, xenFlags: XEN_MMAP_FOREIGN, domid: 7 };
    expect(await frontend.acked(Request.SET_MEM_TABLE, encodeMemTable([region], true), [memory.fd])).toBe(1n);
    // Unflagged regions in the Xen layout map from their fd as usual.
    expect(
      await frontend.acked(Request.SET_MEM_TABLE, encodeMemTable([memory.region], true), [memory.fd]),
    ).toBe(0n);
  });

  it('hands flagged regions with their domid to the mapper, and rejects unknown flags', async () => {
    const seen: { flags: number; domid: number; guestAddress: bigint }[] = [];
    const memory = guest();
    const frontend = await xenFrontend({
      map(request) {
        seen.push({ flags: request.xenFlags, domid: request.domid, guestAddress: request.guestAddress });
        return mapFdRegion(request.fd, { ...request, mmapOffset: 0n });
      },
    });
    const region = { ...memory.region, guestAddress: 0x4000_0000n, xenFlags: XEN_MMAP_FOREIGN, domid: 3 };
    expect(await frontend.acked(Request.SET_MEM_TABLE, encodeMemTable([region], true), [memory.fd])).toBe(0n);
    expect(seen).toEqual([{ flags: XEN_MMAP_FOREIGN, domid: 3, guestAddress: 0x4000_0000n }]);
    const bad = { ...region, xenFlags: 0x40 };
    expect(await frontend.acked(Request.SET_MEM_TABLE, encodeMemTable([bad], true), [memory.fd])).toBe(1n);
  });

  it('maps a foreign region of a (simulated) Xen guest with the Xen mapper, and refuses grant regions', async () => {
    const sim = createXenSimulator();
    const domain = sim.createDomain({ memoryBytes: 1 << 20 });
    const services = sim.services(0);
    const memory = guest();
    const frontend = await xenFrontend(createXenRegionMapper({ foreignMemory: services.foreignMemory }));
    const foreign = {
      guestAddress: 0n,
      size: 0x10_0000n,
      userAddress: 0x7f10_0000_0000n,
      mmapOffset: 0n,
      xenFlags: XEN_MMAP_FOREIGN,
      domid: domain.domid,
    };
    expect(await frontend.acked(Request.SET_MEM_TABLE, encodeMemTable([foreign], true), [memory.fd])).toBe(
      0n,
    );
    const grant = { ...foreign, xenFlags: XEN_MMAP_GRANT };
    expect(await frontend.acked(Request.SET_MEM_TABLE, encodeMemTable([grant], true), [memory.fd])).toBe(1n);
    frontend.close();
    await services.close();
  });
});

describe('vhost-user device lifecycle messages', () => {
  it('keeps a running ring working across a new memory table', async () => {
    const { frontend, memory, queue, kick, call } = await running();
    expect(await frontend.acked(Request.SET_MEM_TABLE, encodeMemTable([memory.region]), [memory.fd])).toBe(
      0n,
    );
    queue.addChain([{ writable: true, length: 16 }]);
    signalEventFd(kick);
    await waitEventFd(call);
    expect(queue.takeUsed()).toEqual([{ id: expect.any(Number), length: 16 }]);
  });

  it('RESET_DEVICE stops the rings, resets the device and forgets the features', async () => {
    const { frontend, server, device, queue, kick } = await running();
    expect(await frontend.acked(Request.RESET_DEVICE)).toBe(0n);
    expect(device.resets).toBe(1);
    expect(server.backend?.negotiatedFeatures).toBe(0n);
    expect(server.backend?.active).toBe(false);
    queue.addChain([{ writable: true, length: 16 }]);
    signalEventFd(kick);
    await frontend.getU64(Request.GET_FEATURES);
    expect(device.requests).toBe(0);
  });
});

/** A device that takes requests and completes them only when told (work in flight). */
function holdingDevice() {
  let context: DeviceContext | undefined;
  const held: DescriptorChain[] = [];
  const device = {
    deviceType: 4,
    name: 'holding0',
    queueMaxSizes: [16],
    features: 0n,
    configSize: 0,
    held,
    readConfig() {},
    writeConfig() {},
    activate(next: DeviceContext) {
      context = next;
    },
    notify(queueIndex: number) {
      const queue = context?.queues[queueIndex];
      for (let chain = queue?.pop(); chain; chain = queue?.pop()) held.push(chain);
    },
    /** Completes everything held, writing `fill` into each buffer. */
    complete(fill: number) {
      const active = context!;
      const queue = active.queues[0]!;
      for (const chain of held.splice(0)) {
        const io = openChain(active.memory, chain);
        io.writer.write(new Uint8Array(io.writer.remaining).fill(fill));
        queue.addUsed(chain, io.close());
      }
      if (queue.publishUsed() > 0) active.interrupt(0);
    },
    reset() {
      context = undefined;
      held.length = 0;
    },
  };
  return device satisfies VirtioDevice;
}

describe('vhost-user inflight area', () => {
  it('hands out a shared area and records completions in it', async () => {
    const { frontend, queue } = await running();
    const reply = await frontend.request(
      Request.GET_INFLIGHT_FD,
      encodeInflight({ mmapSize: 0n, mmapOffset: 0n, numQueues: 1, queueSize: 16 }),
    );
    expect(reply.fds).toHaveLength(1);
    const size = Number(payloadView(reply.payload).getBigUint64(0, true));
    expect(size).toBeGreaterThanOrEqual(16 + 16 * 16);
    const area = mapFdRegion(reply.fds[0]!, {
      guestAddress: 0n,
      size: BigInt(size),
      userAddress: 0n,
      mmapOffset: 0n,
      xenFlags: 0,
      domid: 0,
    })[0]!;
    expect(
      await frontend.acked(
        Request.SET_INFLIGHT_FD,
        encodeInflight({ mmapSize: BigInt(size), mmapOffset: 0n, numQueues: 1, queueSize: 16 }),
        [reply.fds[0]!],
      ),
    ).toBe(0n);
    closeFd(reply.fds[0]!);
    // The ring restarts to pick the area up.
    const base = await frontend.stopRing(0);
    const kick2 = eventFd();
    const call2 = eventFd();
    await frontend.startRing(0, queue, { kick: kick2, call: call2 }, base);
    drainEventFd(call2);
    queue.addChain([{ writable: true, length: 8 }]);
    queue.addChain([{ writable: true, length: 8 }]);
    signalEventFd(kick2);
    await waitEventFd(call2);
    const view = new DataView(area.bytes.buffer, area.bytes.byteOffset);
    expect(view.getUint16(8, true)).toBe(1); // version
    expect(view.getUint16(14, true)).toBe(queue.usedIdx); // used_idx recorded
    for (let head = 0; head < 16; head++) expect(view.getUint8(16 + head * 16)).toBe(0);
    area.unmap?.();
  });

  it('serves again, after a backend restart, the requests the old backend had in flight', async () => {
    const devices: ReturnType<typeof holdingDevice>[] = [];
    const server = serve(() => {
      const device = holdingDevice();
      devices.push(device);
      return device;
    });
    const memory = guest();
    const features = VIRTIO_F_VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES;
    const first = connect();
    await first.handshake(memory, { features });
    const reply = await first.request(
      Request.GET_INFLIGHT_FD,
      encodeInflight({ mmapSize: 0n, mmapOffset: 0n, numQueues: 1, queueSize: 16 }),
    );
    const inflightFd = reply.fds[0]!;
    eventFds.push(inflightFd);
    const size = payloadView(reply.payload).getBigUint64(0, true);
    const inflight = encodeInflight({ mmapSize: size, mmapOffset: 0n, numQueues: 1, queueSize: 16 });
    await first.acked(Request.SET_INFLIGHT_FD, inflight, [inflightFd]);
    const queue = new MockSplitQueue(memory.memory, { size: 16 });
    const kick = eventFd();
    await first.startRing(0, queue, { kick, call: eventFd() });
    queue.addChain([{ writable: true, length: 32 }]);
    queue.addChain([{ writable: true, length: 32 }]);
    signalEventFd(kick);
    await vi.waitFor(() => expect(devices[0]!.held).toHaveLength(2));
    // The backend dies with two requests in flight; the frontend keeps the inflight area.
    const gone = new Promise((resolve) => server.once('disconnect', () => resolve(undefined)));
    first.close();
    await gone;
    const second = connect();
    await second.handshake(memory, { features });
    await second.acked(Request.SET_INFLIGHT_FD, inflight, [inflightFd]);
    const kick2 = eventFd();
    const call2 = eventFd();
    // The frontend could not read the old backend's base: it offers avail.idx (2).
    await second.startRing(0, queue, { kick: kick2, call: call2 }, 2);
    // The inflight area says heads 0 and 1 were taken and never completed: taken again.
    expect(devices[1]!.held.map((chain) => chain.head).sort()).toEqual([0, 1]);
    devices[1]!.complete(7);
    await waitEventFd(call2);
    const used = queue.takeUsed();
    expect(used.map((element) => element.length)).toEqual([32, 32]);
  });
});

describe('vhost-user connection lifecycle', () => {
  it('outlives its frontend: resets the device and serves the next connection on the same socket', async () => {
    const devices: ReturnType<typeof patternDevice>[] = [];
    const server = serve(() => {
      const device = patternDevice();
      devices.push(device);
      return device;
    });
    const first = connect();
    const memory = guest();
    await first.handshake(memory, { features: VIRTIO_F_VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES });
    const queue = new MockSplitQueue(memory.memory, { size: 8 });
    await first.startRing(0, queue, { kick: eventFd(), call: eventFd() });
    const gone = new Promise((resolve) => server.once('disconnect', () => resolve(undefined)));
    first.close();
    await gone;
    expect(devices[0]!.resets).toBe(1);
    const second = connect();
    expect(await second.getU64(Request.GET_QUEUE_NUM)).toBe(1n);
    expect(server.connections).toBe(2);
  });

  it('with once, closes after its first frontend', async () => {
    const server = serve(() => patternDevice(), { once: true });
    const closed = new Promise((resolve) => server.once('close', () => resolve(undefined)));
    const frontend = connect();
    await frontend.getU64(Request.GET_FEATURES);
    frontend.close();
    await closed;
    expect(() => new TestFrontend(socketPath)).toThrow(/cannot connect/);
  });

  it('in connect mode, dials a listening frontend and dials again after it went away', async () => {
    const listenFd = listenUnix(socketPath);
    const server = serveVhostUser({ socketPath, device: () => patternDevice(), connect: true, retryMs: 10 });
    servers.push(server);
    const acceptOne = async () => {
      for (;;) {
        const fd = acceptUnix(listenFd);
        if (fd >= 0) return fd;
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    };
    try {
      const first = new TestFrontend({ fd: await acceptOne() });
      frontends.push(first);
      expect(await first.getU64(Request.GET_QUEUE_NUM)).toBe(1n);
      first.close();
      const second = new TestFrontend({ fd: await acceptOne() });
      frontends.push(second);
      expect(await second.getU64(Request.GET_QUEUE_NUM)).toBe(1n);
      expect(server.connections).toBe(2);
    } finally {
      closeFd(listenFd);
    }
  });

  it('leaks no fd and no mapping across connections, including dropped ones', async () => {
    // Warm up: the first use of the poller and koffi opens fds that stay.
    {
      const warm = serve(() => patternDevice());
      const frontend = new TestFrontend(socketPath);
      await frontend.getU64(Request.GET_FEATURES);
      frontend.close();
      await warm.close();
    }
    const before = openFds();
    const mappingsBefore = memfdMappings();
    const server = serveVhostUser({ socketPath, device: () => patternDevice() });
    for (let round = 0; round < 3; round++) {
      const frontend = new TestFrontend(socketPath);
      const memory = createSharedGuestMemory(1 << 20);
      await frontend.handshake(memory, { features: VIRTIO_F_VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES });
      const queue = new MockSplitQueue(memory.memory, { size: 8 });
      const kick = createEventFd();
      const call = createEventFd();
      const err = createEventFd();
      await frontend.acked(Request.SET_VRING_ERR, encodeU64(0n), [err]);
      await frontend.startRing(0, queue, { kick, call });
      await frontend
        .request(
          Request.GET_INFLIGHT_FD,
          encodeInflight({ mmapSize: 0n, mmapOffset: 0n, numQueues: 1, queueSize: 8 }),
        )
        .then((reply) => reply.fds.forEach(closeFd));
      queue.addChain([{ writable: true, length: 16 }]);
      signalEventFd(kick);
      await waitEventFd(call);
      const dropped = new Promise<void>((resolve) => server.once('disconnect', () => resolve()));
      if (round === 1)
        frontend.send(Request.SET_VRING_KICK, encodeU64(0n), [kick, call]); // malformed
      else frontend.close();
      await dropped;
      frontend.close();
      for (const fd of [kick, call, err]) closeFd(fd);
      memory.close();
    }
    await server.close();
    expect(openFds()).toBe(before);
    expect(memfdMappings()).toBe(mappingsBefore);
  });
});
