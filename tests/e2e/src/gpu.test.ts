import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodePng } from '@xvio/dev-gpu';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildInitramfs, fetchGuestKernel, GUEST_MODULES, type GuestKernel, WORK_DIR } from './e2e-guest.js';
import { bootGuest, type GuestRun } from './e2e-qemu.js';
import { ensureSystemPackages, fetchBackportsQemu } from './e2e-system.js';
import { GpuBackendProcess, type GpuBackendStats, qemuScreendump } from './gpu-harness.js';
import { comparePattern, decodePpm, PATTERN_BLUE, type PatternMatch } from './gpu-pattern.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function describeRun(run: GuestRun, backend: GpuBackendProcess, checks: Check[]): string {
  const guest = run.lines.filter(
    (line) => line.includes('XVIO') || /error|panic|qemu|virtio|drm/i.test(line),
  );
  return [...guest, '--- backend ---', backend.log.join(''), '--- checks ---', JSON.stringify(checks)].join(
    '\n',
  );
}

interface Picture {
  width: number;
  height: number;
  match: PatternMatch;
}

interface Check {
  blue: number;
  xvio?: Picture;
  qemu?: Picture;
  stats?: GpuBackendStats;
  error?: unknown;
}

/**
 * The guest has drawn and waits: polls xvio's snapshot (`device.snapshotPng(0)`) until it
 * shows the pattern (the fbdev emulation flushes from a worker, shortly after the write),
 * then QEMU's own picture of the device (`screendump`), then the backend's counters.
 */
async function checkPattern(
  backend: GpuBackendProcess,
  dir: string,
  monitor: string,
  blue: number,
): Promise<Check> {
  const check: Check = { blue };
  try {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const png = await backend.snapshot(join(dir, 'xvio.png'));
      if (png) {
        const picture = decodePng(png);
        const match = comparePattern({ ...picture, pixels: picture.rgba, channels: 4 }, blue);
        check.xvio = { width: picture.width, height: picture.height, match };
        if (match.wrong === 0) break;
      }
      if (Date.now() > deadline) break;
      await sleep(250);
    }
    for (;;) {
      const picture = decodePpm(await qemuScreendump(monitor, join(dir, 'qemu.ppm'), 'vgpu0'));
      const match = comparePattern({ ...picture, pixels: picture.rgb, channels: 3 }, blue);
      check.qemu = { width: picture.width, height: picture.height, match };
      if (match.wrong === 0 || Date.now() > deadline) break;
      await sleep(250);
    }
    check.stats = await backend.stats();
  } catch (error) {
    check.error = error;
  }
  return check;
}

