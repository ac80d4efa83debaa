import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NetDevice } from './net-device.js';
import { TapError, TapNetHost } from './net-tap.js';
import { emptyNetHeader, formatMac, parseMac, VIRTIO_NET_HDR_F_NEEDS_CSUM } from './net-wire.js';
import {
  arpRequestFrame,
  checksumsValid,
  icmpEchoFrame,
  internetChecksum,
  ipv4Bytes,
  NetTestGuest,
  udpFrame,
} from './testing/index.js';

// Everything happens inside a network namespace this test creates: the TAP is born in our
// namespace, moved into it at once, and the kernel on the namespace side answers ARP and ICMP.
const suffix = randomBytes(3).toString('hex');
const namespace = `xvio-net-${suffix}`;
const ifname = `xvt${suffix}`;
const GUEST_MAC = '52:54:00:9a:00:02';
const GUEST_IP = '10.99.0.2';
const KERNEL_IP = '10.99.0.1';

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

const turn = (ms = 5) => new Promise((resolve) => setTimeout(resolve, ms));

describe('TapNetHost in a network namespace', () => {
  let tap: TapNetHost;
  let guest: NetTestGuest;
  let kernelMac = '';

  beforeAll(() => {
    ip('netns', 'add', namespace);
    tap = new TapNetHost({ ifname });
    ip('link', 'set', 'dev', ifname, 'netns', namespace);
    ip('-n', namespace, 'addr', 'add', `${KERNEL_IP}/24`, 'dev', ifname);
    ip('-n', namespace, 'link', 'set', 'dev', ifname, 'up');
    guest = new NetTestGuest(new NetDevice({ mac: parseMac(GUEST_MAC)!, host: tap }));
    guest.postReceive(64, 2048);
  });

  afterAll(async () => {
    await tap?.close();
    try {
      ip('netns', 'del', namespace);
    } catch {
      // already gone
    }
  });

  /** Waits for a received frame matching `match`, answering ARP for the guest's address meanwhile. */
  async function waitFor(match: (frame: Uint8Array) => boolean, timeoutMs = 5000): Promise<Uint8Array> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const frames = guest.receive();
      if (frames.length > 0)
        guest.postReceive(
          frames.reduce((n, f) => n + f.numBuffers, 0),
          2048,
        );
      for (const { data } of frames) {
        answerArp(data);
        if (match(data)) return data;
      }
      await turn();
    }
    throw new Error('timed out waiting for a frame from the kernel');
  }

  function answerArp(frame: Uint8Array): void {
    const isArpRequest = frame[12] === 0x08 && frame[13] === 0x06 && frame[21] === 1;
    if (!isArpRequest || [...frame.subarray(38, 42)].join('.') !== GUEST_IP) return;
    const reply = Uint8Array.from(frame);
    reply.set(frame.subarray(6, 12), 0);
    reply.set(parseMac(GUEST_MAC)!, 6);
    reply[21] = 2;
    reply.set(parseMac(GUEST_MAC)!, 22);
    reply.set(ipv4Bytes(GUEST_IP), 28);
    reply.set(frame.subarray(22, 28), 32);
    reply.set(frame.subarray(28, 32), 38);
    guest.send(reply);
  }

  it('rejects a name that does not fit IFNAMSIZ', () => {
    expect(() => new TapNetHost({ ifname: 'x'.repeat(16) })).toThrow();
  });

  it('the kernel answers our ARP request', async () => {
    guest.send(arpRequestFrame(GUEST_MAC, GUEST_IP, KERNEL_IP));
    const reply = await waitFor((f) => f[12] === 0x08 && f[13] === 0x06 && f[21] === 2);
    expect([...reply.subarray(28, 32)].join('.')).toBe(KERNEL_IP);
    kernelMac = formatMac(reply, 22);
    expect(kernelMac).toMatch(/^[0-9a-f:]{17}$/);
  });

  it('the kernel answers ICMP echo', async () => {
    const request = icmpEchoFrame(
      { sourceMac: GUEST_MAC, destinationMac: kernelMac, source: GUEST_IP, destination: KERNEL_IP },
      0x4242,
      7,
      new Uint8Array(56).fill(0x33),
    );
    guest.send(request);
    const reply = await waitFor((f) => f[23] === 1 && f[34] === 0 && f[38] === 0x42 && f[39] === 0x42);
    expect(internetChecksum(reply.subarray(34))).toBe(0);
    expect([...reply.subarray(42)]).toEqual([...request.subarray(42)]);
    expect(tap.counters.writtenFrames).toBeGreaterThanOrEqual(2);
  });

  it('a UDP datagram with a partial checksum (NEEDS_CSUM) reaches a socket in the namespace', async () => {
    const listener = spawn('ip', [
      'netns',
      'exec',
      namespace,
      process.execPath,
      '-e',
      `
      const s = require('node:dgram').createSocket('udp4');
      s.on('message', (m) => { process.stdout.write(m.toString()); process.exit(0); });
      s.bind(7777, '${KERNEL_IP}', () => process.stdout.write('ready\\n'));
      setTimeout(() => process.exit(2), 8000);
    `,
    ]);
    let output = '';
    listener.stdout.on('data', (chunk) => (output += chunk));
    const exited = new Promise<number>((resolve) => listener.on('exit', (code) => resolve(code ?? -1)));
    while (!output.includes('ready')) await turn(20);
    const frame = udpFrame(
      {
        sourceMac: GUEST_MAC,
        destinationMac: kernelMac,
        source: GUEST_IP,
        destination: KERNEL_IP,
        destinationPort: 7777,
        checksum: 'partial',
      },
      new TextEncoder().encode('hello from the guest'),
    );
    expect(checksumsValid(frame)).toBe(false);
    guest.send(frame, {
      ...emptyNetHeader(),
      flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
      csumStart: 34,
      csumOffset: 6,
    });
    expect(await exited).toBe(0);
    expect(output).toContain('hello from the guest');
  });

  it('carries a datagram sent from the namespace to the guest', async () => {
    execFileSync('ip', [
      'netns',
      'exec',
      namespace,
      'bash',
      '-c',
      `printf 'hi guest' > /dev/udp/${GUEST_IP}/9999`,
    ]);
    const frame = await waitFor((f) => f[23] === 17 && ((f[36]! << 8) | f[37]!) === 9999);
    expect(new TextDecoder().decode(frame.subarray(42))).toBe('hi guest');
    expect(tap.counters.readFrames).toBeGreaterThan(0);
  });

  it('reports open failures with a typed error', () => {
    let error: unknown;
    try {
      new TapNetHost({ clonePath: '/nonexistent/tun' });
    } catch (caught) {
      error = caught;
    }
    expect(TapError.isInstance(error)).toBe(true);
    expect((error as TapError).code).toBe('open-failed');
  });
});

