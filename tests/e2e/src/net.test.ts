import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildInitramfs,
  fetchGuestKernel,
  GUEST_MODULES,
  type GuestKernel,
  resolveModules,
} from './e2e-guest.js';
import { bootGuest, type GuestRun } from './e2e-qemu.js';
import { ensureSystemPackages } from './e2e-system.js';
import {
  builtinNetDevices,
  NetBackendProcess,
  NetLab,
  NetPeerProcess,
  netCaseArgs,
  vhostUserNetDevices,
} from './net-lab.js';

const UPLOAD = 4 * 1024 * 1024;
const DOWNLOAD = 4 * 1024 * 1024;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitForPath(path: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(path)) {
    if (Date.now() > deadline) throw new Error(`${path} did not appear`);
    await sleep(20);
  }
}

function describeRun(run: GuestRun): string {
  return run.lines
    .filter((line) => line.includes('XVIO') || /error|panic|qemu|virtio/i.test(line))
    .join('\n');
}

/** Bit `bit` of the guest driver's negotiated features (sysfs prints bit 0 first). */
function negotiated(features: string | undefined, bit: number): boolean {
  return features?.[bit] === '1';
}

describe('virtio-net in an unmodified Linux guest, peer in a network namespace', () => {
  let kernel: GuestKernel;
  let initrd: string;
  let dir: string;
  let lab: NetLab | undefined;
  let peer: NetPeerProcess | undefined;

  beforeAll(async () => {
    // Missing tools are installed, or the suite fails here: it never skips. The namespace
    // needs root: without it `ip netns add` throws and the suite fails.
    ensureSystemPackages();
    kernel = fetchGuestKernel();
    initrd = buildInitramfs(kernel);
    dir = mkdtempSync(join(tmpdir(), 'xvio-e2e-net-'));
    lab = NetLab.create();
    peer = new NetPeerProcess(lab, DOWNLOAD);
    await peer.start();
  });

  afterAll(async () => {
    await peer?.stop();
    lab?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Boots the net case and checks ping, the upload the peer verified and the download. */
  async function pingAndTransfer(devices: string[]): Promise<GuestRun> {
    const before = peer!.transfers().length;
    const tapBefore = lab!.tapCounters();
    const run = await bootGuest({
      kernel: kernel.vmlinuz,
      initrd,
      devices,
      args: netCaseArgs(UPLOAD),
      ...lab!.qemu(),
    });
    expect(run.failures, describeRun(run)).toEqual([]);
    expect(run.passes, describeRun(run)).toEqual(['net']);
    const result = run.results[0]!;
    expect(Number(result.rtt_ms), describeRun(run)).toBeGreaterThan(0);
    // Upload: the peer hashed what arrived and the guest compared it with what it sent.
    const transfers = peer!.transfers().slice(before);
    const sink = transfers.find((transfer) => transfer.kind === 'sink');
    expect(sink, peer!.log.join('')).toMatchObject({ md5: result.md5, bytes: UPLOAD });
    expect(result.bytes).toBe(String(UPLOAD));
    // Download: the guest hashed what arrived.
    const source = transfers.find((transfer) => transfer.kind === 'source');
    expect(source, peer!.log.join('')).toBeDefined();
    expect(result.down_bytes).toBe(String(DOWNLOAD));
    expect(result.down_md5).toBe(source!.md5);
    // It was the namespace's kernel at the other end: its TAP carried the frames.
    const tapAfter = lab!.tapCounters();
    expect(tapAfter.rxPackets - tapBefore.rxPackets).toBeGreaterThan(UPLOAD / 65536);
    expect(tapAfter.txPackets - tapBefore.txPackets).toBeGreaterThan(DOWNLOAD / 65536);
    return run;
  }

  it('has the virtio-net modules and their dependencies in the guest initramfs', () => {
    const files = resolveModules(kernel, GUEST_MODULES).map((file) => file.split('/').at(-1));
    expect(files).toEqual(expect.arrayContaining(['virtio_net.ko', 'net_failover.ko', 'failover.ko']));
  });

  it("pings and moves 4 MiB each way over TCP through xvio's vhost-user net backend", async () => {
    const socket = join(dir, 'net.sock');
    const backend = new NetBackendProcess(lab!, socket);
    await backend.start();
    try {
      const run = await pingAndTransfer(vhostUserNetDevices(socket));
      const features = run.results[0]!.features;
      // The guest runs with VERSION_1 (32), MRG_RXBUF (15) and checksum offload both ways
      // (CSUM 0, GUEST_CSUM 1), and TSO (HOST_TSO4 11): frames above the MTU cross the device.
      for (const bit of [0, 1, 11, 15, 32])
        expect(negotiated(features, bit), `feature ${bit}: ${features}`).toBe(true);
      expect(backend.log.join('')).toContain('frontend connected');
      expect(backend.log.join('')).not.toMatch(/backend (warn|error)|refused/);
    } finally {
      await backend.stop();
    }
    const metrics = backend.metrics();
    expect(metrics, backend.log.join('')).toBeDefined();
    // Every byte crossed the TAP, nothing was dropped on the way, and the frames were
    // mostly GSO (far fewer than one per 1500 bytes): the offloads reach the kernel both ways.
    expect(metrics!.tap_written_bytes).toBeGreaterThan(UPLOAD);
    expect(metrics!.tap_read_bytes).toBeGreaterThan(DOWNLOAD);
    expect(metrics!.tap_written_frames).toBeLessThan(UPLOAD / 1500 / 2);
    expect(metrics!.tap_read_frames).toBeLessThan(DOWNLOAD / 1500 / 2);
    const drops = Object.entries(metrics!).filter(
      ([name, value]) => /dropped|errors/.test(name) && value > 0,
    );
    expect(drops).toEqual([]);
  });

  it('keeps a TCP upload going when the backend is killed and restarted mid-transfer', async () => {
    // QEMU listens and the backend dials it, again after the restart (as in the rng case).
    // While no backend runs QEMU holds the NIC's link down; TCP retransmits once it is back.
    const socket = join(dir, 'restart.sock');
    const bytes = 32 * 1024 * 1024;
    let backend = new NetBackendProcess(lab!, socket, true);
    const backends = [backend];
    let restart: Promise<void> | undefined;
    let restartedAt = Number.POSITIVE_INFINITY;
    const before = peer!.transfers().length;
    const running = bootGuest({
      kernel: kernel.vmlinuz,
      initrd,
      devices: vhostUserNetDevices(socket, true),
      args: { ...netCaseArgs(bytes, 3, false), mark: 1 },
      ...lab!.qemu(),
      onLine(line) {
        if (!line.includes('XVIO-MARK transfer-start') || restart) return;
        restart = (async () => {
          await sleep(200);
          await backend.stop('SIGKILL');
          backend = new NetBackendProcess(lab!, socket, true);
          backends.push(backend);
          await backend.start();
          restartedAt = Date.now();
        })();
      },
    });
    try {
      await waitForPath(socket);
      await backend.start();
      const run = await running;
      await restart;
      expect(restart, 'the guest never started its transfer').toBeDefined();
      expect(run.failures, describeRun(run)).toEqual([]);
      expect(run.passes, describeRun(run)).toEqual(['net']);
      const sink = peer!
        .transfers()
        .slice(before)
        .find((transfer) => transfer.kind === 'sink');
      expect(sink, peer!.log.join('')).toMatchObject({ md5: run.results[0]!.md5, bytes });
      // The upload was still going when the second backend came up.
      expect(sink!.endedAt).toBeGreaterThan(restartedAt);
    } finally {
      for (const each of backends) await each.stop();
    }
    // The second backend carried the rest of the upload.
    expect(backends).toHaveLength(2);
    expect(backends[1]!.log.join('')).toContain('frontend connected');
    expect(backends[1]!.metrics()?.tap_written_bytes).toBeGreaterThan(0);
  });

  it('serves the guest again after a guest reboot (the driver probes anew, the TAP is reattached)', async () => {
    const socket = join(dir, 'reboot.sock');
    const backend = new NetBackendProcess(lab!, socket);
    await backend.start();
    const before = peer!.transfers().length;
    let waits = 0;
    try {
      const run = await bootGuest({
        kernel: kernel.vmlinuz,
        initrd,
        devices: vhostUserNetDevices(socket),
        args: { ...netCaseArgs(1024 * 1024, 3, false), ask: 1 },
        allowReboot: true,
        ...lab!.qemu(),
        onLine(line, control) {
          if (!line.startsWith('XVIO-WAIT')) return;
          waits++;
          control.send(waits === 1 ? 'reboot' : 'poweroff');
        },
      });
      expect(run.failures, describeRun(run)).toEqual([]);
      expect(run.passes, describeRun(run)).toEqual(['net', 'net']);
      const sinks = peer!
        .transfers()
        .slice(before)
        .filter((transfer) => transfer.kind === 'sink');
      expect(sinks.map((sink) => sink.md5)).toEqual(run.results.map((result) => result.md5));
    } finally {
      await backend.stop();
    }
  });

  it("pings and moves 4 MiB each way over TCP through QEMU's built-in virtio-net (the comparison)", async () => {
    await pingAndTransfer(builtinNetDevices(lab!));
  });
});
