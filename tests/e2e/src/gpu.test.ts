import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodePng } from '@xvio/dev-gpu';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildInitramfs, fetchGuestKernel, GUEST_MODULES, type GuestKernel, WORK_DIR } from './e2e-guest.js';
import { bootGuest, type GuestControl, type GuestRun } from './e2e-qemu.js';
import { ensureSystemPackages, fetchBackportsQemu } from './e2e-system.js';
import { GpuBackendProcess, type GpuBackendStats, qemuScreendump } from './gpu-harness.js';
import { comparePattern, decodePpm, type PatternMatch } from './gpu-pattern.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function describeRun(run: GuestRun, backend: GpuBackendProcess): string {
  const guest = run.lines.filter(
    (line) => line.includes('XVIO') || /error|panic|qemu|virtio|drm/i.test(line),
  );
  return [...guest, '--- backend ---', backend.log.join('')].join('\n');
}

interface Check {
  xvio?: { width: number; height: number; match: PatternMatch };
  qemu?: { width: number; height: number; match: PatternMatch };
  stats?: GpuBackendStats;
  error?: unknown;
}

// QEMU 7.2 (Debian 12's) refuses vhost-user-gpu without KVM ("vhost initialization failed:
// requires kvm", backends/vhost-user.c), and this machine's KVM cannot run stock kernels; the
// check is gone in later QEMUs, so the guest runs under bookworm-backports' QEMU (10.0),
// unpacked beside the system's 7.2. XVIO_QEMU overrides it.
describe('virtio-gpu in an unmodified Linux guest (vhost-user-gpu-pci)', () => {
  let qemu: string;
  let kernel: GuestKernel;
  let initrd: string;
  let dir: string;

  beforeAll(() => {
    // Missing tools are installed, or the suite fails here: it never skips.
    ensureSystemPackages();
    qemu = process.env.XVIO_QEMU ?? fetchBackportsQemu(WORK_DIR).binary;
    // The cloud kernel has no DRM: virtio_gpu needs Debian's full amd64 kernel.
    kernel = fetchGuestKernel('amd64');
    initrd = buildInitramfs(kernel, [...GUEST_MODULES, 'virtio-gpu']);
    dir = mkdtempSync(join(tmpdir(), 'xvio-e2e-gpu-'));
  });

  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("shows the pattern the guest writes to /dev/fb0 in xvio's snapshot and in QEMU's display", async () => {
    const socket = join(dir, 'gpu.sock');
    const monitor = join(dir, 'monitor.sock');
    const backend = new GpuBackendProcess(socket, { width: 1024, height: 768 });
    await backend.start();
    const check: Check = {};
    let checking: Promise<void> | undefined;

    // The guest has drawn and waits: poll xvio's snapshot until the pattern is complete (the
    // fbdev emulation flushes from a worker, shortly after the write), then QEMU's picture.
    const verify = async (control: GuestControl) => {
      try {
        const deadline = Date.now() + 30_000;
        for (;;) {
          const png = await backend.snapshot(join(dir, 'xvio.png'));
          if (png) {
            const picture = decodePng(png);
            const match = comparePattern({ ...picture, pixels: picture.rgba, channels: 4 });
            check.xvio = { width: picture.width, height: picture.height, match };
            if (match.wrong === 0) break;
          }
          if (Date.now() > deadline) break;
          await sleep(250);
        }
        for (;;) {
          const picture = decodePpm(await qemuScreendump(monitor, join(dir, 'qemu.ppm'), 'vgpu0'));
          const match = comparePattern({ ...picture, pixels: picture.rgb, channels: 3 });
          check.qemu = { width: picture.width, height: picture.height, match };
          if (match.wrong === 0 || Date.now() > deadline) break;
          await sleep(250);
        }
        check.stats = await backend.stats();
      } catch (error) {
        check.error = error;
      } finally {
        control.send('poweroff');
      }
    };

    try {
      const run = await bootGuest({
        qemu,
        kernel: kernel.vmlinuz,
        initrd,
        memoryMiB: 512,
        devices: [
          '-chardev',
          `socket,id=vgpu,path=${socket}`,
          '-device',
          // QEMU offers the guest its own feature set, not the back-end's, and passes what the
          // guest acks on: VIRTIO_F_RING_RESET (bit 40), on by default, is not xvio's to accept.
          'vhost-user-gpu-pci,chardev=vgpu,id=vgpu0,queue_reset=off',
          '-monitor',
          `unix:${monitor},server=on,wait=off`,
        ],
        args: { case: 'gpu', ask: 1 },
        timeoutMs: 150_000,
        onLine(line, control) {
          if (line.startsWith('XVIO-WAIT') && !checking) checking = verify(control);
        },
      });
      await checking;
      const details = `${describeRun(run, backend)}\n--- checks ---\n${JSON.stringify(check)}`;
      expect(run.failures, details).toEqual([]);
      expect(run.passes, details).toEqual(['gpu']);
      expect(check.error, details).toBeUndefined();
      const result = run.results[0]!;
      expect(result.width).toBe('1024');
      expect(result.height).toBe('768');
      expect(result.bpp).toBe('32');
      // xvio's own snapshot (device.snapshotPng(0)) shows every pixel of the pattern.
      expect(check.xvio, details).toBeDefined();
      expect({ width: check.xvio!.width, height: check.xvio!.height }).toEqual({ width: 1024, height: 768 });
      expect(check.xvio!.match, details).toEqual({ wrong: 0 });
      // QEMU's display got the same picture through the vhost-user-gpu display socket.
      expect(check.qemu, details).toBeDefined();
      expect({ width: check.qemu!.width, height: check.qemu!.height }).toEqual({ width: 1024, height: 768 });
      expect(check.qemu!.match, details).toEqual({ wrong: 0 });
      const stats = check.stats!;
      expect(stats.displayAttached).toBe(true);
      expect(stats.display.updates).toBeGreaterThan(0);
      expect(stats.qemuDisplays?.length).toBeGreaterThan(0);
      expect(stats.device.faults ?? 0).toBe(0);
      expect(backend.log.join('')).toContain('display socket from QEMU');
    } finally {
      await backend.kill('SIGTERM');
    }
  });
});
