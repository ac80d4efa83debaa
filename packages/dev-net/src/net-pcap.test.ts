import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { NetDevice } from './net-device.js';
import { PcapWriter } from './net-pcap.js';
import { NetSwitch } from './net-switch.js';
import { parseMac } from './net-wire.js';
import { arpRequestFrame, NetTestGuest, udpFrame } from './testing/index.js';

const directories: string[] = [];
function scratch(): string {
  const directory = mkdtempSync(join(tmpdir(), 'xvio-pcap-'));
  directories.push(directory);
  return directory;
}
afterEach(() => {
  for (const directory of directories.splice(0)) rmSync(directory, { recursive: true, force: true });
});

describe('PcapWriter', () => {
  it('writes the pcap global header (linktype Ethernet) and one record per frame, split views joined', () => {
    const path = join(scratch(), 'a.pcap');
    let clock = 1_700_000_000_123_456;
    const writer = new PcapWriter(path, () => clock++);
    const frame = udpFrame(
      {
        sourceMac: '52:54:00:00:00:01',
        destinationMac: '52:54:00:00:00:02',
        source: '10.0.0.1',
        destination: '10.0.0.2',
      },
      new Uint8Array(20).fill(3),
    );
    writer.record([frame.subarray(0, 10), frame.subarray(10)], frame.length);
    writer.record([frame], frame.length);
    writer.close();
    const file = readFileSync(path);
    const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
    expect(view.getUint32(0, true)).toBe(0xa1b2c3d4);
    expect(view.getUint16(4, true)).toBe(2);
    expect(view.getUint16(6, true)).toBe(4);
    expect(view.getUint32(20, true)).toBe(1); // LINKTYPE_ETHERNET
    expect(view.getUint32(24, true)).toBe(1_700_000_000);
    expect(view.getUint32(28, true)).toBe(123_456);
    expect(view.getUint32(32, true)).toBe(frame.length);
    expect(view.getUint32(36, true)).toBe(frame.length);
    expect([...file.subarray(40, 40 + frame.length)]).toEqual([...frame]);
    expect(file.length).toBe(24 + 2 * (16 + frame.length));
  });

  it('captures a switch port so that tcpdump reads it', async () => {
    const path = join(scratch(), 'port.pcap');
    const network = new NetSwitch();
    const capture = new PcapWriter(path);
    const a = new NetTestGuest(
      new NetDevice({ mac: parseMac('52:54:00:00:00:01')!, host: network.createPort(), capture }),
    );
    const b = new NetTestGuest(
      new NetDevice({ mac: parseMac('52:54:00:00:00:02')!, host: network.createPort() }),
    );
    a.postReceive(4, 2048);
    b.postReceive(4, 2048);
    a.send(arpRequestFrame('52:54:00:00:00:01', '10.0.0.1', '10.0.0.2'));
    b.send(
      udpFrame(
        {
          sourceMac: '52:54:00:00:00:02',
          destinationMac: '52:54:00:00:00:01',
          source: '10.0.0.2',
          destination: '10.0.0.1',
          destinationPort: 9999,
        },
        new Uint8Array(5),
      ),
    );
    await new Promise((resolve) => setImmediate(resolve));
    capture.close();
    expect(capture.recorded).toBe(2);
    const output = execFileSync('tcpdump', ['-nn', '-r', path], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines = output.trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/ARP, Request who-has 10\.0\.0\.2 tell 10\.0\.0\.1/);
    expect(lines[1]).toMatch(/IP 10\.0\.0\.2\.40000 > 10\.0\.0\.1\.9999: UDP, length 5/);
  });
});
