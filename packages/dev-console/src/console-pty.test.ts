import { createHash, randomBytes } from 'node:crypto';
import { closeSync, constants, openSync } from 'node:fs';
import tty from 'node:tty';
import { activateForTest, type TestHarness } from '@xvio/transport/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { type ConsoleDevice, createConsoleDevice } from './console-device.js';
import { ConsoleHostError } from './console-host.js';
import { PtyConsoleHost } from './console-pty.js';

const MiB = 1 << 20;
const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

const cleanup: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

/** The other end of the terminal, as a user program would open it. */
function openSlave(path: string): tty.ReadStream {
  const fd = openSync(path, constants.O_RDWR | constants.O_NOCTTY);
  const stream = new tty.ReadStream(fd);
  cleanup.push(() => {
    stream.destroy();
  });
  return stream;
}

async function startPtyConsole(): Promise<{
  device: ConsoleDevice;
  harness: TestHarness;
  host: PtyConsoleHost;
}> {
  const device = createConsoleDevice({ ports: [{ host: 'pty' }] });
  await device.open();
  cleanup.push(() => device.close());
  const harness = activateForTest(device, { memorySize: 8 * MiB, queueSizes: [64, 64] });
  cleanup.push(() => harness.dispose());
  const host = device.host(0) as PtyConsoleHost;
  expect(host).toBeInstanceOf(PtyConsoleHost);
  expect(host.path).toMatch(/^\/dev\/pts\/\d+$/);
  return { device, harness, host };
}

describe('PtyConsoleHost through the device', () => {
  it('carries 1 MiB of random bytes guest -> terminal with the same checksum', async () => {
    const { harness, device, host } = await startPtyConsole();
    const slave = openSlave(host.path);
    const received: Buffer[] = [];
    let receivedBytes = 0;
    slave.on('data', (chunk: Buffer) => {
      received.push(chunk);
      receivedBytes += chunk.length;
    });
    const payload = randomBytes(MiB);
    const transmit = harness.queue(1);
    let sent = 0;
    let inFlight = 0;
    const done = await harness.waitFor(() => {
      inFlight -= transmit.takeUsed().length;
      while (sent < payload.length && inFlight < 32) {
        transmit.addChain([{ data: payload.subarray(sent, sent + 4096) }]);
        sent += 4096;
        inFlight++;
      }
      harness.kick(1);
      return receivedBytes >= payload.length;
    }, 30_000);
    expect(done).toBe(true);
    expect(sha256(Buffer.concat(received))).toBe(sha256(payload));
    expect(device.metrics()['port0.txBytes']).toBe(MiB);
  });

  it('carries 1 MiB of random bytes terminal -> guest with the same checksum', async () => {
    const { harness, device, host } = await startPtyConsole();
    const slave = openSlave(host.path);
    const payload = randomBytes(MiB);
    slave.write(payload);
    const receive = harness.queue(0);
    const placed = new Map<number, number>();
    const got: Buffer[] = [];
    let gotBytes = 0;
    const done = await harness.waitFor(() => {
      for (const used of receive.takeUsed()) {
        const offset = placed.get(used.id)!;
        placed.delete(used.id);
        got.push(Buffer.from(harness.memory.bytes.subarray(offset, offset + used.length)));
        gotBytes += used.length;
      }
      while (placed.size < 32) {
        const { head, buffers } = receive.addChain([{ writable: true, length: 4096 }]);
        placed.set(head, buffers[0]!.offset);
      }
      harness.kick(0);
      return gotBytes >= payload.length;
    }, 30_000);
    expect(done).toBe(true);
    expect(gotBytes).toBe(payload.length);
    expect(sha256(Buffer.concat(got))).toBe(sha256(payload));
    // The bounded buffer held, however fast the terminal wrote.
    expect(device.metrics()['port0.droppedBytes']).toBe(0);
  });

  it('sets and reads the terminal window size', async () => {
    const host = new PtyConsoleHost({ size: { cols: 120, rows: 40 } });
    await host.start({ data() {}, drain() {}, connection() {}, resize() {}, closed() {} });
    cleanup.push(() => host.close());
    expect(host.size).toEqual({ cols: 120, rows: 40 });
    host.setSize({ cols: 90, rows: 20 });
    expect(host.size).toEqual({ cols: 90, rows: 20 });
  });

  it('notices a window size change made on the terminal and reports it as a resize', async () => {
    const host = new PtyConsoleHost({ size: { cols: 80, rows: 24 }, sizePollMs: 10 });
    const sizes: { cols: number; rows: number }[] = [];
    await host.start({
      data() {},
      drain() {},
      connection() {},
      resize: (size) => sizes.push(size),
      closed() {},
    });
    cleanup.push(() => host.close());
    host.setSize({ cols: 200, rows: 60 }); // as `screen` would on attach (TIOCSWINSZ)
    const deadline = Date.now() + 5000;
    while (sizes.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(sizes).toEqual([{ cols: 200, rows: 60 }]);
  });

  it('reports the terminal going away when it does not hold the slave (holdSlave: false)', async () => {
    const host = new PtyConsoleHost({ holdSlave: false });
    let closedWith: unknown = 'not closed';
    await host.start({
      data() {},
      drain() {},
      connection() {},
      resize() {},
      closed(error) {
        closedWith = error;
      },
    });
    cleanup.push(() => host.close());
    const fd = openSync(host.path, constants.O_RDWR | constants.O_NOCTTY);
    closeSync(fd); // the last user of the terminal leaves: the master reads EIO
    const deadline = Date.now() + 5000;
    while (closedWith === 'not closed' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(ConsoleHostError.isInstance(closedWith)).toBe(true);
    expect((closedWith as ConsoleHostError).code).toBe('host-failed');
    // Writes after that are dropped and counted, never thrown.
    expect(host.write(Uint8Array.of(1, 2, 3))).toBe(true);
    expect(host.stats.droppedBytes).toBe(3);
  });
});
