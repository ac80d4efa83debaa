import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BootOptions } from './e2e-qemu.js';
import type { PeerTransfer } from './net-peer.js';

const HERE = dirname(fileURLToPath(import.meta.url));

/** Addresses inside the lab namespace (nothing else is ever addressed). */
export const LAB = {
  /** The namespace's end of the TAP: its kernel answers ARP and ICMP. */
  peerIp: '10.77.0.1',
  guestIp: '10.77.0.2',
  prefix: 24,
  /** net-peer.ts: the guest uploads here and gets "<md5> <bytes>" back. */
  sinkPort: 5001,
  /** net-peer.ts: the guest downloads from here. */
  sourcePort: 5002,
} as const;

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const NAME_PREFIX = 'xvio-e2e-';

function hasIp(): boolean {
  return spawnSync('ip', ['-V'], { stdio: 'ignore' }).status === 0;
}

/**
 * `ip` (iproute2) is installed with apt when missing, as the harness does for QEMU; if it
 * stays missing this throws (the net cases fail, never skip). CI installs it through
 * .ci/install-system-deps.sh.
 */
export function ensureIproute2(): void {
  if (hasIp()) return;
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = () =>
    spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'iproute2'], {
      env,
      encoding: 'utf8',
    });
  if (install().status !== 0) {
    spawnSync('apt-get', ['update', '-qq'], { env, stdio: 'ignore' });
    install();
  }
  if (!hasIp()) throw new Error('iproute2 (ip) is missing and apt-get could not install it');
}

/**
 * A network namespace of the test's own with one persistent TAP in it, addressed
 * `LAB.peerIp/24` and up. The guest's NIC backend (xvio's process, or QEMU with `-netdev tap`)
 * runs inside the namespace and attaches to the TAP by name, so every frame the guest sends
 * reaches the namespace's kernel and nothing ever touches the host's interfaces. Needs root
 * (it throws otherwise: the tests fail, they do not skip).
 */
export class NetLab {
  private destroyed = false;

  private constructor(
    readonly namespace: string,
    readonly tap: string,
  ) {}

  static create(): NetLab {
    ensureIproute2();
    NetLab.removeStale();
    const suffix = `${process.pid.toString(36)}-${randomBytes(2).toString('hex')}`;
    const lab = new NetLab(`${NAME_PREFIX}${suffix}`, `xvt${randomBytes(3).toString('hex')}`);
    ip('netns', 'add', lab.namespace);
    try {
      ip('-n', lab.namespace, 'link', 'set', 'dev', 'lo', 'up');
      // Persistent, so that each backend (xvio's, then QEMU's) attaches to the same interface.
      ip('-n', lab.namespace, 'tuntap', 'add', 'dev', lab.tap, 'mode', 'tap');
      ip('-n', lab.namespace, 'addr', 'add', `${LAB.peerIp}/${LAB.prefix}`, 'dev', lab.tap);
      ip('-n', lab.namespace, 'link', 'set', 'dev', lab.tap, 'up');
    } catch (error) {
      lab.destroy();
      throw error;
    }
    return lab;
  }

  /** Namespaces a killed earlier run left behind (its pid is in the name and is gone). */
  private static removeStale(): void {
    let names: string[];
    try {
      names = ip('netns', 'list')
        .split('\n')
        .map((line) => line.split(' ')[0] ?? '');
    } catch {
      return;
    }
    for (const name of names) {
      if (!name.startsWith(NAME_PREFIX)) continue;
      const pid = Number.parseInt(name.slice(NAME_PREFIX.length).split('-')[0] ?? '', 36);
      if (Number.isSafeInteger(pid) && pid > 0 && !alive(pid)) {
        try {
          ip('netns', 'del', name);
        } catch {
          // someone else removed it
        }
      }
    }
  }

  /** `argv` run inside the namespace (`ip netns exec` execs it: the pid is the command's). */
  command(argv: readonly string[]): string[] {
    return ['ip', 'netns', 'exec', this.namespace, ...argv];
  }

  /** `bootGuest` options that start QEMU inside the namespace. */
  qemu(): Pick<BootOptions, 'qemu' | 'qemuArgs'> {
    return {
      qemu: 'ip',
      qemuArgs: ['netns', 'exec', this.namespace, process.env.XVIO_QEMU ?? 'qemu-system-x86_64'],
    };
  }

  /** `ip -s link` counters of the TAP, as the namespace's kernel sees them. */
  tapCounters(): { rxPackets: number; txPackets: number } {
    const json = JSON.parse(ip('-n', this.namespace, '-j', '-s', 'link', 'show', 'dev', this.tap)) as {
      stats64: { rx: { packets: number }; tx: { packets: number } };
    }[];
    const stats = json[0]!.stats64;
    return { rxPackets: stats.rx.packets, txPackets: stats.tx.packets };
  }

  /** Removes the TAP and the namespace. Stop every process inside it first. Idempotent. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    try {
      ip('-n', this.namespace, 'link', 'del', 'dev', this.tap);
    } catch {
      // not created, or gone with its last user
    }
    try {
      ip('netns', 'del', this.namespace);
    } catch {
      // not created
    }
  }
}

/** A Node process inside the lab namespace that prints `ready` on stdout once serving. */
class LabProcess {
  private child: ChildProcess | undefined;
  readonly log: string[] = [];
  readonly lines: string[] = [];
  private listeners: ((line: string) => void)[] = [];

