import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { NetDevice } from './net-device.js';
import type { NetHost } from './net-host.js';
import { DatagramNetHost, STREAM_MAX_FRAME, StreamNetHost } from './net-socket.js';
import {
  emptyNetHeader,
  parseMac,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_TCPV4,
} from './net-wire.js';
import { checksumsValid, NetTestGuest, tcpFrame, udpFrame } from './testing/index.js';

const MAC_A = '52:54:00:00:00:0a';
const MAC_B = '52:54:00:00:00:0b';
const hosts: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const host of hosts.splice(0)) await host.close();
});

function track<T extends { close(): Promise<void> }>(host: T): T {
  hosts.push(host);
  return host;
}

function guestWith(host: NetHost, mac: string): NetTestGuest {
  return new NetTestGuest(new NetDevice({ mac: parseMac(mac)!, host }));
}

async function until(condition: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

const frameAB = (size: number) =>
  udpFrame(
    { sourceMac: MAC_A, destinationMac: MAC_B, source: '10.0.0.1', destination: '10.0.0.2' },
    new Uint8Array(size).fill(size & 0xff),
  );

describe('StreamNetHost (QEMU -netdev stream framing)', () => {
  it('joins two guests over TCP loopback, both directions, offloads completed in software', async () => {
    const server = track(new StreamNetHost({ mode: 'server', host: '127.0.0.1', port: 0 }));
    await server.ready();
    const client = track(new StreamNetHost({ mode: 'client', host: '127.0.0.1', port: server.port! }));
    const a = guestWith(server, MAC_A);
    const b = guestWith(client, MAC_B);
    a.postReceive(32, 2048);
    b.postReceive(32, 2048);
    await until(() => client.connected && server.connected);
    a.send(frameAB(100));
    const tso = tcpFrame(
      {
        sourceMac: MAC_A,
        destinationMac: MAC_B,
        source: '10.0.0.1',
        destination: '10.0.0.2',
        checksum: 'partial',
      },
      new Uint8Array(5000).fill(1),
    );
    a.send(tso, {
      ...emptyNetHeader(),
      flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
      gsoType: VIRTIO_NET_HDR_GSO_TCPV4,
      gsoSize: 1448,
      csumStart: 34,
      csumOffset: 16,
    });
    const got: Uint8Array[] = [];
    await until(() => {
      got.push(...b.receive().map((f) => f.data));
      return got.length >= 5;
    });
    expect([...got[0]!]).toEqual([...frameAB(100)]);
    for (const frame of got) expect(checksumsValid(frame)).toBe(true);
    b.send(
      udpFrame(
        { sourceMac: MAC_B, destinationMac: MAC_A, source: '10.0.0.2', destination: '10.0.0.1' },
        new Uint8Array(7),
      ),
    );
    await until(() => a.receive().length === 1);
    expect(server.counters.sentFrames).toBe(5);
  });

  it('puts a 4-byte big-endian length before each frame, over a Unix socket', async () => {
    const path = `\0xvio-net-test-${process.pid}-${Date.now()}`;
    const server = track(new StreamNetHost({ mode: 'server', path }));
    await server.ready();
    const a = guestWith(server, MAC_A);
    a.postReceive(4, 2048);
    const raw = net.connect(path);
    const chunks: Buffer[] = [];
    raw.on('data', (chunk) => chunks.push(chunk));
    await until(() => server.connected);
    a.send(frameAB(60));
    await until(() => Buffer.concat(chunks).length >= 4 + frameAB(60).length);
    const bytes = Buffer.concat(chunks);
    expect(bytes.readUInt32BE(0)).toBe(frameAB(60).length);
    expect([...bytes.subarray(4)]).toEqual([...frameAB(60)]);
    // And the other way: a frame split across writes arrives whole.
    const frame = Buffer.from(
      udpFrame(
        { sourceMac: MAC_B, destinationMac: MAC_A, source: '10.0.0.2', destination: '10.0.0.1' },
        new Uint8Array(33),
      ),
    );
    const prefix = Buffer.alloc(4);
    prefix.writeUInt32BE(frame.length);
    raw.write(Buffer.concat([prefix, frame.subarray(0, 5)]));
    await new Promise((resolve) => setTimeout(resolve, 20));
    raw.write(frame.subarray(5));
    await until(() => a.receive().length === 1);
    raw.destroy();
  });

  it('closes a connection that announces a frame above NET_BUFSIZE', async () => {
    const server = track(new StreamNetHost({ mode: 'server', host: '127.0.0.1', port: 0 }));
    await server.ready();
    guestWith(server, MAC_A).postReceive(2, 2048);
    const raw = net.connect(server.port!, '127.0.0.1');
    const closed = new Promise((resolve) => raw.on('close', resolve));
    raw.on('error', () => undefined);
    const prefix = Buffer.alloc(8);
    prefix.writeUInt32BE(STREAM_MAX_FRAME + 1);
    raw.write(prefix);
    await closed;
    expect(server.counters.protocolErrors).toBe(1);
  });

  it('pauses the stream while the guest has no buffers and loses nothing', async () => {
    const server = track(new StreamNetHost({ mode: 'server', host: '127.0.0.1', port: 0 }));
    await server.ready();
    const client = track(new StreamNetHost({ mode: 'client', host: '127.0.0.1', port: server.port! }));
    const a = guestWith(server, MAC_A);
    const b = guestWith(client, MAC_B);
    await until(() => client.connected && server.connected);
    for (let i = 0; i < 40; i++) a.send(frameAB(200 + i), emptyNetHeader(), { kick: i % 8 === 7 });
    a.controller.kick(1);
    await new Promise((resolve) => setTimeout(resolve, 50));
    let received = 0;
    const sizes: number[] = [];
    const deadline = Date.now() + 5000;
    while (received < 40 && Date.now() < deadline) {
      b.postReceive(3, 2048);
      await new Promise((resolve) => setTimeout(resolve, 5));
      const got = b.receive();
      received += got.length;
      sizes.push(...got.map((f) => f.data.length));
    }
    expect(sizes).toEqual(Array.from({ length: 40 }, (_, i) => frameAB(200 + i).length));
  });
});

describe('DatagramNetHost (QEMU -netdev dgram)', () => {
  it('carries one frame per datagram between two guests', async () => {
    const first = track(new DatagramNetHost({ localPort: 0, remotePort: 9 }));
    await first.ready();
    const second = track(new DatagramNetHost({ localPort: 0, remotePort: first.port }));
    await second.ready();
    const third = track(new DatagramNetHost({ localPort: 0, remotePort: second.port }));
    await third.ready();
    const a = guestWith(third, MAC_A);
    const b = guestWith(second, MAC_B);
    b.postReceive(8, 2048);
    a.send(frameAB(300));
    await until(() => second.counters.receivedFrames === 1);
    const [frame] = b.receive();
    expect([...frame!.data]).toEqual([...frameAB(300)]);
    // Without buffers a datagram is lost and counted, like on a wire.
    const c = guestWith(first, MAC_A);
    b.send(frameAB(10));
    await until(() => first.counters.dropped + first.counters.receivedFrames > 0);
    expect(c.receive()).toHaveLength(0);
  });
});
