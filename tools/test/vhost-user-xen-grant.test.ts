// Real devices behind XEN_MMAP grant regions: xvio's rng and net over a vhost-user socket,
// driven by a frontend that sends grant regions of a simulated Xen guest whose driver grants
// rings and buffers as Linux's xen-grant-dma does (read-only for what the device reads,
// revoked when the used element arrives). The backend maps each request through the
// simulator's gntdev, which enforces grant permissions. (The frontend is a transport test
// helper, reached by path, which is why this test lives outside src.)
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetDevice, NetSwitch, netWire } from '@xvio/dev-net';
import { udpFrame } from '@xvio/dev-net/testing';
import { createRngDevice, createSeededEntropySource } from '@xvio/dev-rng';
import {
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  type VirtioDevice,
} from '@xvio/transport';
import { createXenRegionMapper, serveVhostUser, vhostUserWire } from '@xvio/transport/vhost-user';
import { createXenSimulator, type XenServices, type XenSimulator } from '@xvio/xen';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  XenGrantFrontend,
  type XenGrantLayout,
} from '../../packages/transport/src/vhost-user/vhost-user-xen-frontend.js';

const VIRTIO_NET_F_MAC = 1n << 5n;
const PROTOCOL = vhostUserWire.VHOST_USER_F_PROTOCOL_FEATURES;

let dir: string;
let sim: XenSimulator;
let backend: XenServices;
let cleanups: (() => Promise<void> | void)[];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'xvio-vu-grant-dev-'));
  sim = createXenSimulator();
  backend = sim.services(0);
  cleanups = [];
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await backend.close();
  rmSync(dir, { recursive: true, force: true });
});

function serve(name: string, device: () => VirtioDevice): string {
  const socketPath = join(dir, `${name}.sock`);
  const server = serveVhostUser({
    socketPath,
    device,
    xenMapper: createXenRegionMapper({ grants: backend.grants }),
  });
  cleanups.push(() => server.close());
  return socketPath;
}

async function connect(
  socketPath: string,
  queueSizes: number[],
  features: bigint,
  layout: XenGrantLayout,
): Promise<XenGrantFrontend> {
  const guest = sim.createDomain({ memoryBytes: 8 << 20 });
  const frontend = await XenGrantFrontend.connect({
    socketPath,
    guest,
    queueSizes,
    layout,
    features,
    eventIdx: (features & VIRTIO_F_EVENT_IDX) !== 0n,
  });
  cleanups.push(() => frontend.dispose());
  return frontend;
}

describe('devices over vhost-user XEN_MMAP grant regions', () => {
  for (const layout of ['on-demand', 'rings-in-advance'] as const) {
    it(`rng fills granted buffers across pages (${layout})`, async () => {
      const socketPath = serve('rng', () =>
        createRngDevice({ name: 'rng0', queueSize: 64 }, { source: createSeededEntropySource({ seed: 5 }) }),
      );
      const frontend = await connect(
        socketPath,
        [64],
        VIRTIO_F_VERSION_1 | PROTOCOL | VIRTIO_F_EVENT_IDX,
        layout,
      );
      const queue = frontend.queues[0]!;
      const ringMappings = backend.grants.liveMappings();
      const collected: Uint8Array[] = [];
      for (let round = 0; round < 4; round++) {
        for (let i = 0; i < 8; i++) queue.add([{ writable: 4096 }]);
        frontend.kick(0, round === 0);
        while (collected.length < (round + 1) * 8) {
          await frontend.waitCall(0);
          for (const used of queue.collect()) {
            expect(used.length).toBe(4096);
            collected.push(used.written[0]!);
          }
        }
        expect(queue.broken).toBe(false);
        expect(backend.grants.liveMappings()).toBe(ringMappings);
      }
      // Entropy, not a constant fill or the driver's 0xee poison.
      const all = Buffer.concat(collected);
      expect(new Set(all).size).toBeGreaterThan(200);
      expect(all.filter((byte) => byte === 0xee).length).toBeLessThan(all.length / 64);
      expect(collected[0]).not.toEqual(collected[1]);
    });
  }

  it('net carries a frame between two grant guests through the switch', async () => {
    const network = new NetSwitch();
    const sockets = (['a', 'b'] as const).map((name, i) =>
      serve(
        `net-${name}`,
        () =>
          new NetDevice({
            mac: netWire.parseMac(`52:54:00:00:00:0${i + 1}`)!,
            host: network.createPort(),
            queueSize: 64,
            withoutFeatures: VIRTIO_F_RING_PACKED,
          }),
      ),
    );
    const features = VIRTIO_F_VERSION_1 | PROTOCOL | VIRTIO_NET_F_MAC;
    const a = await connect(sockets[0]!, [64, 64], features, 'rings-in-advance');
    const b = await connect(sockets[1]!, [64, 64], features, 'on-demand');
    const [bRx] = b.queues;
    const [, aTx] = a.queues;
    for (let i = 0; i < 4; i++) bRx!.add([{ writable: 2048 }]);
    b.kick(0, true);
    const frames = [0x11, 0x22, 0x33].map((fill, i) =>
      udpFrame(
        {
          sourceMac: '52:54:00:00:00:01',
          destinationMac: '52:54:00:00:00:02',
          source: '10.0.0.1',
          destination: '10.0.0.2',
        },
        // Payloads within the 1500-byte MTU.
        new Uint8Array(300 + i * 500).fill(fill),
      ),
    );
    for (const frame of frames) {
      const packet = new Uint8Array(netWire.HDR_SIZE + frame.length);
      netWire.encodeNetHeader(netWire.emptyNetHeader(), packet, netWire.HDR_SIZE, 0);
      packet.set(frame, netWire.HDR_SIZE);
      aTx!.add([{ data: packet }]);
    }
    a.kick(1, true);
    const received: Uint8Array[] = [];
    while (received.length < frames.length) {
      await b.waitCall(0);
      for (const used of bRx!.collect()) received.push(used.written[0]!.subarray(0, used.length));
    }
    for (const [i, frame] of frames.entries()) {
      expect(received[i]![10]).toBe(1); // num_buffers
      expect([...received[i]!.subarray(netWire.HDR_SIZE)]).toEqual([...frame]);
    }
    // Transmit buffers were granted read-only: mapped read-only, completed, revoked.
    while (aTx!.inFlightCount > 0) {
      await a.waitCall(1);
      aTx!.collect();
    }
    expect(aTx!.broken).toBe(false);
    expect(bRx!.broken).toBe(false);
  });
});
