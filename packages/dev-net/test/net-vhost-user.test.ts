// The device behind the vhost-user backend, driven by a frontend that speaks the protocol as
// QEMU does (memfd guest RAM and eventfds passed over a Unix socket): two "QEMU guests" joined
// by the in-process switch. (The frontend is a transport test helper, reached by path, which
// is why this test lives outside src: the package typecheck covers src only.)
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VIRTIO_F_RING_PACKED } from '@xvio/transport';
import { MockSplitQueue } from '@xvio/transport/testing';
import { serveVhostUser, type VhostUserServer, vhostUserWire } from '@xvio/transport/vhost-user';
import { afterEach, describe, expect, it } from 'vitest';
import {
  createEventFd,
  createSharedGuestMemory,
  drainEventFd,
  type SharedGuestMemory,
  signalEventFd,
  TestFrontend,
  waitEventFd,
} from '../../transport/src/vhost-user/vhost-user-frontend.js';
import { closeFd } from '../../transport/src/vhost-user/vhost-user-libc.js';
import { NetDevice } from '../src/net-device.js';
import { openNetPort } from '../src/net-port.js';
import { NetSwitch } from '../src/net-switch.js';
import { emptyNetHeader, encodeNetHeader, HDR_SIZE, parseMac } from '../src/net-wire.js';
import { arpRequestFrame, udpFrame } from '../src/testing/net-packets.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface VhostGuest {
  memory: SharedGuestMemory;
  rx: MockSplitQueue;
  tx: MockSplitQueue;
  kicks: [number, number];
  calls: [number, number];
}

async function vhostGuest(socketPath: string, splitRingOnly = false): Promise<VhostGuest> {
  const frontend = new TestFrontend(socketPath);
  cleanups.push(() => frontend.close());
  const memory = createSharedGuestMemory(8 << 20);
  cleanups.push(() => memory.close());
  // MockSplitQueue lays out split rings: a device that offers packed ones must not get them.
  const features = splitRingOnly
    ? (await frontend.getU64(vhostUserWire.Request.GET_FEATURES)) & ~VIRTIO_F_RING_PACKED
    : undefined;
  const { offered } = await frontend.handshake(memory, features === undefined ? {} : { features });
  expect(offered & (1n << 5n)).toBe(1n << 5n); // VIRTIO_NET_F_MAC reaches the frontend
  const rx = new MockSplitQueue(memory.memory, { size: 64, offset: 0, arenaSize: 1 << 20, seed: 3 });
  const tx = new MockSplitQueue(memory.memory, { size: 64, offset: 2 << 20, arenaSize: 1 << 20, seed: 4 });
  const fds = [createEventFd(), createEventFd(), createEventFd(), createEventFd()];
  cleanups.push(() => {
    for (const fd of fds) closeFd(fd);
  });
  await frontend.startRing(0, rx, { kick: fds[0]!, call: fds[1]! });
  await frontend.startRing(1, tx, { kick: fds[2]!, call: fds[3]! });
  // The backend signals a call fd it receives for a running ring: start from quiet fds.
  drainEventFd(fds[1]!);
  drainEventFd(fds[3]!);
  return { memory, rx, tx, kicks: [fds[0]!, fds[2]!], calls: [fds[1]!, fds[3]!] };
}

describe('NetDevice over vhost-user', () => {
  it('two frontends (as QEMU) exchange a frame through the switch', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'xvio-net-vu-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const network = new NetSwitch();
    const servers: VhostUserServer[] = [];
    const devices: NetDevice[] = [];
    for (const [name, mac] of [
      ['a', '52:54:00:00:00:0a'],
      ['b', '52:54:00:00:00:0b'],
    ] as const) {
      const server = serveVhostUser({
        socketPath: join(dir, `${name}.sock`),
        device: () => {
          // The switch port lives with the device (QEMU reconnecting gets a fresh one).
          const device = new NetDevice({
            mac: parseMac(mac)!,
            host: network.createPort(),
            queueSize: 64,
            withoutFeatures: VIRTIO_F_RING_PACKED,
          });
          devices.push(device);
          return device;
        },
      });
      servers.push(server);
      cleanups.push(() => server.close());
    }
    const a = await vhostGuest(join(dir, 'a.sock'));
    const b = await vhostGuest(join(dir, 'b.sock'));
    const { buffers } = b.rx.addChain([{ writable: true, length: 2048 }]);
    signalEventFd(b.kicks[0]);
    const frame = udpFrame(
      {
        sourceMac: '52:54:00:00:00:0a',
        destinationMac: '52:54:00:00:00:0b',
        source: '10.0.0.1',
        destination: '10.0.0.2',
      },
      new Uint8Array(200).fill(0x5a),
    );
    const buffer = new Uint8Array(HDR_SIZE + frame.length);
    encodeNetHeader(emptyNetHeader(), buffer, HDR_SIZE, 0);
    buffer.set(frame, HDR_SIZE);
    a.tx.addChain([{ data: buffer }]);
    signalEventFd(a.kicks[1]);
    await waitEventFd(b.calls[0]);
    const [used] = b.rx.takeUsed();
    expect(used!.length).toBe(HDR_SIZE + frame.length);
    const received = b.memory.memory.bytes.subarray(buffers[0]!.offset, buffers[0]!.offset + used!.length);
    expect(received[10]).toBe(1); // num_buffers
    expect([...received.subarray(HDR_SIZE)]).toEqual([...frame]);
    await waitEventFd(a.calls[1]);
    expect(a.tx.takeUsed()).toHaveLength(1);
    expect(devices.reduce((sum, device) => sum + device.metricsValues.rxFrames, 0)).toBe(1);
  });
});

