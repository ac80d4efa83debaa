import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { lstat, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { activateForTest } from '@xvio/transport/testing';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createConsoleDevice, openConsoleDevice } from './console-device.js';
import {
  type ConsoleHost,
  ConsoleHostError,
  type ConsoleHostEvents,
  FileConsoleHost,
  MemoryConsoleHost,
  NullConsoleHost,
  StdioConsoleHost,
  TcpConsoleHost,
  TeeConsoleHost,
  UnixSocketConsoleHost,
} from './console-host.js';
import type { ConsoleSize } from './console-wire.js';

let directory: string;
const cleanup: (() => unknown)[] = [];

beforeEach(async () => {
  directory = await mkdtemp(join(tmpdir(), 'xvio-console-'));
});

afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
  await rm(directory, { recursive: true, force: true });
});

/** Records what a host reports. */
class Recorder implements ConsoleHostEvents {
  input: Buffer[] = [];
  drains = 0;
  connections: boolean[] = [];
  sizes: ConsoleSize[] = [];
  closedWith: ConsoleHostError[] = [];
  data(bytes: Uint8Array) {
    this.input.push(Buffer.from(bytes));
  }
  drain() {
    this.drains++;
  }
  connection(connected: boolean) {
    this.connections.push(connected);
  }
  resize(size: ConsoleSize) {
    this.sizes.push(size);
  }
  closed(error?: ConsoleHostError) {
    if (error) this.closedWith.push(error);
  }
  get text() {
    return Buffer.concat(this.input).toString();
  }
}

async function started<T extends ConsoleHost>(
  host: T,
  events = new Recorder(),
): Promise<{ host: T; events: Recorder }> {
  await host.start(events);
  cleanup.push(() => host.close());
  return { host, events };
}

async function until(predicate: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('condition not reached in time');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

function connect(options: net.NetConnectOpts): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(options, () => resolve(socket));
    socket.once('error', reject);
    cleanup.push(() => socket.destroy());
  });
}

function collect(socket: net.Socket): { text(): string; bytes(): number } {
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  return {
    text: () => Buffer.concat(chunks).toString(),
    bytes: () => chunks.reduce((n, c) => n + c.length, 0),
  };
}

describe('UnixSocketConsoleHost', () => {
  it('serves one peer at a time both ways, drops output while nobody is attached', async () => {
    const path = join(directory, 'console.sock');
    const { host, events } = await started(new UnixSocketConsoleHost({ path }));
    expect(host.connected).toBe(false);
    expect(host.write(new Uint8Array(5))).toBe(true);
    expect(host.stats.droppedBytes).toBe(5);

    const peer = await connect({ path });
    const output = collect(peer);
    await until(() => host.connected);
    expect(events.connections).toEqual([true]);
    host.write(new TextEncoder().encode('to the peer'));
    peer.write('from the peer');
    await until(() => output.text() === 'to the peer' && events.text === 'from the peer');

    const second = await connect({ path });
    await until(() => second.destroyed || second.readableEnded);
    expect(host.stats.rejectedPeers).toBe(1);

    peer.destroy();
    await until(() => !host.connected);
    expect(events.connections).toEqual([true, false]);
    await host.close();
    expect(existsSync(path)).toBe(false);
  });
});

describe('UnixSocketConsoleHost paths', () => {
  it('replaces a stale socket but never removes a file that is not a socket', async () => {
    const stale = join(directory, 'stale.sock');
    // A backend killed while listening leaves its socket file behind.
    spawnSync(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ]);
    expect((await lstat(stale)).isSocket()).toBe(true);
    const second = await started(new UnixSocketConsoleHost({ path: stale }));
    expect(second.host.address).toBe(stale);

    const precious = join(directory, 'precious.txt');
    await writeFile(precious, 'keep me');
    const error = await new UnixSocketConsoleHost({ path: precious })
      .start(new Recorder())
      .catch((reason: unknown) => reason);
    expect(ConsoleHostError.isInstance(error) && error.code).toBe('host-open-failed');
    expect(await readFile(precious, 'utf8')).toBe('keep me');
  });
});