describe('TapNetHost created inside a namespace (netns)', () => {
  const own = `xvio-nns-${randomBytes(3).toString('hex')}`;
  const name = `xvn${suffix}`;
  const openFds = () => readdirSync('/proc/self/fd').length;
  const linksIn = (where: string[]) =>
    ip(...where, '-o', 'link', 'show')
      .split('\n')
      .filter(Boolean);

  beforeAll(() => {
    ip('netns', 'add', own);
  });

  afterAll(() => {
    try {
      ip('netns', 'del', own);
    } catch {
      // already gone
    }
  });

  it('makes the interface there (never in ours), and close takes it and both fds away', async () => {
    // The first TAP of a process loads libc through koffi: warm up before counting fds.
    await new TapNetHost({ netns: own }).close();
    const before = openFds();
    const tap = new TapNetHost({ ifname: name, netns: own });
    expect(tap.ifname).toBe(name);
    expect(openFds()).toBe(before + 2); // the TAP and the eventfd that wakes its poll thread
    expect(linksIn(['-n', own]).some((line) => line.includes(`: ${name}:`))).toBe(true);
    expect(linksIn([]).some((line) => line.includes(`: ${name}:`))).toBe(false);
    // The device over it closes it (it owns its host): the interface goes with the fd.
    const device = new NetDevice({ mac: parseMac(GUEST_MAC)!, host: tap });
    new NetTestGuest(device).postReceive(4, 2048);
    await device.close();
    expect(openFds()).toBe(before);
    expect(linksIn(['-n', own]).some((line) => line.includes(`: ${name}:`))).toBe(false);
  });

  it('reports a namespace that does not exist with a typed error', () => {
    let error: unknown;
    try {
      new TapNetHost({ netns: `${own}-missing` });
    } catch (caught) {
      error = caught;
    }
    expect(TapError.isInstance(error)).toBe(true);
    expect((error as TapError).code).toBe('netns-failed');
    expect(() => new TapNetHost({ netns: '../etc' })).toThrow(/not a network namespace name/);
  });
});
