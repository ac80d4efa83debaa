import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { STATUS_DEVICE_NEEDS_RESET } from '@xvio/transport';
import { afterEach, describe, expect, it } from 'vitest';
import { createNetDevice, NetDevice } from './net-device.js';
import { MemoryNetHost } from './net-host.js';
import { PCAP_GLOBAL_HEADER_SIZE, PCAP_RECORD_HEADER_SIZE, PcapWriter } from './net-pcap.js';
import { openNetPort } from './net-port.js';
import { getNetSwitch, NetSwitch } from './net-switch.js';
import { parseMac } from './net-wire.js';
import { NetTestGuest, udpFrame } from './testing/index.js';

const directories: string[] = [];
function scratch(): string {
  const directory = mkdtempSync(join(tmpdir(), 'xvio-net-port-'));
  directories.push(directory);
  return directory;
}
afterEach(() => {
  for (const directory of directories.splice(0)) rmSync(directory, { recursive: true, force: true });
});

const MAC_A = '52:54:00:00:00:0a';
const MAC_B = '52:54:00:00:00:0b';
const frameAtoB = udpFrame(
  { sourceMac: MAC_A, destinationMac: MAC_B, source: '10.0.0.1', destination: '10.0.0.2' },
  new Uint8Array(30).fill(5),
);

/** Bytes of a pcap file holding `frames` records of `frameAtoB`. */
const pcapSize = (frames: number) =>
  PCAP_GLOBAL_HEADER_SIZE + frames * (PCAP_RECORD_HEADER_SIZE + frameAtoB.length);

describe('NetDevice.close', () => {
  it('takes its switch port out of the switch and flushes and closes its capture', async () => {
    const network = new NetSwitch();
    const path = join(scratch(), 'a.pcap');
    const port = network.createPort();
    const device = new NetDevice({ mac: parseMac(MAC_A)!, host: port, capture: new PcapWriter(path) });
    const guest = new NetTestGuest(device);
    guest.send(frameAtoB);
    expect(port.counters.inFrames).toBe(1);
    expect(network.portCount).toBe(1);
    // Buffered until a flush: a reset or a close writes it out.
    expect(readFileSync(path).length).toBe(0);
    await device.close();
    expect(device.closed).toBe(true);
    expect(network.portCount).toBe(0);
    expect(port.endpoint).toBeUndefined();
    expect(readFileSync(path).length).toBe(pcapSize(1));
    // Closing twice is one close; a closed device refuses to start again.
    await device.close();
    const again = new NetTestGuest(device);
    expect(again.controller.status & STATUS_DEVICE_NEEDS_RESET).toBe(STATUS_DEVICE_NEEDS_RESET);
    expect(network.portCount).toBe(0);
  });

  it('closes the host made from a configuration, and leaves alone a host it does not own', async () => {
    const owned = createNetDevice({ host: { type: 'switch', switch: 'close-test' } });
    const network = getNetSwitch('close-test');
    expect(network.portCount).toBe(1);
    await owned.close();
    expect(network.portCount).toBe(0);
    const host = new MemoryNetHost();
    let closes = 0;
    host.close = async () => {
      closes++;
    };
    const lent = new NetDevice({ mac: parseMac(MAC_A)!, host, ownsHost: false });
    new NetTestGuest(lent);
    expect(host.attached).toBeDefined();
    await lent.close();
    expect(host.attached).toBeUndefined();
    expect(closes).toBe(0);
  });
});

describe('NetPort', () => {
  it('lends one host side and one capture to each device in turn, and closes them once', async () => {
    const path = join(scratch(), 'port.pcap');
    const port = openNetPort({ mac: MAC_A, capture: path, host: { type: 'switch', switch: 'port-test' } });
    const network = getNetSwitch('port-test');
    const first = port.createDevice();
    const firstGuest = new NetTestGuest(first);
    firstGuest.send(frameAtoB);
    // The frontend reconnects: a new device, the same switch port, the same capture file.
    first.reset();
    const second = port.createDevice();
    expect(first.closed).toBe(true);
    const secondGuest = new NetTestGuest(second);
    secondGuest.send(frameAtoB);
    expect(network.portCount).toBe(1);
    expect(port.devicesCreated).toBe(2);
    // The first device, long gone, cannot detach its successor.
    first.reset();
    secondGuest.send(frameAtoB);
    expect(second.metricsValues.txFrames).toBe(2);
    expect(second.metrics().switch_port_in_frames).toBe(3);
    await port.close();
    expect(second.closed).toBe(true);
    expect(network.portCount).toBe(0);
    expect(readFileSync(path).length).toBe(pcapSize(3));
    expect(() => port.createDevice()).toThrow(/closed/);
  });

  it('refuses a bad configuration before opening anything', () => {
    expect(() => openNetPort({ host: { type: 'tap', netns: '..' } })).toThrow(/netns/);
    expect(() => openNetPort({ host: { type: 'tap', netns: 'a/b' } })).toThrow();
  });
});