describe('a vhost-user net backend over a TAP, across connections', () => {
  it('keeps one TAP for the socket, carries traffic on every connection and leaks no fd', async () => {
    const namespace = `xvio-vun-${randomBytes(3).toString('hex')}`;
    const ifname = `xvu${randomBytes(3).toString('hex')}`;
    const ip = (...args: string[]) =>
      execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const tapsInNamespace = () =>
      ip('-n', namespace, '-o', 'link', 'show', 'type', 'tun').split('\n').filter(Boolean);
    const openFds = () => readdirSync('/proc/self/fd').length;
    ip('netns', 'add', namespace);
    cleanups.push(() => {
      ip('netns', 'del', namespace);
    });
    const dir = mkdtempSync(join(tmpdir(), 'xvio-net-vu-tap-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const socketPath = join(dir, 'net.sock');
    const guestMac = '52:54:00:00:01:02';
    // Warm up: the first TAP and the first connection open fds that stay (koffi, the poller).
    {
      const port = openNetPort({ host: { type: 'tap', netns: namespace } });
      const server = serveVhostUser({ socketPath, device: () => port.createDevice() });
      const frontend = new TestFrontend(socketPath);
      const memory = createSharedGuestMemory(1 << 20);
      await frontend.handshake(memory);
      frontend.close();
      memory.close();
      await server.close();
      await port.close();
    }
    expect(tapsInNamespace()).toEqual([]);
    const before = openFds();
    // One socket, one host side: the TAP is opened once, here, and lent to each connection.
    const port = openNetPort({
      mac: guestMac,
      controlQueue: 'frontend',
      queueSize: 64,
      host: { type: 'tap', ifname, netns: namespace },
    });
    ip('-n', namespace, 'addr', 'add', '10.98.0.1/24', 'dev', ifname);
    ip('-n', namespace, 'link', 'set', 'dev', ifname, 'up');
    const server = serveVhostUser({ socketPath, device: () => port.createDevice() });
    const after: number[] = [];
    for (let round = 0; round < 3; round++) {
      const guest = await vhostGuest(socketPath, true);
      const posted = new Map<number, number>();
      const post = (count: number) => {
        for (let i = 0; i < count; i++) {
          const { head, buffers } = guest.rx.addChain([{ writable: true, length: 2048 }]);
          posted.set(head, buffers[0]!.offset);
        }
        signalEventFd(guest.kicks[0]);
      };
      post(8);
      const request = arpRequestFrame(guestMac, `10.98.0.${10 + round}`, '10.98.0.1');
      const buffer = new Uint8Array(HDR_SIZE + request.length);
      encodeNetHeader(emptyNetHeader(), buffer, HDR_SIZE, 0);
      buffer.set(request, HDR_SIZE);
      guest.tx.addChain([{ data: buffer }]);
      signalEventFd(guest.kicks[1]);
      // The kernel in the namespace answers through the same TAP, on every connection (it may
      // send IPv6 neighbour discovery first: skipped).
      // Interrupts are suppressed past the first (the mock driver never moves used_event): poll.
      let reply: Uint8Array | undefined;
      const deadline = Date.now() + 5000;
      while (reply === undefined && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 5));
        drainEventFd(guest.calls[0]);
        const used = guest.rx.takeUsed();
        for (const { id, length } of used) {
          const offset = posted.get(id)!;
          const frame = guest.memory.memory.bytes.slice(offset + HDR_SIZE, offset + length);
          if (frame[12] === 0x08 && frame[13] === 0x06 && frame[21] === 2) reply = frame;
        }
        if (used.length > 0) post(used.length);
      }
      expect(reply).toBeDefined();
      expect([...reply!.subarray(38, 42)].join('.')).toBe(`10.98.0.${10 + round}`);
      const dropped = new Promise<void>((resolve) => server.once('disconnect', () => resolve()));
      for (const cleanup of cleanups.splice(cleanups.length - 3).reverse()) await cleanup();
      await dropped;
      expect(tapsInNamespace()).toHaveLength(1);
      after.push(openFds());
    }
    expect(port.devicesCreated).toBe(3);
    // What a connection leaves open is the same after each one (the TAP, its eventfd, the
    // listening socket): nothing accumulates.
    expect(after).toEqual([after[0], after[0], after[0]]);
    await server.close();
    await port.close();
    expect(openFds()).toBe(before);
    expect(tapsInNamespace()).toEqual([]);
  });
});