/** Both pictures show every pixel of the pattern at 1024x768. */
function expectPattern(check: Check | undefined, details: string): void {
  expect(check, details).toBeDefined();
  expect(check!.error, details).toBeUndefined();
  for (const picture of [check!.xvio, check!.qemu]) {
    expect(picture, details).toBeDefined();
    expect({ width: picture!.width, height: picture!.height }).toEqual({ width: 1024, height: 768 });
    expect(picture!.match, details).toEqual({ wrong: 0 });
  }
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

  /** QEMU connects to xvio's socket; its monitor takes `screendump`. */
  function gpuDevices(socket: string, monitor: string): string[] {
    return [
      '-chardev',
      `socket,id=vgpu,path=${socket}`,
      '-device',
      // QEMU offers the guest its own feature set, not the back-end's, and passes what the
      // guest acks on: VIRTIO_F_RING_RESET (bit 40), on by default, is not xvio's to accept.
      'vhost-user-gpu-pci,chardev=vgpu,id=vgpu0,queue_reset=off',
      '-monitor',
      `unix:${monitor},server=on,wait=off`,
    ];
  }

  it("shows the pattern the guest writes to /dev/fb0 in xvio's snapshot and in QEMU's display", async () => {
    const socket = join(dir, 'gpu.sock');
    const monitor = join(dir, 'monitor.sock');
    const backend = new GpuBackendProcess(socket, { width: 1024, height: 768 });
    await backend.start();
    const checks: Check[] = [];
    let checking: Promise<void> | undefined;
    try {
      const run = await bootGuest({
        qemu,
        kernel: kernel.vmlinuz,
        initrd,
        memoryMiB: 512,
        devices: gpuDevices(socket, monitor),
        args: { case: 'gpu', ask: 1 },
        timeoutMs: 150_000,
        onLine(line, control) {
          if (!line.startsWith('XVIO-WAIT') || checking) return;
          checking = checkPattern(backend, dir, monitor, PATTERN_BLUE).then((check) => {
            checks.push(check);
            control.send('poweroff');
          });
        },
      });
      await checking;
      const details = describeRun(run, backend, checks);
      expect(run.failures, details).toEqual([]);
      expect(run.passes, details).toEqual(['gpu']);
      const result = run.results[0]!;
      expect(result.width).toBe('1024');
      expect(result.height).toBe('768');
      expect(result.bpp).toBe('32');
      // xvio's own snapshot (device.snapshotPng(0)) and QEMU's display (through the
      // vhost-user-gpu display socket) both show every pixel the guest wrote.
      expectPattern(checks[0], details);
      const stats = checks[0]!.stats!;
      expect(stats.displayAttached).toBe(true);
      expect(stats.display.updates).toBeGreaterThan(0);
      expect(stats.qemuDisplays?.length).toBeGreaterThan(0);
      expect(stats.device.faults ?? 0).toBe(0);
      expect(backend.log.join('')).toContain('display socket from QEMU');
    } finally {
      await backend.kill('SIGTERM');
    }
  });

  it("shows the next boot's picture after a guest reboot (device reset, a new display socket)", async () => {
    const socket = join(dir, 'reboot.sock');
    const monitor = join(dir, 'reboot-monitor.sock');
    const backend = new GpuBackendProcess(socket, { width: 1024, height: 768 });
    await backend.start();
    // A different blue per boot: the second picture cannot be left over from the first.
    const blues = [0xc0, 0x60];
    const checks: Check[] = [];
    let asks = 0;
    let checking: Promise<void> | undefined;
    try {
      const run = await bootGuest({
        qemu,
        kernel: kernel.vmlinuz,
        initrd,
        memoryMiB: 512,
        devices: gpuDevices(socket, monitor),
        args: { case: 'gpu', ask: 1, askblue: 1 },
        allowReboot: true,
        timeoutMs: 170_000,
        onLine(line, control) {
          if (line.startsWith('XVIO-ASK blue')) {
            control.send(String(blues[Math.min(asks++, blues.length - 1)]));
            return;
          }
          if (!line.startsWith('XVIO-WAIT')) return;
          const boot = checks.length;
          checking = (checking ?? Promise.resolve())
            .then(() => checkPattern(backend, dir, monitor, blues[boot]!))
            .then((check) => {
              checks.push(check);
              control.send(checks.length === 1 ? 'reboot' : 'poweroff');
            });
        },
      });
      await checking;
      const details = describeRun(run, backend, checks);
      expect(run.failures, details).toEqual([]);
      expect(run.passes, details).toEqual(['gpu', 'gpu']);
      expect(run.results.map((result) => result.blue)).toEqual(['192', '96']);
      expect(checks).toHaveLength(2);
      expectPattern(checks[0], details);
      expectPattern(checks[1], details);
      // QEMU handed the back-end a new display socket when the rebooted driver set DRIVER_OK.
      expect(checks[1]!.stats!.display.attachments, details).toBeGreaterThan(
        checks[0]!.stats!.display.attachments,
      );
      expect(checks[1]!.stats!.vhostUser.activations).toBeGreaterThan(
        checks[0]!.stats!.vhostUser.activations,
      );
    } finally {
      await backend.kill('SIGTERM');
    }
  });
});
