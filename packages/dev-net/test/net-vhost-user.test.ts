// The device behind the vhost-user backend, driven by a frontend that speaks the protocol as
// QEMU does (memfd guest RAM and eventfds passed over a Unix socket): two "QEMU guests" joined
// by the in-process switch. (The frontend is a transport test helper, reached by path, which
// is why this test lives outside src: the package typecheck covers src only.)
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VIRTIO_F_RING_PACKED } from '@xvio/transport';
import { MockSplitQueue } from '@xvio/transport/testing';
import { serveVhostUser, type VhostUserServer } from '@xvio/transport/vhost-user';
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
import { NetDevice } from '../src/net-device.js';
import { NetSwitch } from '../src/net-switch.js';
import { emptyNetHeader, encodeNetHeader, HDR_SIZE, parseMac } from '../src/net-wire.js';
import { udpFrame } from '../src/testing/net-packets.js';

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

async function vhostGuest(socketPath: string): Promise<VhostGuest> {
  const frontend = new TestFrontend(socketPath);
  cleanups.push(() => frontend.close());
  const memory = createSharedGuestMemory(8 << 20);
  cleanups.push(() => memory.close());
  const { offered } = await frontend.handshake(memory);
  expect(offered & (1n << 5n)).toBe(1n << 5n); // VIRTIO_NET_F_MAC reaches the frontend
  const rx = new MockSplitQueue(memory.memory, { size: 64, offset: 0, arenaSize: 1 << 20, seed: 3 });
  const tx = new MockSplitQueue(memory.memory, { size: 64, offset: 2 << 20, arenaSize: 1 << 20, seed: 4 });
  const fds = [createEventFd(), createEventFd(), createEventFd(), createEventFd()];
  cleanups.push(() => {
    for (const fd of fds) drainEventFd(fd);
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
