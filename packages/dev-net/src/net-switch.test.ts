import { describe, expect, it } from 'vitest';
import { NetDevice } from './net-device.js';
import { NetSwitch } from './net-switch.js';
import {
  emptyNetHeader,
  parseMac,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_TCPV4,
} from './net-wire.js';
import {
  arpRequestFrame,
  checksumsValid,
  icmpEchoFrame,
  internetChecksum,
  NetTestGuest,
  tcpFrame,
  udpFrame,
} from './testing/index.js';

const MAC_A = '52:54:00:00:00:0a';
const MAC_B = '52:54:00:00:00:0b';
const MAC_C = '52:54:00:00:00:0c';

const turn = () => new Promise((resolve) => setImmediate(resolve));

function guestOn(
  network: NetSwitch,
  mac: string,
  options: ConstructorParameters<typeof NetTestGuest>[1] = {},
  rate?: number,
) {
  const port = network.createPort(rate === undefined ? {} : { rateLimitBitsPerSecond: rate });
  const device = new NetDevice({ mac: parseMac(mac)!, host: port });
  return { port, device, guest: new NetTestGuest(device, options) };
}

describe('NetSwitch', () => {
  it('two guests ping: ARP is flooded, the reply is learned and switched, ICMP echo crosses both ways', async () => {
    const network = new NetSwitch();
    const a = guestOn(network, MAC_A);
    const b = guestOn(network, MAC_B);
    const c = guestOn(network, MAC_C);
    for (const g of [a, b, c]) g.guest.postReceive(8, 2048);

    a.guest.send(arpRequestFrame(MAC_A, '10.0.0.1', '10.0.0.2'));
    await turn();
    expect(b.guest.receive()).toHaveLength(1);
    expect(c.guest.receive()).toHaveLength(1); // flooded to every other port
    expect(a.port.counters.floods).toBe(1);
    expect(network.lookup(parseMac(MAC_A)!)).toBe(a.port);

    const request = icmpEchoFrame(
      { sourceMac: MAC_B, destinationMac: MAC_A, source: '10.0.0.2', destination: '10.0.0.1' },
      7,
      1,
      new Uint8Array(56).fill(0x61),
    );
    b.guest.send(request);
    await turn();
    const [echo] = a.guest.receive();
    expect([...echo!.data]).toEqual([...request]);
    expect(c.guest.receive()).toHaveLength(0); // A was learned: no flood
    // A answers: echo reply (type 0) with the checksum adjusted.
    const reply = Uint8Array.from(echo!.data);
    reply.set(echo!.data.subarray(0, 6), 6);
    reply.set(echo!.data.subarray(6, 12), 0);
    reply.set(echo!.data.subarray(26, 30), 30);
    reply.set(echo!.data.subarray(30, 34), 26);
    reply[34] = 0;
    reply[36] = 0;
    reply[37] = 0;
    const sum = internetChecksum(reply.subarray(34));
    reply[36] = sum >> 8;
    reply[37] = sum & 0xff;
    a.guest.send(reply);
    await turn();
    const [back] = b.guest.receive();
    expect(back!.data[34]).toBe(0);
    expect(internetChecksum(back!.data.subarray(34))).toBe(0);
    expect(b.port.counters.outFrames).toBe(2);
    expect(a.port.counters.inFrames).toBe(2);
  });

  it('ages out learned addresses and floods again', async () => {
    let now = 0;
    const network = new NetSwitch({ ageingMs: 1000, now: () => now });
    const a = guestOn(network, MAC_A);
    const b = guestOn(network, MAC_B);
    a.guest.postReceive(4, 2048);
    b.guest.postReceive(4, 2048);
    a.guest.send(
      udpFrame(
        { sourceMac: MAC_A, destinationMac: MAC_B, source: '10.0.0.1', destination: '10.0.0.2' },
        new Uint8Array(8),
      ),
    );
    expect(network.lookup(parseMac(MAC_A)!)).toBe(a.port);
    now = 2000;
    expect(network.lookup(parseMac(MAC_A)!)).toBeUndefined();
    b.guest.send(
      udpFrame(
        { sourceMac: MAC_B, destinationMac: MAC_A, source: '10.0.0.2', destination: '10.0.0.1' },
        new Uint8Array(8),
      ),
    );
    expect(b.port.counters.floods).toBe(1);
    await turn();
    expect(a.guest.receive()).toHaveLength(1);
  });

  it('floods to an address evicted from a full table, even right after switching to it', async () => {
    const network = new NetSwitch({ maxAddresses: 2 });
    const a = guestOn(network, MAC_A);
    const b = guestOn(network, MAC_B);
    const c = guestOn(network, MAC_C);
    for (const g of [a, b, c]) g.guest.postReceive(8, 2048);
    const udp = (from: string, to: string) =>
      udpFrame(
        { sourceMac: from, destinationMac: to, source: '10.0.0.1', destination: '10.0.0.2' },
        new Uint8Array(8),
      );

    b.guest.send(udp(MAC_B, MAC_A)); // learns B, floods
    await turn();
    a.guest.send(udp(MAC_A, MAC_B)); // learns A, switched to B
    await turn();
    expect(a.port.counters.floods).toBe(0);
    expect(b.guest.receive()).toHaveLength(1);
    c.guest.receive();

    c.guest.send(udp(MAC_C, MAC_A)); // learning C evicts B, the oldest
    await turn();
    expect(network.lookup(parseMac(MAC_B)!)).toBeUndefined();
    expect(network.learnedAddresses).toBe(2);
    a.guest.receive();

    a.guest.send(udp(MAC_A, MAC_B)); // B is unknown again: flooded, C sees it too
    await turn();
    expect(a.port.counters.floods).toBe(1);
    expect(b.guest.receive()).toHaveLength(1);
    expect(c.guest.receive()).toHaveLength(1);

    b.guest.send(udp(MAC_B, MAC_C)); // B is learned again on its port
    await turn();
    expect(network.lookup(parseMac(MAC_B)!)).toBe(b.port);
    expect(network.learnedAddresses).toBe(2);
  });

  it('drops flooded frames for a port without buffers and counts them', async () => {
    const network = new NetSwitch();
    const a = guestOn(network, MAC_A);
    const b = guestOn(network, MAC_B);
    a.guest.send(arpRequestFrame(MAC_A, '10.0.0.1', '10.0.0.2'));
    await turn();
    expect(b.port.counters.outDropped).toBe(1);
    expect(a.port.counters.inDropped).toBe(1);
  });

  it('rate-limits a port: the sender waits, nothing is lost', async () => {
    const network = new NetSwitch();
    const a = guestOn(network, MAC_A, {}, 8 * 200_000); // 200 kB/s, burst 64 KiB
    const b = guestOn(network, MAC_B);
    b.guest.postReceive(128, 2048);
    a.guest.postReceive(1, 2048);
    b.guest.send(
      udpFrame(
        { sourceMac: MAC_B, destinationMac: MAC_A, source: '10.0.0.2', destination: '10.0.0.1' },
        new Uint8Array(8),
      ),
    );
    const frame = udpFrame(
      { sourceMac: MAC_A, destinationMac: MAC_B, source: '10.0.0.1', destination: '10.0.0.2' },
      new Uint8Array(1400),
    );
    for (let i = 0; i < 60; i++) a.guest.send(frame, emptyNetHeader(), { kick: false });
    a.guest.controller.kick(1);
    expect(a.port.counters.rateLimited).toBeGreaterThan(0);
    const start = Date.now();
    let received = 0;
    while (received < 60 && Date.now() - start < 5000) {
      await new Promise((resolve) => setTimeout(resolve, 10));
      received += b.guest.receive().length;
    }
    expect(received).toBe(60);
  });

  it('moves 100 MiB of TSO traffic between two guests with one copy, in order, checksums intact', async () => {
    const network = new NetSwitch();
    const arena = 24 << 20;
    const a = guestOn(network, MAC_A, { arenaSize: arena, queueSize: 256 });
    const b = guestOn(network, MAC_B, { arenaSize: arena, queueSize: 256 });
    const payloadSize = 64_000;
    const total = 100 * 1024 * 1024;
    const frames = Math.ceil(total / payloadSize);
    const template = tcpFrame(
      {
        sourceMac: MAC_A,
        destinationMac: MAC_B,
        source: '10.0.0.1',
        destination: '10.0.0.2',
        checksum: 'partial',
      },
      new Uint8Array(payloadSize).map((_, i) => (i * 13) & 0xff),
    );
    const header = {
      ...emptyNetHeader(),
      flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
      gsoType: VIRTIO_NET_HDR_GSO_TCPV4,
      gsoSize: 1448,
      hdrLen: 54,
      csumStart: 34,
      csumOffset: 16,
    };
    const view = new DataView(template.buffer);
    b.guest.postReceive(200, 16_384);
    let sent = 0;
    let received = 0;
    let inFlight = 0;
    let bytes = 0;
    const deadline = Date.now() + 120_000;
    while (received < frames && Date.now() < deadline) {
      inFlight -= a.guest.reclaimTransmit();
      let queued = 0;
      while (sent < frames && inFlight < 48) {
        view.setUint32(38, (sent * payloadSize) >>> 0); // TCP sequence
        view.setUint32(54, sent); // a frame counter at the start of the payload
        a.guest.send(template, header, { kick: false });
        sent++;
        inFlight++;
        queued++;
      }
      if (queued > 0) a.guest.controller.kick(1);
      await turn();
      const got = b.guest.receive();
      for (const frame of got) {
        const data = frame.data;
        const dataView = new DataView(data.buffer, data.byteOffset);
        expect(dataView.getUint32(54)).toBe(received);
        expect(frame.header.gsoType).toBe(VIRTIO_NET_HDR_GSO_TCPV4);
        // Complete the checksum the way a receiving stack would, then check it independently.
        const value = internetChecksum(data.subarray(34));
        dataView.setUint16(50, value === 0 ? 0xffff : value);
        expect(checksumsValid(data)).toBe(true);
        bytes += data.length - 54;
        received++;
      }
      if (got.length > 0) {
        let buffers = 0;
        for (const frame of got) buffers += frame.numBuffers;
        b.guest.postReceive(buffers, 16_384);
      }
    }
    expect(received).toBe(frames);
    expect(bytes).toBeGreaterThanOrEqual(total);
    expect(b.device.metricsValues.rxFrames).toBe(frames);
    expect(a.device.metricsValues.txDroppedBadGso + b.device.metricsValues.rxDroppedNoBuffers).toBe(0);
  }, 180_000);

  it('fills checksums for a receiver without GUEST_CSUM and segments for one without GUEST_TSO', async () => {
    const network = new NetSwitch();
    const a = guestOn(network, MAC_A);
    const b = guestOn(network, MAC_B, { features: VIRTIO_NET_F_MAC | VIRTIO_NET_F_MRG_RXBUF });
    b.guest.postReceive(128, 2048);
    const frame = tcpFrame(
      {
        sourceMac: MAC_A,
        destinationMac: MAC_B,
        source: '10.0.0.1',
        destination: '10.0.0.2',
        checksum: 'partial',
      },
      new Uint8Array(30_000).fill(5),
    );
    a.guest.send(frame, {
      ...emptyNetHeader(),
      flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
      gsoType: VIRTIO_NET_HDR_GSO_TCPV4,
      gsoSize: 1448,
      hdrLen: 54,
      csumStart: 34,
      csumOffset: 16,
    });
    const small = udpFrame(
      {
        sourceMac: MAC_A,
        destinationMac: MAC_B,
        source: '10.0.0.1',
        destination: '10.0.0.2',
        checksum: 'partial',
      },
      new Uint8Array(777).fill(9),
    );
    a.guest.send(small, {
      ...emptyNetHeader(),
      flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
      csumStart: 34,
      csumOffset: 6,
    });
    await turn();
    const got = b.guest.receive();
    expect(got).toHaveLength(Math.ceil(30_000 / 1448) + 1);
    for (const one of got) {
      expect(one.header.flags).toBe(0);
      expect(checksumsValid(one.data)).toBe(true);
    }
  });
});