describe('TcpConsoleHost', () => {
  it('listens on loopback with a chosen port and applies backpressure until the peer reads', async () => {
    const { host, events } = await started(new TcpConsoleHost({ port: 0, highWaterMark: 16 * 1024 }));
    expect(host.port).toBeGreaterThan(0);
    expect(host.address).toBe(`127.0.0.1:${host.port}`);
    const peer = await connect({ host: '127.0.0.1', port: host.port });
    peer.pause();
    await until(() => host.connected);
    const chunk = new Uint8Array(64 * 1024);
    let written = 0;
    while (host.write(chunk)) {
      written += chunk.length;
      if (written > 64 * 1024 * 1024) throw new Error('no backpressure');
    }
    written += chunk.length;
    expect(events.drains).toBe(0);
    const output = collect(peer);
    peer.resume();
    await until(() => events.drains === 1 && output.bytes() === written);
  });

  it('rejects a port already in use with host-open-failed', async () => {
    const { host } = await started(new TcpConsoleHost({ port: 0 }));
    const clash = new TcpConsoleHost({ port: host.port });
    const error = await clash.start(new Recorder()).catch((reason: unknown) => reason);
    expect(ConsoleHostError.isInstance(error) && error.code).toBe('host-open-failed');
  });
});

describe('FileConsoleHost', () => {
  it('appends to an existing log and never reads', async () => {
    const path = join(directory, 'guest.log');
    await writeFile(path, 'earlier\n');
    const { host } = await started(new FileConsoleHost({ path }));
    host.write(new TextEncoder().encode('boot\n'));
    host.write(new TextEncoder().encode('login: '));
    await host.close();
    expect(await readFile(path, 'utf8')).toBe('earlier\nboot\nlogin: ');
  });

  it('fails to start in a directory that does not exist', async () => {
    const host = new FileConsoleHost({ path: join(directory, 'missing', 'guest.log') });
    const error = await host.start(new Recorder()).catch((reason: unknown) => reason);
    expect(ConsoleHostError.isInstance(error) && error.code).toBe('host-open-failed');
    expect(((error as Error).cause as NodeJS.ErrnoException).code).toBe('ENOENT');
  });
});

describe('TeeConsoleHost', () => {
  it('fans output out to the primary and a log; input comes from the primary', async () => {
    const path = join(directory, 'tee.log');
    const primary = new MemoryConsoleHost({ size: { cols: 90, rows: 30 } });
    const { host, events } = await started(new TeeConsoleHost(primary, new FileConsoleHost({ path })));
    expect(host.write(new TextEncoder().encode('both'))).toBe(true);
    primary.input(new TextEncoder().encode('key'));
    expect(new TextDecoder().decode(primary.takeOutput())).toBe('both');
    expect(events.text).toBe('key');
    expect(host.size).toEqual({ cols: 90, rows: 30 });
    await host.close();
    expect(await readFile(path, 'utf8')).toBe('both');
  });

  it('drains only when both sides have room', async () => {
    const path = join(directory, 'tee.log');
    const primary = new MemoryConsoleHost({ capacity: 4 });
    const { host, events } = await started(new TeeConsoleHost(primary, new FileConsoleHost({ path })));
    expect(host.write(new Uint8Array(8))).toBe(false);
    primary.takeOutput();
    expect(events.drains).toBe(1);
  });
});

describe('StdioConsoleHost', () => {
  it('reads its input stream, writes its output stream, and follows pause/resume', async () => {
    const input = new PassThrough();
    const output = new PassThrough();
    const { host, events } = await started(
      new StdioConsoleHost({ input: input as never, output: output as never, raw: true }),
    );
    expect(host.size).toBeUndefined(); // not a terminal
    input.write('typed');
    await until(() => events.text === 'typed');
    host.write(new TextEncoder().encode('printed'));
    expect(output.read()?.toString()).toBe('printed');
    host.pause();
    expect(input.isPaused()).toBe(true);
    host.resume();
    expect(input.isPaused()).toBe(false);
  });
});

