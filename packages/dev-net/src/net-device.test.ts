import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createNetDevice, NetDevice } from './net-device.js';
import { MemoryNetHost, NO_OFFLOADS } from './net-host.js';
import {
  emptyNetHeader,
  parseMac,
  VIRTIO_NET_CTRL_ANNOUNCE,
  VIRTIO_NET_CTRL_ANNOUNCE_ACK,
  VIRTIO_NET_CTRL_MAC,
  VIRTIO_NET_CTRL_MAC_ADDR_SET,
  VIRTIO_NET_CTRL_MAC_TABLE_SET,
  VIRTIO_NET_CTRL_MQ,
  VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET,
  VIRTIO_NET_CTRL_RX,
  VIRTIO_NET_CTRL_RX_PROMISC,
  VIRTIO_NET_CTRL_VLAN,
  VIRTIO_NET_CTRL_VLAN_ADD,
  VIRTIO_NET_ERR,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_CTRL_VQ,
  VIRTIO_NET_F_GUEST_ANNOUNCE,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_STATUS,
  VIRTIO_NET_HDR_F_DATA_VALID,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_UDP_L4,
  VIRTIO_NET_OK,
  VIRTIO_NET_S_ANNOUNCE,
  VIRTIO_NET_S_LINK_UP,
} from './net-wire.js';
import { checksumsValid, NetTestGuest, tcpFrame, udpFrame } from './testing/index.js';

const MAC_A = '52:54:00:00:00:0a';
const MAC_B = '52:54:00:00:00:0b';
const ip = { sourceMac: MAC_A, destinationMac: MAC_B, source: '10.0.0.1', destination: '10.0.0.2' };

function setup(options: { features?: bigint; host?: MemoryNetHost; queuePairs?: number } = {}) {
  const host = options.host ?? new MemoryNetHost();
  const device = new NetDevice({ mac: parseMac(MAC_A)!, host, queuePairs: options.queuePairs ?? 1 });
  const guest = new NetTestGuest(
    device,
    options.features === undefined ? {} : { features: options.features },
  );
  return { host, device, guest };
}

