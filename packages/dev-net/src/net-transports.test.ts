// The device behind every Xen transport and memory strategy, with Linux-like guest drivers on
// the Xen simulator: two guests, one switch, frames both ways.
import {
  attachSimGuest,
  type GuestVirtioDriver,
  type SimMemoryKind,
  type SimTransportKind,
} from '@xvio/transport/guest';
import { createXenSimulator, type SimDomainType } from '@xvio/xen';
import { describe, expect, it } from 'vitest';
import { NetDevice } from './net-device.js';
import { NetSwitch } from './net-switch.js';
import {
  decodeNetHeader,
  emptyNetHeader,
  encodeNetHeader,
  HDR_SIZE,
  type NetHeader,
  parseMac,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_TCPV4,
} from './net-wire.js';
import { checksumsValid, tcpFrame, udpFrame } from './testing/net-packets.js';

const GUEST_TYPE: Record<SimTransportKind, SimDomainType> = { mmio: 'arm', pci: 'hvm', xenbus: 'pv' };
const MAC_A = '52:54:00:00:00:0a';
const MAC_B = '52:54:00:00:00:0b';

function withHeader(frame: Uint8Array, header: NetHeader = emptyNetHeader()): Uint8Array {
  const out = new Uint8Array(HDR_SIZE + frame.length);
  encodeNetHeader(header, out, HDR_SIZE, 0);
  out.set(frame, HDR_SIZE);
  return out;
}

async function transmit(driver: GuestVirtioDriver, bytes: Uint8Array): Promise<void> {
  const used = await driver.request(1, [{ data: bytes }]);
  expect(used.length).toBe(0);
}

describe.each([
  ['mmio', 'grant-map'],
  ['pci', 'persistent-pool'],
  ['xenbus', 'grant-copy'],
  ['mmio', 'foreign'],
] as [SimTransportKind, SimMemoryKind][])('net over %s with %s memory', (transport, memory) => {
  it('two guests exchange frames through the switch, a TSO frame across merged receive buffers', async () => {
    const sim = createXenSimulator();
    const network = new NetSwitch();
    const guests = [MAC_A, MAC_B].map((mac) => ({
      mac,
      domain: sim.createDomain({ type: GUEST_TYPE[transport], memoryBytes: 16 << 20, vcpus: 1 }),
      device: new NetDevice({ mac: parseMac(mac)!, host: network.createPort(), queueSize: 64 }),
    }));
    const attached = await Promise.all(
      guests.map((guest) =>
        attachSimGuest({
          sim,
          guest: guest.domain,
          transport,
          memory,
          devices: [guest.device],
          queueSize: 64,
          poolPages: 256,
        }),
      ),
    );
    try {
      const [a, b] = attached.map((entry) => entry.devices[0]!.driver);
      // The simulated Linux driver negotiates every device feature offered (MRG_RXBUF, CSUM, TSO...).
      expect(guests[0]!.device.headerLength).toBe(HDR_SIZE);
      // B posts receive buffers, then A sends: a small frame and a TSO frame with a partial checksum.
      const receive = b!.queue(0);
      for (let i = 0; i < 4; i++) receive.add([{ writable: 2048 }]);
      await b!.kick(0);
      const small = udpFrame(
        { sourceMac: MAC_A, destinationMac: MAC_B, source: '10.0.0.1', destination: '10.0.0.2' },
        new Uint8Array(100).fill(7),
      );
      await transmit(a!, withHeader(small));
      const [first] = await b!.waitUsed(0, 1);
      const bytes = concat(first!.written).subarray(0, first!.length);
      expect(decodeNetHeader(bytes).gsoType).toBe(0);
      expect([...bytes.subarray(HDR_SIZE)]).toEqual([...small]);

      const big = tcpFrame(
        {
          sourceMac: MAC_A,
          destinationMac: MAC_B,
          source: '10.0.0.1',
          destination: '10.0.0.2',
          checksum: 'partial',
        },
        new Uint8Array(5000).fill(3),
      );
      await transmit(
        a!,
        withHeader(big, {
          ...emptyNetHeader(),
          flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
          gsoType: VIRTIO_NET_HDR_GSO_TCPV4,
          gsoSize: 1448,
          hdrLen: 54,
          csumStart: 34,
          csumOffset: 16,
        }),
      );
      // B negotiated GUEST_TSO4 and MRG_RXBUF: the frame arrives whole over three 2 KiB buffers.
      const parts = await b!.waitUsed(0, 3);
      const merged = concat(parts.map((part) => concat(part.written).subarray(0, part.length)));
      const header = decodeNetHeader(merged);
      expect(header.gsoType).toBe(VIRTIO_NET_HDR_GSO_TCPV4);
      expect(merged[10]).toBe(3); // num_buffers
      const frame = merged.slice(HDR_SIZE);
      expect(frame.length).toBe(big.length);
      // Complete the partial checksum as the receiving stack would, then check it independently.
      let sum = 0;
      for (let i = 34; i + 1 < frame.length; i += 2) sum += (frame[i]! << 8) | frame[i + 1]!;
      if (frame.length % 2) sum += frame[frame.length - 1]! << 8;
      while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
      const value = ~sum & 0xffff;
      frame[50] = value >> 8;
      frame[51] = value & 0xff;
      expect(checksumsValid(frame)).toBe(true);
      expect(guests[1]!.device.metricsValues.rxFrames).toBe(2);
    } finally {
      for (const entry of attached) await entry.close();
      await sim.close();
    }
  });
});

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
