import { runConformanceSuite } from '@xvio/transport/testing';
import { expect } from 'vitest';
import { NetDevice } from './net-device.js';
import { MemoryNetHost } from './net-host.js';
import { HDR_SIZE, parseMac } from './net-wire.js';
import { udpFrame } from './testing/net-packets.js';

const frame = udpFrame(
  {
    sourceMac: '52:54:00:00:00:01',
    destinationMac: '52:54:00:00:00:02',
    source: '10.0.0.1',
    destination: '10.0.0.2',
  },
  new Uint8Array(46).fill(0x42),
);
let host = new MemoryNetHost();

// Transmit queue 1: a request is a virtio_net_hdr plus a frame; it completes with length 0
// once the host side took the frame.
runConformanceSuite({
  name: 'net',
  create: () => {
    host = new MemoryNetHost();
    return new NetDevice({ mac: parseMac('52:54:00:00:00:01')!, host });
  },
  exercise: {
    queue: 1,
    request: () => {
      const buffer = new Uint8Array(HDR_SIZE + frame.length);
      buffer.set(frame, HDR_SIZE);
      return [{ data: buffer }];
    },
    check: (used) => {
      expect(used.length).toBe(0);
      expect([...host.sent.at(-1)!.data]).toEqual([...frame]);
    },
  },
});