describe('NetDevice', () => {
  it('offers the network features and exposes mac, status and pairs in config space', () => {
    const { device } = setup({ queuePairs: 2 });
    for (const bit of [
      VIRTIO_NET_F_MAC,
      VIRTIO_NET_F_STATUS,
      VIRTIO_NET_F_MRG_RXBUF,
      VIRTIO_NET_F_CTRL_VQ,
      VIRTIO_NET_F_MQ,
    ]) {
      expect(device.features & bit).toBe(bit);
    }
    const config = new Uint8Array(device.configSize);
    device.readConfig(0, config);
    expect([...config.subarray(0, 6)]).toEqual([...parseMac(MAC_A)!]);
    const view = new DataView(config.buffer);
    expect(view.getUint16(6, true)).toBe(VIRTIO_NET_S_LINK_UP);
    expect(view.getUint16(8, true)).toBe(2);
  });

  it('refuses feature sets that break the spec 5.1.3.1 dependencies', () => {
    const device = new NetDevice({ mac: parseMac(MAC_A)!, host: new MemoryNetHost() });
    expect(device.acceptFeatures(VIRTIO_NET_F_HOST_TSO4)).toBe(false);
    expect(device.acceptFeatures(VIRTIO_NET_F_HOST_TSO4 | VIRTIO_NET_F_CSUM)).toBe(true);
    expect(device.acceptFeatures(VIRTIO_NET_F_GUEST_TSO4)).toBe(false);
  });

  it('accepts control-queue features without CTRL_VQ when the frontend serves the control queue (vhost-user)', () => {
    // What QEMU 7.2 passes a vhost-user net backend: GUEST_ANNOUNCE and MQ, never CTRL_VQ.
    const fromQemu = VIRTIO_NET_F_GUEST_ANNOUNCE | VIRTIO_NET_F_MQ | VIRTIO_NET_F_CSUM;
    const own = new NetDevice({ mac: parseMac(MAC_A)!, host: new MemoryNetHost(), queuePairs: 2 });
    expect(own.acceptFeatures(fromQemu)).toBe(false);
    const behindFrontend = createNetDevice({ mac: MAC_A, queuePairs: 2, controlQueue: 'frontend' });
    expect(behindFrontend.acceptFeatures(fromQemu)).toBe(true);
    expect(behindFrontend.acceptFeatures(VIRTIO_NET_F_GUEST_TSO4)).toBe(false); // other rules still hold
  });

  it('uses a 12-byte header with VERSION_1 and transmits a frame to the host unchanged', () => {
    const { host, guest } = setup();
    expect(guest.headerLength).toBe(12);
    const frame = udpFrame(ip, new Uint8Array(100).fill(7));
    guest.send(frame, emptyNetHeader(), { split: true });
    expect(host.sent).toHaveLength(1);
    expect([...host.sent[0]!.data]).toEqual([...frame]);
    expect(guest.reclaimTransmit()).toBe(1);
  });

  it('reads a header split across descriptors and writes one into a tiny first receive buffer', async () => {
    const { host, guest } = setup();
    const frame = udpFrame(ip, new Uint8Array(40).fill(2));
    const header = new Uint8Array(12);
    const rest = new Uint8Array(7 + frame.length);
    rest.set(frame, 7);
    guest.queues[1]!.addChain([{ data: header.subarray(0, 5) }, { data: rest }]);
    guest.controller.kick(1);
    expect([...host.sent[0]!.data]).toEqual([...frame]);
    const { buffers } = guest.queues[0]!.addChain([
      { writable: true, length: 4 },
      { writable: true, length: 2048 },
    ]);
    guest.controller.kick(0);
    const incoming = udpFrame({ ...ip, sourceMac: MAC_B, destinationMac: MAC_A }, new Uint8Array(30).fill(4));
    host.inject(incoming, { ...emptyNetHeader(), flags: VIRTIO_NET_HDR_F_DATA_VALID });
    await Promise.resolve();
    const bytes = guest.memory.bytes;
    expect(bytes[buffers[0]!.offset]).toBe(VIRTIO_NET_HDR_F_DATA_VALID);
    expect(bytes[buffers[1]!.offset + 6]).toBe(1); // num_buffers, low byte, at header offset 10
    expect([...bytes.subarray(buffers[1]!.offset + 8, buffers[1]!.offset + 8 + incoming.length)]).toEqual([
      ...incoming,
    ]);
  });

  it('receives a frame into one buffer with num_buffers 1', async () => {
    const { host, guest, device } = setup();
    guest.postReceive(4, 2048);
    const frame = udpFrame({ ...ip, sourceMac: MAC_B, destinationMac: MAC_A }, new Uint8Array(300).fill(1));
    host.inject(frame);
    await Promise.resolve();
    const received = guest.receive();
    expect(received).toHaveLength(1);
    expect(received[0]!.numBuffers).toBe(1);
    expect([...received[0]!.data]).toEqual([...frame]);
    expect(device.metricsValues.rxFrames).toBe(1);
    expect(guest.interrupts).toContain(0);
  });

  it('spreads a large frame over merged buffers (MRG_RXBUF num_buffers)', async () => {
    const { host, guest } = setup();
    guest.postReceive(40, 1536);
    const payload = new Uint8Array(30_000).map((_, i) => i & 0xff);
    const frame = tcpFrame({ ...ip, sourceMac: MAC_B, destinationMac: MAC_A }, payload);
    host.inject(frame, {
      ...emptyNetHeader(),
      gsoType: VIRTIO_NET_HDR_GSO_TCPV4,
      gsoSize: 1448,
      flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
      csumStart: 34,
      csumOffset: 16,
    });
    await Promise.resolve();
    const received = guest.receive();
    expect(received).toHaveLength(1);
    expect(received[0]!.numBuffers).toBe(Math.ceil((frame.length + 12) / 1536));
    expect([...received[0]!.data]).toEqual([...frame]);
    expect(received[0]!.header.gsoType).toBe(VIRTIO_NET_HDR_GSO_TCPV4);
  });

  it('holds frames while the guest has no buffers and delivers them after a kick', async () => {
    const { host, guest } = setup();
    const frame = udpFrame({ ...ip, sourceMac: MAC_B, destinationMac: MAC_A }, new Uint8Array(64));
    host.inject(frame);
    expect(host.pendingCount).toBe(1);
    guest.postReceive(2, 2048);
    await Promise.resolve();
    expect(host.pendingCount).toBe(0);
    expect(guest.receive()).toHaveLength(1);
  });

  it('fills the checksum for a guest without GUEST_CSUM, in the guest buffer (single copy)', async () => {
    const features = VIRTIO_NET_F_MAC | VIRTIO_NET_F_MRG_RXBUF;
    const { host, guest, device } = setup({ features });
    guest.postReceive(4, 2048);
    const frame = tcpFrame(
      { ...ip, sourceMac: MAC_B, destinationMac: MAC_A, checksum: 'partial' },
      new Uint8Array(333).fill(9),
    );
    expect(checksumsValid(frame)).toBe(false);
    host.inject(frame, {
      ...emptyNetHeader(),
      flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
      csumStart: 34,
      csumOffset: 16,
    });
    await Promise.resolve();
    const [received] = guest.receive();
    expect(received!.header.flags).toBe(0);
    expect(checksumsValid(received!.data)).toBe(true);
    expect(device.metricsValues.checksumsFilled).toBe(1);
  });

  it('segments a TSO frame for a guest without GUEST_TSO4', async () => {
    const features = VIRTIO_NET_F_MAC | VIRTIO_NET_F_MRG_RXBUF | VIRTIO_NET_F_GUEST_CSUM;
    const { host, guest } = setup({ features });
    guest.postReceive(64, 2048);
    const payload = new Uint8Array(10_000).map((_, i) => (i * 7) & 0xff);
    const frame = tcpFrame(
      { ...ip, sourceMac: MAC_B, destinationMac: MAC_A, checksum: 'partial', sequence: 5000 },
      payload,
    );
    host.inject(frame, {
      ...emptyNetHeader(),
      flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
      gsoType: VIRTIO_NET_HDR_GSO_TCPV4,
      gsoSize: 1000,
      csumStart: 34,
      csumOffset: 16,
    });
    await Promise.resolve();
    const received = guest.receive();
    expect(received).toHaveLength(10);
    const joined: number[] = [];
    received.forEach((segment, i) => {
      expect(segment.header.flags).toBe(VIRTIO_NET_HDR_F_DATA_VALID);
      expect(checksumsValid(segment.data)).toBe(true);
      expect(segment.data.length).toBe(54 + 1000);
      expect(new DataView(segment.data.buffer).getUint32(38)).toBe(5000 + i * 1000);
      joined.push(...segment.data.subarray(54));
    });
    expect(joined).toEqual([...payload]);
  });

  it('completes checksums and segments for a host that takes no offloads', () => {
    const host = new MemoryNetHost(NO_OFFLOADS);
    const { guest, device } = setup({ host });
    const payload = new Uint8Array(4000).fill(3);
    const frame = tcpFrame({ ...ip, checksum: 'partial' }, payload);
    guest.send(frame, {
      ...emptyNetHeader(),
      flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
      gsoType: VIRTIO_NET_HDR_GSO_TCPV4,
      gsoSize: 1448,
      hdrLen: 54,
      csumStart: 34,
      csumOffset: 16,
    });
    expect(host.sent).toHaveLength(3);
    for (const sent of host.sent) {
      expect(sent.header.gsoType).toBe(0);
      expect(checksumsValid(sent.data)).toBe(true);
    }
    const small = udpFrame({ ...ip, checksum: 'partial' }, new Uint8Array(99).fill(1));
    guest.send(small, {
      ...emptyNetHeader(),
      flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
      csumStart: 34,
      csumOffset: 6,
    });
    expect(checksumsValid(host.sent[3]!.data)).toBe(true);
    expect(device.metricsValues.framesSegmented).toBe(1);
  });

  it('applies backpressure: a deferred chain is sent after the host resumes', async () => {
    const { host, guest, device } = setup();
    host.blocked = true;
    guest.send(udpFrame(ip, new Uint8Array(10)));
    expect(host.sent).toHaveLength(0);
    expect(device.metricsValues.txDeferred).toBe(1);
    host.unblock();
    await new Promise((resolve) => setImmediate(resolve));
    expect(host.sent).toHaveLength(1);
  });

  describe('bad input is dropped and counted, never thrown', () => {
    it('runt, oversized, short header, bogus GSO, checksum offsets past the frame', () => {
      const { host, guest, device } = setup();
      const m = device.metricsValues;
      guest.send(new Uint8Array(10)); // runt: shorter than an Ethernet header
      expect(m.txDroppedRunt).toBe(1);
      guest.send(new Uint8Array(1500 + 14 + 4 + 1)); // above MTU without GSO
      expect(m.txDroppedOversize).toBe(1);
      guest.queues[1]!.addChain([{ data: new Uint8Array(5) }]); // shorter than the 12-byte header
      guest.controller.kick(1);
      expect(m.txDroppedBadHeader).toBe(1);
      const frame = tcpFrame(ip, new Uint8Array(3000));
      guest.send(frame, { ...emptyNetHeader(), gsoType: 0x42, gsoSize: 1448 });
      guest.send(frame, { ...emptyNetHeader(), gsoType: VIRTIO_NET_HDR_GSO_UDP_L4, gsoSize: 1448 });
      guest.send(frame, { ...emptyNetHeader(), gsoType: VIRTIO_NET_HDR_GSO_TCPV4, gsoSize: 1 });
      guest.send(frame, { ...emptyNetHeader(), gsoType: VIRTIO_NET_HDR_GSO_TCPV4 | 0x80, gsoSize: 1448 });
      guest.send(udpFrame(ip, new Uint8Array(3000)), {
        ...emptyNetHeader(),
        gsoType: VIRTIO_NET_HDR_GSO_TCPV4,
        gsoSize: 1448,
      });
      expect(m.txDroppedBadGso).toBe(5);
      guest.send(udpFrame(ip, new Uint8Array(20)), {
        ...emptyNetHeader(),
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        csumStart: 60,
        csumOffset: 6,
      });
      guest.send(udpFrame(ip, new Uint8Array(20)), {
        ...emptyNetHeader(),
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        csumStart: 0xffff,
        csumOffset: 0xffff,
      });
      expect(m.txDroppedBadChecksum).toBe(2);
      expect(host.sent).toHaveLength(0);
      expect(guest.queues[1]!.usedIdx).toBe(10);
      expect(guest.controller.status & 64).toBe(0); // no NEEDS_RESET: a bad frame is not a broken ring
    });

    it('GSO without the HOST_TSO4 feature is dropped', () => {
      const { host, guest, device } = setup({ features: VIRTIO_NET_F_MAC | VIRTIO_NET_F_CSUM });
      guest.send(tcpFrame(ip, new Uint8Array(3000)), {
        ...emptyNetHeader(),
        gsoType: VIRTIO_NET_HDR_GSO_TCPV4,
        gsoSize: 1448,
      });
      expect(device.metricsValues.txDroppedBadGso).toBe(1);
      expect(host.sent).toHaveLength(0);
    });

    it('a receive buffer too small without MRG_RXBUF drops the frame but keeps the buffer', async () => {
      const { host, guest, device } = setup({ features: VIRTIO_NET_F_MAC });
      guest.postReceive(1, 100);
      host.inject(udpFrame({ ...ip, destinationMac: MAC_A }, new Uint8Array(500)));
      host.inject(udpFrame({ ...ip, destinationMac: MAC_A }, new Uint8Array(10)));
      await Promise.resolve();
      expect(device.metricsValues.rxDroppedTooBig).toBe(1);
      expect(guest.receive()).toHaveLength(1);
    });

    it('control commands of the wrong size get VIRTIO_NET_ERR', () => {
      const { guest, device } = setup({ queuePairs: 2 });
      expect(guest.control(VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, Uint8Array.of(1, 2))).toBe(
        VIRTIO_NET_ERR,
      );
      expect(guest.control(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, new Uint8Array(5))).toBe(
        VIRTIO_NET_ERR,
      );
      expect(guest.control(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, new Uint8Array(3))).toBe(
        VIRTIO_NET_ERR,
      );
      expect(guest.control(VIRTIO_NET_CTRL_VLAN, VIRTIO_NET_CTRL_VLAN_ADD, new Uint8Array(1))).toBe(
        VIRTIO_NET_ERR,
      );
      // A MAC table claiming more entries than the data holds.
      const table = new Uint8Array(4 + 6 + 4);
      new DataView(table.buffer).setUint32(0, 1000, true);
      expect(guest.control(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, table)).toBe(VIRTIO_NET_ERR);
      expect(device.metricsValues.controlBadSize).toBe(5);
      // Unknown classes, out-of-range values and a chain without room for the ack.
      expect(guest.control(99, 0)).toBe(VIRTIO_NET_ERR);
      expect(guest.control(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, Uint8Array.of(9, 0))).toBe(
        VIRTIO_NET_ERR,
      );
      expect(
        guest.control(VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, Uint8Array.of(1), 0),
      ).toBeUndefined();
      expect(device.metricsValues.controlErrors).toBe(2);
      expect(guest.controller.status & 64).toBe(0);
    });
  });

  it('control queue: promisc off plus a MAC table filters unicast it does not list', async () => {
    const { host, guest, device } = setup();
    guest.postReceive(8, 2048);
    expect(guest.control(VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, Uint8Array.of(0))).toBe(
      VIRTIO_NET_OK,
    );
    const table = new Uint8Array(4 + 6 + 4);
    new DataView(table.buffer).setUint32(0, 1, true);
    table.set(parseMac('52:54:00:00:00:99')!, 4);
    expect(guest.control(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, table)).toBe(VIRTIO_NET_OK);
    host.inject(udpFrame({ ...ip, destinationMac: '52:54:00:00:00:77' }, new Uint8Array(10)));
    host.inject(udpFrame({ ...ip, destinationMac: '52:54:00:00:00:99' }, new Uint8Array(10)));
    host.inject(udpFrame({ ...ip, destinationMac: MAC_A }, new Uint8Array(10)));
    host.inject(udpFrame({ ...ip, destinationMac: 'ff:ff:ff:ff:ff:ff' }, new Uint8Array(10)));
    await Promise.resolve();
    expect(guest.receive()).toHaveLength(3);
    expect(device.metricsValues.rxDroppedFiltered).toBe(1);
  });

  it('control queue: MQ pairs, MAC address, announce ack', () => {
    const { guest, device } = setup({ queuePairs: 4 });
    expect(guest.controlIndex).toBe(8);
    expect(guest.control(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, Uint8Array.of(3, 0))).toBe(
      VIRTIO_NET_OK,
    );
    expect(device.activePairs).toBe(3);
    expect(guest.control(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, parseMac(MAC_B)!)).toBe(
      VIRTIO_NET_OK,
    );
    expect([...device.mac]).toEqual([...parseMac(MAC_B)!]);
    expect(device.announce()).toBe(true);
    const config = new Uint8Array(8);
    device.readConfig(0, config);
    expect(config[6]! & VIRTIO_NET_S_ANNOUNCE).toBe(VIRTIO_NET_S_ANNOUNCE);
    expect(guest.control(VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_ANNOUNCE_ACK)).toBe(VIRTIO_NET_OK);
    device.readConfig(0, config);
    expect(config[6]! & VIRTIO_NET_S_ANNOUNCE).toBe(0);
    guest.controller.reset();
    expect([...device.mac]).toEqual([...parseMac(MAC_A)!]); // the configured MAC again
  });

  it('link down drops received frames and notifies the driver', async () => {
    const { host, guest, device } = setup();
    guest.postReceive(2, 2048);
    const before = guest.configInterrupts;
    device.setLinkUp(false);
    expect(guest.configInterrupts).toBe(before + 1);
    host.inject(udpFrame({ ...ip, destinationMac: MAC_A }, new Uint8Array(10)));
    await Promise.resolve();
    expect(guest.receive()).toHaveLength(0);
    expect(device.metricsValues.rxDroppedStopped).toBe(1);
  });

  it('steers flows across active queue pairs with MQ', async () => {
    const { host, guest } = setup({ queuePairs: 2 });
    guest.control(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, Uint8Array.of(2, 0));
    guest.postReceive(64, 2048, 0);
    guest.postReceive(64, 2048, 1);
    for (let port = 1000; port < 1040; port++) {
      host.inject(udpFrame({ ...ip, destinationMac: MAC_A, sourcePort: port }, new Uint8Array(10)));
    }
    await Promise.resolve();
    const on0 = guest.receive(0).length;
    const on1 = guest.receive(1).length;
    expect(on0 + on1).toBe(40);
    expect(on0).toBeGreaterThan(0);
    expect(on1).toBeGreaterThan(0);
  });

  it('reset detaches the host and forgets filters', () => {
    const { host, guest, device } = setup();
    expect(host.attached).toBeDefined();
    guest.controller.reset();
    expect(host.attached).toBeUndefined();
    expect(device.headerLength).toBeUndefined();
  });
});