describe('StdioConsoleHost failure', () => {
  it('reports a broken output stream as the host going away, then drops and counts', async () => {
    const input = new PassThrough();
    const output = new PassThrough();
    const { host, events } = await started(
      new StdioConsoleHost({ input: input as never, output: output as never }),
    );
    output.emit('error', Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }));
    expect(events.closedWith.map((error) => error.code)).toEqual(['host-failed']);
    expect(host.write(new Uint8Array(4))).toBe(true);
    expect(host.stats.droppedBytes).toBe(4);
  });
});

describe('MemoryConsoleHost', () => {
  it('holds input offered before it is started and delivers it in order on start', async () => {
    const host = new MemoryConsoleHost();
    expect(host.input(new TextEncoder().encode('early '))).toBe(false);
    host.input(new TextEncoder().encode('bird'));
    const { events } = await started(host);
    expect(events.text).toBe('early bird');
    expect(host.input(new TextEncoder().encode('!'))).toBe(true);
    expect(events.text).toBe('early bird!');
  });
});

describe('NullConsoleHost', () => {
  it('accepts and counts output, never produces input', async () => {
    const { host, events } = await started(new NullConsoleHost());
    expect(host.write(new Uint8Array(10))).toBe(true);
    expect(host.stats.droppedBytes).toBe(10);
    expect(events.input).toEqual([]);
  });
});

describe('device host lifecycle', () => {
  it('starts its hosts on activation when nobody called open()', async () => {
    const path = join(directory, 'lazy.sock');
    const device = createConsoleDevice({ ports: [{ host: `unix:${path}` }] });
    cleanup.push(() => device.close());
    expect(existsSync(path)).toBe(false);
    const harness = activateForTest(device);
    cleanup.push(() => harness.dispose());
    await until(() => existsSync(path));
    const peer = await connect({ path });
    const output = collect(peer);
    await until(() => device.host(0)!.connected);
    harness.request(1, [{ data: new TextEncoder().encode('late but there') }]);
    await until(() => output.text() === 'late but there');
  });

  it('a host that cannot open: openConsoleDevice rejects; an activated device drops and counts', async () => {
    const blocker = await started(new TcpConsoleHost({ port: 0 }));
    const config = { ports: [{ host: { kind: 'tcp' as const, port: blocker.host.port } }] };
    const error = await openConsoleDevice(config).catch((reason: unknown) => reason);
    expect(ConsoleHostError.isInstance(error) && error.code).toBe('host-open-failed');
    const device = createConsoleDevice(config);
    cleanup.push(() => device.close());
    const harness = activateForTest(device);
    cleanup.push(() => harness.dispose());
    await until(() => device.portState(0)!.hostGone);
    harness.request(1, [{ data: new Uint8Array(9) }]);
    await harness.waitForUsed(1);
    expect(device.metrics()).toMatchObject({ 'port0.hostErrors': 1, 'port0.droppedBytes': 9 });
  });
});

describe('a device behind a unix socket', () => {
  it('carries guest output to the peer and the peer’s keys to the guest; the peer leaving does not stall the guest', async () => {
    const path = join(directory, 'ttyS.sock');
    const device = createConsoleDevice({ ports: [{ host: { kind: 'unix', path } }] });
    await device.open();
    cleanup.push(() => device.close());
    const harness = activateForTest(device);
    cleanup.push(() => harness.dispose());
    const peer = await connect({ path });
    const output = collect(peer);
    await until(() => device.host(0)!.connected);
    harness.request(1, [{ data: new TextEncoder().encode('login: ') }]);
    await until(() => output.text() === 'login: ');
    const { head, buffers } = harness.queue(0).addChain([{ writable: true, length: 64 }]);
    harness.kick(0);
    peer.write('root\r');
    const [used] = await harness.waitForUsed(0, 1, 5000);
    expect(used).toEqual({ id: head, length: 5 });
    const offset = buffers[0]!.offset;
    expect(Buffer.from(harness.memory.bytes.subarray(offset, offset + 5)).toString()).toBe('root\r');
    peer.destroy();
    await until(() => !device.host(0)!.connected);
    harness.request(1, [{ data: new Uint8Array(100) }]);
    await harness.waitForUsed(1, 2);
    expect(device.metrics()['port0.hostDroppedBytes']).toBe(100);
  });
});
