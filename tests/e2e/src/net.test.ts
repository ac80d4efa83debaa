import { mkdtempSync, rmSync } from 'node:fs';
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
      expect(backend.log.join('')).not.toMatch(/refused|error/);
    } finally {
      await backend.stop();
    }
  });

  it("pings and moves 4 MiB each way over TCP through QEMU's built-in virtio-net (the comparison)", async () => {
    await pingAndTransfer(builtinNetDevices(lab!));
  });
});