describe('hostile guests (property-based)', () => {
  const headerArbitrary = fc.record({
    flags: fc.integer({ min: 0, max: 255 }),
    gsoType: fc.constantFrom(0, 1, 3, 4, 5, 0x81, 0x7f, 255),
    hdrLen: fc.integer({ min: 0, max: 0xffff }),
    gsoSize: fc.integer({ min: 0, max: 0xffff }),
    csumStart: fc.integer({ min: 0, max: 0xffff }),
    csumOffset: fc.integer({ min: 0, max: 0xffff }),
  });

  it('random headers and frames: every chain completes, nothing throws, the device keeps running', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.tuple(
            headerArbitrary,
            fc.oneof(
              fc.uint8Array({ maxLength: 100 }),
              fc.integer({ min: 0, max: 3000 }).map((n) => tcpFrame(ip, new Uint8Array(n))),
              fc.integer({ min: 0, max: 3000 }).map((n) => udpFrame(ip, new Uint8Array(n))),
            ),
            fc.boolean(),
          ),
          { minLength: 1, maxLength: 20 },
        ),
        (frames) => {
          const { host, guest, device } = setup({ host: new MemoryNetHost(NO_OFFLOADS) });
          for (const [header, data, split] of frames) guest.send(data, header, { split });
          expect(guest.queues[1]!.usedIdx).toBe(frames.length);
          expect(guest.controller.status & 64).toBe(0);
          const m = device.metricsValues;
          const dropped =
            m.txDroppedRunt +
            m.txDroppedOversize +
            m.txDroppedBadGso +
            m.txDroppedBadChecksum +
            m.txDroppedHost;
          expect(m.txFrames + dropped).toBe(frames.length);
          // What reached a host without offloads never carries a partial checksum or GSO.
          for (const sent of host.sent) expect(sent.header.gsoType).toBe(0);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('random control commands: always answered OK or ERR, never a reset', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.tuple(
            fc.integer({ min: 0, max: 6 }),
            fc.integer({ min: 0, max: 6 }),
            fc.uint8Array({ maxLength: 40 }),
          ),
          {
            maxLength: 20,
          },
        ),
        (commands) => {
          const { guest } = setup({ queuePairs: 2 });
          for (const [commandClass, command, data] of commands) {
            const ack = guest.control(commandClass, command, data);
            expect(ack === VIRTIO_NET_OK || ack === VIRTIO_NET_ERR).toBe(true);
          }
          expect(guest.controller.status & 64).toBe(0);
        },
      ),
      { numRuns: 60 },
    );
  });
});