  constructor(
    private readonly lab: NetLab,
    private readonly entry: string,
    private readonly args: readonly string[],
    private readonly ready: string,
  ) {}

  start(): Promise<void> {
    const [command, ...argv] = this.lab.command([
      process.execPath,
      '--import',
      'tsx',
      this.entry,
      ...this.args,
    ]);
    const child = spawn(command!, argv, { stdio: ['ignore', 'pipe', 'pipe'], cwd: HERE });
    this.child = child;
    child.stderr?.on('data', (chunk: Buffer) => this.log.push(chunk.toString('utf8')));
    let pending = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      this.log.push(chunk.toString('utf8'));
      pending += chunk.toString('utf8');
      let newline = pending.indexOf('\n');
      while (newline >= 0) {
        const line = pending.slice(0, newline);
        pending = pending.slice(newline + 1);
        this.lines.push(line);
        for (const listener of this.listeners) listener(line);
        newline = pending.indexOf('\n');
      }
    });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${this.entry} did not start: ${this.log.join('')}`)),
        30_000,
      );
      const onLine = (line: string) => {
        if (!line.includes(this.ready)) return;
        clearTimeout(timer);
        resolve();
      };
      this.listeners.push(onLine);
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`${this.entry} exited with ${code}: ${this.log.join('')}`));
      });
    });
  }

  /** Stops the process (SIGTERM: it closes cleanly) and waits for it to be gone. */
  stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      child.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      child.kill(signal);
    });
  }
}

/** xvio's vhost-user net backend (`e2e-backend.ts --device net`) on the lab's TAP. */
export class NetBackendProcess extends LabProcess {
  constructor(
    lab: NetLab,
    readonly socketPath: string,
    /** Dial a QEMU that listens (`server=on`) instead of listening. */
    readonly connect = false,
  ) {
    super(
      lab,
      join(HERE, 'e2e-backend.ts'),
      [socketPath, '--device', 'net', '--tap', lab.tap, ...(connect ? ['--connect'] : [])],
      'XVIO-BACKEND-READY',
    );
  }

  /** The device's counters, which the backend prints when stopped (SIGTERM). */
  metrics(): Record<string, number> | undefined {
    const match = /backend metrics: (\{.*\})/.exec(this.log.join(''));
    return match ? (JSON.parse(match[1]!) as Record<string, number>) : undefined;
  }
}

/** The guest's TCP peer (`net-peer.ts`) in the lab namespace. */
export class NetPeerProcess extends LabProcess {
  constructor(
    lab: NetLab,
    readonly sourceBytes: number,
  ) {
    super(
      lab,
      join(HERE, 'net-peer.ts'),
      [String(LAB.sinkPort), String(LAB.sourcePort), String(sourceBytes)],
      'XVIO-PEER-READY',
    );
  }

  /** Transfers the peer finished so far, oldest first. */
  transfers(): PeerTransfer[] {
    return this.lines
      .filter((line) => line.startsWith('XVIO-PEER {'))
      .map((line) => JSON.parse(line.slice('XVIO-PEER '.length)) as PeerTransfer);
  }
}

/**
 * QEMU 7.2 under TCG crashes in `vhost_net_start → msix_set_vector_notifiers` when a
 * vhost-user NIC uses MSI-X: the NIC gets legacy interrupts (`vectors=0`). No option ROM
 * (`romfile=`): SeaBIOS has nothing to boot from it. The built-in NIC gets the same device
 * options, so the two differ only in who serves the rings.
 */
const NIC = 'virtio-net-pci,netdev=n0,vectors=0,romfile=';

/**
 * QEMU arguments: the guest's NIC served by xvio over vhost-user. QEMU connects to `socket`,
 * or with `listen` it listens there and waits for the backend to dial (and again after the
 * backend is restarted; the NIC's link is down meanwhile).
 */
export function vhostUserNetDevices(socket: string, listen = false): string[] {
  const chardev = `socket,id=vu,path=${socket}${listen ? ',server=on,wait=on' : ''}`;
  return ['-chardev', chardev, '-netdev', 'vhost-user,id=n0,chardev=vu', '-device', NIC];
}

/** QEMU arguments: QEMU's built-in virtio-net on the lab's TAP, without the vhost-net kernel module. */
export function builtinNetDevices(lab: NetLab): string[] {
  return ['-netdev', `tap,id=n0,ifname=${lab.tap},script=no,downscript=no,vhost=off`, '-device', NIC];
}

/**
 * The guest's `xvio.*` arguments of the net case (see guest-init.sh): upload `bytes`, then
 * (with `download`) fetch the peer's source bytes.
 */
export function netCaseArgs(bytes: number, pings = 3, download = true): Record<string, string | number> {
  return {
    case: 'net',
    ip: `${LAB.guestIp}/${LAB.prefix}`,
    peer: LAB.peerIp,
    port: LAB.sinkPort,
    ...(download ? { dport: LAB.sourcePort } : {}),
    bytes,
    pings,
  };
}
