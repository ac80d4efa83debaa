import { type ChildProcess, spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface GuestControl {
  /** Types a line on the guest's serial console. */
  send(line: string): void;
  /** Ends QEMU at once. */
  kill(): void;
  /** QEMU's process id (a `wrapper` such as taskset execs QEMU in its own process). */
  readonly pid: number | undefined;
}

export interface BootOptions {
  kernel: string;
  initrd: string;
  /** QEMU device arguments, e.g. ['-device', 'virtio-rng-pci']. */
  devices: string[];
  /** Values for the guest's /init (`xvio.<key>=<value>` on the command line). */
  args: Record<string, string | number>;
  memoryMiB?: number;
  /** Let the guest reboot instead of QEMU exiting (`-no-reboot` otherwise). */
  allowReboot?: boolean;
  timeoutMs?: number;
  /** The QEMU binary. Default: `XVIO_QEMU` from the environment, else qemu-system-x86_64 on PATH. */
  qemu?: string;
  /** Extra QEMU arguments placed first (e.g. `-L <firmware dir>` for an unpacked QEMU). */
  qemuArgs?: string[];
  /** A command QEMU runs under, e.g. `['taskset', '-c', '1']`. */
  wrapper?: string[];
  /** Every console line as it arrives; the control lets the host react (restart, answer). */
  onLine?(line: string, control: GuestControl): void;
}

export interface GuestRun {
  lines: string[];
  exitCode: number | null;
  timedOut: boolean;
  passes: string[];
  failures: string[];
  /** `XVIO-RESULT` key=value pairs, latest value wins; one map per boot. */
  results: Record<string, string>[];
  /** Host seconds from QEMU start to exit. */
  seconds: number;
}

/**
 * QEMU under TCG (the machine's /dev/kvm cannot run stock kernels) with guest RAM as a
 * shared memfd, which vhost-user backends need to map it. `-M pc` with SeaBIOS and the
 * cloud kernel reaches /init in about 2 s.
 */
export function qemuArguments(options: BootOptions): string[] {
  const memory = options.memoryMiB ?? 256;
  const append = [
    'console=ttyS0',
    'panic=-1',
    'quiet',
    ...Object.entries(options.args).map(([key, value]) => `xvio.${key}=${value}`),
  ].join(' ');
  return [
    ...(options.qemuArgs ?? []),
    '-accel',
    'tcg',
    '-M',
    'pc',
    '-m',
    `${memory}M`,
    '-object',
    `memory-backend-memfd,id=mem,size=${memory}M,share=on`,
    '-numa',
    'node,memdev=mem',
    '-nographic',
    '-nic',
    'none',
    ...(options.allowReboot ? [] : ['-no-reboot']),
    '-kernel',
    options.kernel,
    '-initrd',
    options.initrd,
    '-append',
    append,
    ...options.devices,
  ];
}

/** Boots a guest, collects its console and the XVIO markers, resolves when QEMU exits. */
export function bootGuest(options: BootOptions): Promise<GuestRun> {
  const started = performance.now();
  const qemu = options.qemu ?? process.env.XVIO_QEMU ?? 'qemu-system-x86_64';
  const [command, ...prefix] = [...(options.wrapper ?? []), qemu];
  const child = spawn(command!, [...prefix, ...qemuArguments(options)], { stdio: ['pipe', 'pipe', 'pipe'] });
  const run: GuestRun = {
    lines: [],
    exitCode: null,
    timedOut: false,
    passes: [],
    failures: [],
    results: [],
    seconds: 0,
  };
  const control: GuestControl = {
    send: (line) => child.stdin.write(`${line}\n`),
    kill: () => child.kill('SIGKILL'),
    pid: child.pid,
  };
  let pending = '';
  const onData = (chunk: Buffer) => {
    pending += chunk.toString('utf8');
    let newline = pending.indexOf('\n');
    while (newline >= 0) {
      const line = pending.slice(0, newline).replace(/\r$/, '');
      pending = pending.slice(newline + 1);
      run.lines.push(line);
      const marker = /(XVIO-[A-Z]+)\s?(.*)$/.exec(line);
      if (marker) {
        const [, kind, rest = ''] = marker;
        if (kind === 'XVIO-BOOT') run.results.push({});
        if (kind === 'XVIO-PASS') run.passes.push(rest);
        if (kind === 'XVIO-FAIL') run.failures.push(rest);
        if (kind === 'XVIO-RESULT') {
          const current = run.results.at(-1) ?? {};
          if (run.results.length === 0) run.results.push(current);
          for (const pair of rest.split(/\s+/)) {
            const equals = pair.indexOf('=');
            if (equals > 0) current[pair.slice(0, equals)] = pair.slice(equals + 1);
          }
        }
      }
      options.onLine?.(line, control);
      newline = pending.indexOf('\n');
    }
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      run.timedOut = true;
      child.kill('SIGKILL');
    }, options.timeoutMs ?? 120_000);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      run.exitCode = code;
      run.seconds = (performance.now() - started) / 1000;
      resolve(run);
    });
  });
}

/** Guest-side transfer rate of an `XVIO-RESULT bytes= t0= t1=` line, in MB/s (10^6). */
export function transferRate(result: Record<string, string>): number {
  const bytes = Number(result.bytes);
  const seconds = Number(result.t1) - Number(result.t0);
  return bytes / Math.max(seconds, 0.01) / 1e6;
}

const BACKEND_ENTRY = join(dirname(fileURLToPath(import.meta.url)), 'e2e-backend.ts');

/**
 * xvio's vhost-user rng backend in its own Node process (as the CLI runs it), so that it
 * can be killed and restarted while QEMU keeps running.
 */
export class BackendProcess {
  private child: ChildProcess | undefined;
  readonly log: string[] = [];

  constructor(
    readonly socketPath: string,
    /** Dial a QEMU that listens instead of listening. */
    readonly connect = false,
    /** More arguments for e2e-backend.ts (e.g. `--timing`). */
    readonly extraArgs: readonly string[] = [],
  ) {}

  /** Starts the backend; resolves once its socket listens. */
  start(): Promise<void> {
    const args = [
      '--import',
      'tsx',
      BACKEND_ENTRY,
      this.socketPath,
      ...(this.connect ? ['--connect'] : []),
      ...this.extraArgs,
    ];
    const child = spawn(process.execPath, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: dirname(BACKEND_ENTRY),
    });
    this.child = child;
    child.stderr?.on('data', (chunk: Buffer) => this.log.push(chunk.toString('utf8')));
    return new Promise((resolve, reject) => {
      let out = '';
      const timer = setTimeout(
        () => reject(new Error(`backend did not start: ${this.log.join('')}`)),
        30_000,
      );
      child.stdout?.on('data', (chunk: Buffer) => {
        out += chunk.toString('utf8');
        this.log.push(chunk.toString('utf8'));
        if (out.includes('XVIO-BACKEND-READY')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`backend exited with ${code}: ${this.log.join('')}`));
      });
    });
  }

  /** The backend's process id while it runs. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Kills the backend (SIGKILL: no cleanup, as a crash) and waits for it to be gone. */
  kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      child.once('exit', () => resolve());
      child.kill(signal);
    });
  }
}
