// Scenario 4, backend restart under a stock HVM guest on the PCI transport. The virtio-rng
// function is served by a separate backend process (dom0-pci-backend.ts) with its own ioreq
// server. While the guest reads /dev/hwrng in rounds, dom0 kills that process (SIGKILL: it
// gives nothing back to Xen) and starts a new one with --adopt: it takes over the ioreq
// server Xen kept (the server belongs to dom0, not to the process), rebinds the vCPU event
// channels, answers the ioreq the guest's vCPU is blocked on, restores the function from the
// saved state and resumes the queue at the used ring's index. The guest's reads continue
// without a device reset.
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { readLog, sleep } from './dom0-common.js';

const BACKEND = '/opt/xvio/dom0-pci-backend.mjs';

/** A backend process serving virtio-rng at `pci` for `domid`; its state lives in `stateFile`. */
export class RngBackendProcess {
  private child: ChildProcess | undefined;
  /** What the running process last reported. */
  served = 0;
  resumed = 0;
  status = 0;
  serverId: number | undefined;
  readonly errors: string[] = [];
  private exited: Promise<void> = Promise.resolve();

  constructor(
    private readonly domid: number,
    private readonly pci: string,
    private readonly stateFile: string,
  ) {}

  /** Starts the process (`adopt`: take over the previous one's server) and waits until it serves. */
  async start(adopt: boolean): Promise<{ serverId: number; adopted: boolean; detail: string }> {
    const args = [BACKEND, '--domid', String(this.domid), '--pci', this.pci, '--state', this.stateFile];
    if (adopt) args.push('--adopt');
    const child = spawn('node', args, { cwd: '/opt/xvio', stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.served = 0;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-2000);
    });
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the backend did not become ready in 60 s')), 60_000);
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`the backend exited (${code ?? signal}) before serving: ${stderr.trim()}`));
      });
      createInterface({ input: child.stdout! }).on('line', (line) => {
        const ready = /^XVIO-BACKEND ready server=(\d+) adopted=(\w+)(.*)$/.exec(line);
        const served = /^XVIO-BACKEND served (\d+) answered (\d+) resumed (\d+) status (\d+)/.exec(line);
        if (ready) {
          clearTimeout(timer);
          this.serverId = Number(ready[1]);
          resolve({ serverId: this.serverId, adopted: ready[2] === 'true', detail: (ready[3] ?? '').trim() });
        } else if (served) {
          this.served = Number(served[1]);
          this.resumed = Number(served[3]);
          this.status = Number(served[4]);
        } else if (line.startsWith('XVIO-BACKEND error')) {
          if (this.errors.length < 8) this.errors.push(line.slice('XVIO-BACKEND error '.length));
          console.log(`XVIO-NOTE pci-restart backend ${line.slice('XVIO-BACKEND '.length)}`);
        }
      });
    });
  }

  /** SIGKILL: the process dies without unbinding, unmapping or destroying anything itself. */
  async kill(): Promise<void> {
    this.child?.kill('SIGKILL');
    await this.exited;
  }

  /** SIGTERM: the process releases the function and destroys its ioreq server. */
  async stop(): Promise<void> {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGTERM');
    await Promise.race([this.exited, sleep(10_000)]);
    if (this.child.exitCode === null && this.child.signalCode === null) await this.kill();
  }
}

/** Guest rounds of /dev/hwrng reads seen so far (the guest prints `DOMU-RNG-ROUND <n> <bytes>`). */
export function guestRounds(serial: string): number {
  const rounds = [...readLog(serial).matchAll(/DOMU-RNG-ROUND (\d+)/g)];
  return rounds.length === 0 ? 0 : Number(rounds[rounds.length - 1]?.[1]);
}

export interface RestartOutcome {
  killedAtRound: number;
  /** Seconds from SIGKILL to the new process reporting ready. */
  restartSeconds: number;
  /** Seconds from SIGKILL to the first round the guest completed afterwards. */
  recoverySeconds: number;
  adoptedServer: number;
  firstServer: number;
  resumedIoreqs: number;
  /** Device status the new process reported once the guest read again (before any shutdown). */
  statusAfter: number;
  /** Bytes the new process served by then. */
  servedAfter: number;
}

/**
 * Waits for the guest to be reading (round `killAt`), kills the backend, leaves the guest
 * without one for `deadMs`, starts a new process that adopts, and waits for the guest's next
 * round. `alive` says whether the guest still runs.
 */
export async function restartUnderGuest(
  backend: RngBackendProcess,
  serial: string,
  alive: () => boolean,
  step: (what: string) => void,
  killAt = 4,
  deadMs = 2000,
): Promise<RestartOutcome> {
  const deadline = Date.now() + 500_000;
  while (guestRounds(serial) < killAt) {
    if (!alive() || Date.now() > deadline)
      throw new Error(`the guest never reached rng round ${killAt} (${guestRounds(serial)})`);
    await sleep(200);
  }
  const firstServer = backend.serverId ?? -1;
  const killedAtRound = guestRounds(serial);
  const killed = performance.now();
  await backend.kill();
  step(`backend killed (SIGKILL) at guest round ${killedAtRound}, ${backend.served} bytes served`);
  await sleep(deadMs);
  const stalled = guestRounds(serial);
  step(`no backend for ${deadMs} ms: the guest went from round ${killedAtRound} to ${stalled}`);
  const started = await backend.start(true);
  const restartSeconds = (performance.now() - killed) / 1000;
  step(
    `new backend adopted ioreq server ${started.serverId} (adopted=${started.adopted}, ${started.detail})`,
  );
  if (!started.adopted || started.serverId !== firstServer)
    throw new Error(`the new backend did not adopt server ${firstServer}: ${JSON.stringify(started)}`);
  // The guest reads a round in well under a second when served: 120 s without one is a hang.
  const recoveryDeadline = Date.now() + 120_000;
  while (guestRounds(serial) <= stalled) {
    if (!alive() || Date.now() > recoveryDeadline)
      throw new Error(
        `the guest read nothing after the restart (round ${guestRounds(serial)}; new backend: ${backend.served} bytes served, status ${backend.status}, ${backend.resumed} waiting ioreqs answered, errors ${JSON.stringify(backend.errors)})`,
      );
    await sleep(100);
  }
  const recoverySeconds = (performance.now() - killed) / 1000;
  // One more report from the new process, for its counters.
  await sleep(1200);
  return {
    killedAtRound,
    restartSeconds,
    recoverySeconds,
    adoptedServer: started.serverId,
    firstServer,
    resumedIoreqs: backend.resumed,
    statusAfter: backend.status,
    servedAfter: backend.served,
  };
}
