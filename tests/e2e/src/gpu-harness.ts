import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { VhostUserGpuDisplayCounters } from '@xvio/dev-gpu';
import type { VhostUserMetrics } from '@xvio/transport/vhost-user';

const BACKEND_ENTRY = join(dirname(fileURLToPath(import.meta.url)), 'gpu-backend.ts');

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** What the backend reports on `stats`. */
export interface GpuBackendStats {
  device: Record<string, number>;
  display: VhostUserGpuDisplayCounters;
  displayAttached: boolean;
  qemuDisplays: { enabled: boolean; width: number; height: number }[] | null;
  qemuProtocolFeatures: string | null;
  vhostUser: VhostUserMetrics;
}

/**
 * xvio's gpu backend (`gpu-backend.ts`) in its own Node process, with the control channel
 * the tests use: commands on its stdin, answers on its stdout.
 */
export class GpuBackendProcess {
  private child: ChildProcess | undefined;
  readonly log: string[] = [];
  private waiters: { prefix: string; resolve: (line: string) => void }[] = [];

  constructor(
    readonly socketPath: string,
    readonly size = { width: 1024, height: 768 },
  ) {}

  /** Starts the backend; resolves once its socket listens. */
  start(): Promise<void> {
    const args = [
      '--import',
      'tsx',
      BACKEND_ENTRY,
      this.socketPath,
      '--width',
      String(this.size.width),
      '--height',
      String(this.size.height),
    ];
    const child = spawn(process.execPath, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      cwd: dirname(BACKEND_ENTRY),
    });
    this.child = child;
    child.stderr?.on('data', (chunk: Buffer) => this.log.push(chunk.toString('utf8')));
    let pending = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      pending += chunk.toString('utf8');
      let newline = pending.indexOf('\n');
      while (newline >= 0) {
        const line = pending.slice(0, newline);
        pending = pending.slice(newline + 1);
        if (!line.startsWith('XVIO-SNAPSHOT')) this.log.push(`${line}\n`);
        const index = this.waiters.findIndex((waiter) => line.startsWith(waiter.prefix));
        if (index >= 0) this.waiters.splice(index, 1)[0]!.resolve(line);
        newline = pending.indexOf('\n');
      }
    });
    const ready = this.nextLine('XVIO-BACKEND-READY', 30_000);
    return new Promise((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`backend exited with ${code}: ${this.log.join('')}`)));
      ready.then(() => resolve(), reject);
    });
  }

  private nextLine(prefix: string, timeoutMs = 10_000): Promise<string> {
    return new Promise((resolve, reject) => {
      const waiter = { prefix, resolve };
      this.waiters.push(waiter);
      setTimeout(() => {
        const index = this.waiters.indexOf(waiter);
        if (index < 0) return;
        this.waiters.splice(index, 1);
        reject(new Error(`backend did not answer ${prefix}: ${this.log.join('')}`));
      }, timeoutMs);
    });
  }

  private command(line: string, answer: string): Promise<string> {
    const reply = this.nextLine(answer);
    this.child?.stdin?.write(`${line}\n`);
    return reply;
  }

  /** `device.snapshotPng(0)` of the backend's device, or undefined while scanout 0 shows nothing. */
  async snapshot(path: string): Promise<Uint8Array | undefined> {
    const line = await this.command(`snapshot ${path}`, 'XVIO-SNAPSHOT');
    if (line.startsWith('XVIO-SNAPSHOT-NONE')) return undefined;
    const png = readFileSync(path);
    rmSync(path, { force: true });
    return png;
  }

  async stats(): Promise<GpuBackendStats> {
    const line = await this.command('stats', 'XVIO-STATS ');
    return JSON.parse(line.slice('XVIO-STATS '.length)) as GpuBackendStats;
  }

  /** Stops the backend (SIGTERM, or SIGKILL as a crash) and waits for it to be gone. */
  kill(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      child.once('exit', () => resolve());
      child.kill(signal);
    });
  }
}

/**
 * QEMU's own picture of a display device: HMP `screendump <file> <device id>` on a monitor
 * socket (`-monitor unix:<path>,server=on,wait=off`). Resolves with the PPM file's bytes.
 */
export async function qemuScreendump(
  monitorPath: string,
  file: string,
  deviceId: string,
): Promise<Uint8Array> {
  rmSync(file, { force: true });
  const socket = connect(monitorPath);
  let output = '';
  socket.on('data', (chunk: Buffer) => {
    output += chunk.toString('utf8');
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('error', reject);
  });
  socket.write(`screendump ${file} ${deviceId}\n`);
  try {
    const deadline = Date.now() + 10_000;
    // QEMU writes the file at once; the size settles when the header and every row are out.
    let previous = -1;
    for (;;) {
      if (Date.now() > deadline) throw new Error(`screendump wrote nothing: ${output}`);
      await sleep(100);
      if (!existsSync(file)) continue;
      const size = readFileSync(file).length;
      if (size > 0 && size === previous) return readFileSync(file);
      previous = size;
    }
  } finally {
    socket.end();
  }
}
