// In one run: an unmodified Linux guest reads 4 MiB from /dev/hwrng through xvio's
// vhost-user rng backend, through QEMU's built-in virtio-rng-pci, and through the floor of any
// vhost-user rng backend (bench/floor/vhost-user-rng-floor.c: C, one epoll loop, nothing
// between kick and call), in turn, several rounds; reports the median guest-side MB/s of each,
// their ratios, the machine load of every round, and where a request's round trip goes as
// xvio's backend sees it.
//   pnpm --filter @xvio/e2e bench        (XVIO_BENCH_ROUNDS=9 for more rounds,
//                                          XVIO_BENCH_SPLIT_ROUNDS / XVIO_BENCH_PINNED_ROUNDS for the
//                                          pinned layouts, 0 skips them)
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildInitramfs, fetchGuestKernel } from '../src/e2e-guest.js';
import {
  BackendProcess,
  bootGuest,
  type GuestControl,
  type GuestRun,
  transferRate,
} from '../src/e2e-qemu.js';
import { ensureSystemPackages } from '../src/e2e-system.js';

const BYTES = 4 * 1024 * 1024;
const REQUEST_BYTES = 64;
const rounds = Number(process.env.XVIO_BENCH_ROUNDS ?? 5);
const splitRounds = Number(process.env.XVIO_BENCH_SPLIT_ROUNDS ?? 4);
const pinnedRounds = Number(process.env.XVIO_BENCH_PINNED_ROUNDS ?? 3);
const resultsDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bench', 'results');
const FLOOR_SOURCE = join(dirname(fileURLToPath(import.meta.url)), 'floor', 'vhost-user-rng-floor.c');

/**
 * Where the threads run. free: wherever the scheduler puts them. split: QEMU pinned as
 * libvirt's vcpupin/emulatorpin pin a guest, the same for both devices: the vCPU thread on
 * one CPU, every other QEMU thread (main loop, where the built-in device runs) on the other,
 * and xvio's backend (where its device runs) beside the main loop. one-cpu: QEMU and the
 * backend all on one CPU, so no wake-up crosses CPUs.
 */
type Layout = 'free' | 'split' | 'one-cpu';

interface Timing {
  kicks: number;
  serviceMedianUs: number;
  serviceP90Us: number;
  cycleMedianUs: number;
  cycleP90Us: number;
  cycleMeanUs: number;
  cpuUserUsPerKick: number;
  cpuSystemUsPerKick: number;
}

/**
 * xvio: xvio's backend process as it runs by default (waits for kicks); xvio-poll: the same
 * with adaptive polling (`--poll-us POLL_US`); builtin: QEMU's virtio-rng-pci; floor: the C
 * floor backend, what the vhost-user process hop costs an event-driven backend at the least
 * (see bench/floor/vhost-user-rng-floor.c).
 */
type Device = 'xvio' | 'xvio-poll' | 'builtin' | 'floor';

/** The poll window of the 'xvio-poll' runs (`e2e-backend.ts --poll-us`, the CLI's `--poll-us`). */
const POLL_US = Number(process.env.XVIO_BENCH_POLL_US ?? 100);

interface Sample {
  device: Device;
  layout: Layout;
  round: number;
  mbps: number;
  /** 1-minute load average when the boot started. */
  load: number;
  /** Steal time of the machine during the boot, in % of its CPU time (it is itself a guest). */
  stealPercent: number;
  guest: Record<string, string>;
  timing?: Timing;
  vhostUser?: { kicks: number; calls: number; polled?: number };
  requests?: number;
}

function median(values: number[]): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

function rateOf(run: GuestRun, label: string): number {
  const result = run.results.at(-1);
  if (run.passes[0] !== 'rng' || !result || Number(result.bytes) !== BYTES) {
    throw new Error(`${label}: the guest did not read ${BYTES} bytes:\n${run.lines.slice(-20).join('\n')}`);
  }
  return transferRate(result);
}

/** The machine's total and steal jiffies (`cpu` line of /proc/stat). */
function cpuJiffies(): { total: number; steal: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  return { total: fields.slice(0, 8).reduce((a, b) => a + b, 0), steal: fields[7] ?? 0 };
}

/** The JSON a `backend <what>: {...}` line of the backend's log carries. */
function backendLine<T>(log: string, what: string): T | undefined {
  const match = new RegExp(`backend ${what}: (\\{.*\\})`).exec(log);
  return match ? (JSON.parse(match[1]!) as T) : undefined;
}

ensureSystemPackages();
const kernel = fetchGuestKernel();
const initrd = buildInitramfs(kernel);
const dir = mkdtempSync(join(tmpdir(), 'xvio-bench-'));
const samples: Sample[] = [];
const floorBinary = join(dir, 'vhost-user-rng-floor');
execFileSync('cc', ['-O2', '-Wall', '-o', floorBinary, FLOOR_SOURCE], { stdio: 'inherit' });

/** The C floor backend, listening on `socket`; resolves once it listens. */
async function startFloor(
  socket: string,
  wrapper?: string[],
): Promise<{ child: ChildProcess; log: string[] }> {
  const command = wrapper ? [...wrapper, floorBinary, socket] : [floorBinary, socket];
  const child = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  const log: string[] = [];
  child.stderr?.on('data', (chunk: Buffer) => log.push(chunk.toString('utf8')));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`floor backend did not start: ${log.join('')}`)), 10_000);
    child.stdout?.on('data', (chunk: Buffer) => {
      log.push(chunk.toString('utf8'));
      if (log.join('').includes('FLOOR-READY')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`floor backend exited with ${code}: ${log.join('')}`));
    });
  });
  return { child, log };
}

async function stopFloor(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  await new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}
// One CPU for QEMU (both devices) and for xvio's backend: no wake-up ever crosses CPUs, so
// the rate shows the work a request costs, not how fast an idle CPU wakes.
const ONE_CPU = String(cpus().length - 1);
const VCPU_CPU = '0';
const EMULATOR_CPU = String(cpus().length - 1);

/** Moves QEMU's vCPU threads (named "CPU n/TCG" with `-name ...,debug-threads=on`) to VCPU_CPU. */
function pinVcpuThreads(pid: number): void {
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    const comm = readFileSync(`/proc/${pid}/task/${task}/comm`, 'utf8');
    if (comm.startsWith('CPU ')) execFileSync('taskset', ['-p', '-c', VCPU_CPU, task], { stdio: 'ignore' });
  }
}

async function measure(device: Device, layout: Sample['layout'], round: number): Promise<Sample> {
  const load = loadavg()[0]!;
  const before = cpuJiffies();
  const backendCpu = layout === 'one-cpu' ? ONE_CPU : layout === 'split' ? EMULATOR_CPU : undefined;
  const wrapper = backendCpu === undefined ? undefined : ['taskset', '-c', backendCpu];
  // split: QEMU starts on the emulator CPU; its vCPU thread moves once the guest runs /init
  // (before the transfer starts).
  let pinned = false;
  const common = {
    kernel: kernel.vmlinuz,
    initrd,
    args: { case: 'rng', bytes: BYTES },
    timeoutMs: 300_000,
    ...(wrapper ? { wrapper } : {}),
    ...(layout === 'split'
      ? {
          qemuArgs: ['-name', 'rng-bench,debug-threads=on'],
          onLine(line: string, control: GuestControl) {
            if (pinned || !line.includes('XVIO-BOOT') || control.pid === undefined) return;
            pinned = true;
            pinVcpuThreads(control.pid);
          },
        }
      : {}),
  };
  let sample: Sample;
  if (device === 'builtin') {
    const run = await bootGuest({ ...common, devices: ['-device', 'virtio-rng-pci'] });
    sample = {
      device,
      layout,
      round,
      mbps: rateOf(run, 'virtio-rng-pci'),
      load,
      stealPercent: 0,
      guest: run.results.at(-1)!,
    };
  } else if (device === 'floor') {
    const socket = join(dir, `floor-${layout}-${round}.sock`);
    const floor = await startFloor(socket, wrapper);
    let run: GuestRun;
    try {
      run = await bootGuest({
        ...common,
        devices: ['-chardev', `socket,id=vu,path=${socket}`, '-device', 'vhost-user-rng-pci,chardev=vu'],
      });
    } finally {
      await stopFloor(floor.child);
    }
    const counts = /floor: (\{.*\})/.exec(floor.log.join(''));
    const parsed = counts
      ? (JSON.parse(counts[1]!) as { requests: number; kicks: number; calls: number })
      : undefined;
    sample = {
      device,
      layout,
      round,
      mbps: rateOf(run, 'C floor vhost-user rng'),
      load,
      stealPercent: 0,
      guest: run.results.at(-1)!,
      ...(parsed
        ? { vhostUser: { kicks: parsed.kicks, calls: parsed.calls }, requests: parsed.requests }
        : {}),
    };
  } else {
    const socket = join(dir, `rng-${layout}-${round}.sock`);
    const backend = new BackendProcess(socket, false, [
      '--timing',
      ...(device === 'xvio-poll' ? ['--poll-us', String(POLL_US)] : []),
    ]);
    await backend.start();
    let run: GuestRun;
    try {
      if (backendCpu !== undefined) {
        execFileSync('taskset', ['-a', '-p', '-c', backendCpu, String(backend.pid)], { stdio: 'ignore' });
      }
      run = await bootGuest({
        ...common,
        devices: ['-chardev', `socket,id=vu,path=${socket}`, '-device', 'vhost-user-rng-pci,chardev=vu'],
      });
    } finally {
      await backend.kill('SIGTERM');
    }
    const log = backend.log.join('');
    const vhostUser = backendLine<{ kicks: number; calls: number; polled: number }>(log, 'vhost-user');
    const requests = backendLine<{ requests: number }>(log, 'rng')?.requests;
    const timing = backendLine<Timing>(log, 'timing');
    sample = {
      device,
      layout,
      round,
      mbps: rateOf(run, 'xvio vhost-user rng'),
      load,
      stealPercent: 0,
      guest: run.results.at(-1)!,
      ...(timing ? { timing } : {}),
      ...(vhostUser
        ? { vhostUser: { kicks: vhostUser.kicks, calls: vhostUser.calls, polled: vhostUser.polled } }
        : {}),
      ...(requests !== undefined ? { requests } : {}),
    };
  }
  const after = cpuJiffies();
  sample.stealPercent = (100 * (after.steal - before.steal)) / Math.max(1, after.total - before.total);
  console.log(
    `${layout} round ${round + 1}: ${device} ${sample.mbps.toFixed(2)} MB/s (load ${load.toFixed(1)}, steal ${sample.stealPercent.toFixed(1)}%)`,
  );
  return sample;
}

/** The devices in turn, each round starting with another, so none always follows the same boot. */
const DEVICES: Device[] = ['builtin', 'xvio', 'xvio-poll', 'floor'];
const orderOf = (round: number): Device[] => DEVICES.map((_, i) => DEVICES[(i + round) % DEVICES.length]!);

try {
  for (const [layout, count] of [
    ['free', rounds],
    ['split', splitRounds],
    ['one-cpu', pinnedRounds],
  ] as const) {
    for (let round = 0; round < count; round++) {
      for (const device of orderOf(round)) samples.push(await measure(device, layout, round));
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

const of = (device: Device, layout: Sample['layout']) =>
  samples.filter((s) => s.device === device && s.layout === layout);
const rates = (list: Sample[]) => list.map((s) => s.mbps);
const round2 = (n: number) => Math.round(n * 100) / 100;

interface LayoutSummary {
  layout: Layout;
  rounds: number;
  /** Median MB/s of each device. */
  rate: Record<Device, number>;
  /** Ratios of the medians; `paired`: the same ratio within each round (boots back to back). */
  ratio: { xvio: number; poll: number; floor: number; xvioOfFloor: number };
  paired: { xvio: number[]; poll: number[]; floor: number[]; xvioOfFloor: number[] };
}

/** Per round, a's rate over b's. */
function pairedRatios(a: Sample[], b: Sample[]): number[] {
  return a.flatMap((x) => {
    const y = b.find((each) => each.round === x.round);
    return y ? [x.mbps / y.mbps] : [];
  });
}

const summaries: LayoutSummary[] = (['free', 'split', 'one-cpu'] as const).flatMap((layout) => {
  const list = Object.fromEntries(DEVICES.map((device) => [device, of(device, layout)])) as Record<
    Device,
    Sample[]
  >;
  if (DEVICES.some((device) => list[device].length === 0)) return [];
  const rate = Object.fromEntries(DEVICES.map((device) => [device, median(rates(list[device]))])) as Record<
    Device,
    number
  >;
  return [
    {
      layout,
      rounds: list.xvio.length,
      rate,
      ratio: {
        xvio: rate.xvio / rate.builtin,
        poll: rate['xvio-poll'] / rate.builtin,
        floor: rate.floor / rate.builtin,
        xvioOfFloor: rate.xvio / rate.floor,
      },
      paired: {
        xvio: pairedRatios(list.xvio, list.builtin),
        poll: pairedRatios(list['xvio-poll'], list.builtin),
        floor: pairedRatios(list.floor, list.builtin),
        xvioOfFloor: pairedRatios(list.xvio, list.floor),
      },
    },
  ];
});
const free = summaries.find((each) => each.layout === 'free')!;
const loads = samples.map((s) => s.load);
const steals = samples.map((s) => s.stealPercent);
const timingOf = (list: Sample[], key: keyof Timing) =>
  median(list.flatMap((s) => (s.timing ? [s.timing[key]] : [])));
/** The backend's CPU time per request (user + system), µs: CPU per serviced notify × notifies / requests. */
const cpuPerRequest = (s: Sample) =>
  s.timing && s.requests
    ? ((s.timing.cpuUserUsPerKick + s.timing.cpuSystemUsPerKick) * s.timing.kicks) / s.requests
    : undefined;
const medianCpu = (list: Sample[]) => median(list.flatMap((s) => cpuPerRequest(s) ?? []));
const usPerRequest = (mbps: number) => REQUEST_BYTES / mbps; // MB/s = bytes per microsecond
const guest = samples[0]?.guest ?? {};
const machine = `${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, QEMU TCG, guest ${kernel.release}, load ${median(loads).toFixed(1)} (${Math.min(...loads).toFixed(1)}-${Math.max(...loads).toFixed(1)}), steal ${Math.max(...steals).toFixed(1)}% at most`;
const layoutLabel: Record<Layout, string> = {
  free: 'free',
  split: `split (vCPU on CPU ${VCPU_CPU}; QEMU's other threads and the backend on CPU ${EMULATOR_CPU})`,
  'one-cpu': `one CPU (QEMU and the backend on CPU ${ONE_CPU})`,
};
const deviceName: Record<Device, string> = {
  xvio: "xvio's vhost-user rng (default: waits for kicks)",
  'xvio-poll': `xvio's vhost-user rng with --poll-us ${POLL_US}`,
  builtin: "QEMU's built-in virtio-rng-pci",
  floor: 'the C floor vhost-user rng backend (event-driven, no checks)',
};

const report = {
  machine,
  date: new Date().toISOString(),
  results: [
    ...(['xvio', 'xvio-poll', 'floor'] as const).map((device) => ({
      name: `guest dd 4 MiB from /dev/hwrng via ${deviceName[device]}, free layout (median)`,
      value: round2(free.rate[device]),
      unit: 'MB/s',
      bound: {
        name: "QEMU's built-in virtio-rng-pci, same guest, same run (median)",
        value: round2(free.rate.builtin),
      },
      samples: rates(of(device, 'free')).map(round2),
    })),
    {
      name: "guest dd 4 MiB from /dev/hwrng via QEMU's built-in virtio-rng-pci, free layout (median)",
      value: round2(free.rate.builtin),
      unit: 'MB/s',
      samples: rates(of('builtin', 'free')).map(round2),
    },
    ...summaries.flatMap((summary) => [
      {
        name: `xvio / built-in, ${layoutLabel[summary.layout]}`,
        value: round2(summary.ratio.xvio),
        unit: 'x',
        bound: { name: 'target', value: 1 },
        pairedMedian: round2(median(summary.paired.xvio)),
        samples: summary.paired.xvio.map(round2),
      },
      {
        name: `xvio --poll-us ${POLL_US} / built-in, ${layoutLabel[summary.layout]}`,
        value: round2(summary.ratio.poll),
        unit: 'x',
        bound: { name: 'target', value: 1 },
        pairedMedian: round2(median(summary.paired.poll)),
        samples: summary.paired.poll.map(round2),
      },
      {
        name: `C floor backend / built-in, ${layoutLabel[summary.layout]} (the most an event-driven vhost-user backend reaches here)`,
        value: round2(summary.ratio.floor),
        unit: 'x',
        bound: { name: 'target for xvio', value: 1 },
        pairedMedian: round2(median(summary.paired.floor)),
        samples: summary.paired.floor.map(round2),
      },
      {
        name: `xvio / C floor backend, ${layoutLabel[summary.layout]}`,
        value: round2(summary.ratio.xvioOfFloor),
        unit: 'x',
        bound: { name: 'C floor vhost-user rng backend', value: 1 },
        pairedMedian: round2(median(summary.paired.xvioOfFloor)),
        samples: summary.paired.xvioOfFloor.map(round2),
      },
      {
        name: `xvio backend CPU time per request (user + system), ${layoutLabel[summary.layout]}: default / --poll-us ${POLL_US}`,
        value: round2(medianCpu(of('xvio', summary.layout))),
        unit: 'us',
        poll: round2(medianCpu(of('xvio-poll', summary.layout))),
      },
    ]),
    {
      name: 'xvio backend (free, default): kick to kick (one guest round trip), median',
      value: round2(timingOf(of('xvio', 'free'), 'cycleMedianUs')),
      unit: 'us',
    },
    {
      name: 'xvio backend (free, default): kick handed to the device until the call is written, median',
      value: round2(timingOf(of('xvio', 'free'), 'serviceMedianUs')),
      unit: 'us',
    },
  ],
  rounds: samples.map((s) => ({
    device: s.device,
    layout: s.layout,
    round: s.round + 1,
    mbps: round2(s.mbps),
    load: round2(s.load),
    stealPercent: round2(s.stealPercent),
    ...(s.timing ? { timing: s.timing } : {}),
    ...(s.vhostUser ? { vhostUser: s.vhostUser } : {}),
    ...(s.requests !== undefined ? { requests: s.requests } : {}),
  })),
};
mkdirSync(resultsDir, { recursive: true });
writeFileSync(join(resultsDir, 'vhost-user-rng.json'), `${JSON.stringify(report, null, 2)}\n`);

const deviceLabel: Record<Device, string> = {
  xvio: 'xvio',
  'xvio-poll': `xvio --poll-us ${POLL_US}`,
  builtin: 'built-in',
  floor: 'C floor',
};
const row = (s: Sample) => {
  const cpu = cpuPerRequest(s);
  return `| ${s.layout} | ${s.round + 1} | ${deviceLabel[s.device]} | ${s.mbps.toFixed(2)} | ${usPerRequest(s.mbps).toFixed(1)} | ${s.load.toFixed(1)} | ${s.stealPercent.toFixed(1)} | ${
    s.timing
      ? `${s.timing.cycleMedianUs.toFixed(1)} (${s.timing.cycleMeanUs.toFixed(1)}) / ${s.timing.serviceMedianUs.toFixed(1)} / ${cpu === undefined ? '?' : cpu.toFixed(1)}`
      : ''
  } | ${s.vhostUser ? `${s.requests ?? '?'} / ${s.vhostUser.kicks} / ${s.vhostUser.calls}${s.vhostUser.polled ? ` / ${s.vhostUser.polled}` : ''}` : ''} |`;
};
const x = (ratio: number, paired: number[]) => `${ratio.toFixed(2)}x (${median(paired).toFixed(2)}x)`;
const summaryRows = summaries
  .map(
    (summary) =>
      `| ${layoutLabel[summary.layout]} | ${summary.rounds} | ${summary.rate.xvio.toFixed(2)} | ${summary.rate['xvio-poll'].toFixed(2)} | ${summary.rate.floor.toFixed(2)} | ${summary.rate.builtin.toFixed(2)} | **${x(summary.ratio.xvio, summary.paired.xvio)}** | **${x(summary.ratio.poll, summary.paired.poll)}** | ${x(summary.ratio.floor, summary.paired.floor)} | ${x(summary.ratio.xvioOfFloor, summary.paired.xvioOfFloor)} | ${medianCpu(of('xvio', summary.layout)).toFixed(1)} / ${medianCpu(of('xvio-poll', summary.layout)).toFixed(1)} |`,
  )
  .join('\n');
writeFileSync(
  join(resultsDir, 'vhost-user-rng.md'),
  `# vhost-user rng: xvio vs QEMU's built-in virtio-rng-pci

${report.date} on ${machine}.

Each round boots the same Debian cloud kernel and busybox initramfs four times, back to back
(each round starting with another), and reads 4 MiB from \`/dev/hwrng\` with \`dd bs=4096\`
(guest-side time from \`/proc/uptime\`) through:

- **xvio**: xvio's backend process (\`vhost-user-rng-pci\`), as it runs by default: it sleeps
  until the guest's kick;
- **xvio --poll-us ${POLL_US}**: the same with adaptive polling (\`xvio vhost-user rng --poll-us
  ${POLL_US}\`, off by default): after a request the backend keeps looking at the ring for up to
  ${POLL_US} µs, renewed by each request it finds, with the guest's kicks suppressed, yielding
  the CPU between looks (as QEMU's iothreads do with \`poll-max-ns\`);
- **C floor**: \`tests/e2e/bench/floor/vhost-user-rng-floor.c\`, an event-driven vhost-user
  rng backend with nothing between kick and call (C, one epoll loop, the ring read in place,
  no checks, the same ring features and 64 KiB getrandom pool as xvio): the least the
  vhost-user process hop costs any backend that waits for kicks;
- **built-in**: QEMU's own \`virtio-rng-pci\` (default \`rng-builtin\` backend).

Three layouts, QEMU placed the same way for every device: "free", the scheduler places every
thread; "split", QEMU pinned as libvirt's \`vcpupin\`/\`emulatorpin\` pin a guest (the vCPU
thread on CPU ${VCPU_CPU}, QEMU's other threads, among them the main loop that runs the built-in
device, on CPU ${EMULATOR_CPU}) and the backend beside the main loop; "one-cpu", QEMU and the
backend all on CPU ${ONE_CPU}. Target: xvio >= 1.0x the built-in device. Ratios are of the
medians; in brackets, the median of the per-round ratios. CPU = xvio's backend CPU time per
request (user + system, µs), default / with polling.

| layout | rounds | xvio MB/s | xvio --poll-us ${POLL_US} MB/s | C floor MB/s | built-in MB/s | xvio / built-in | xvio --poll-us / built-in | C floor / built-in | xvio / C floor | CPU µs/request |
|---|---|---|---|---|---|---|---|---|---|---|
${summaryRows}

Linux 6.1's virtio-rng keeps exactly one 64-byte buffer (\`data[SMP_CACHE_BYTES]\`) in
flight, so the rate is one round trip per 64 bytes. Built in, a request costs two thread
hand-offs inside QEMU (vCPU thread → main loop's bottom half → vCPU). Through vhost-user under
TCG it costs three: the vCPU writes the kick eventfd → the backend process wakes, serves and
writes the call eventfd → QEMU's main loop (TCG has no irqfd) raises the interrupt → vCPU.
The C floor has nothing to do between kick and call, so the "C floor / built-in" column is
what the extra hop alone leaves of the built-in device's rate, for any backend that waits for
kicks; "xvio / C floor" is how much of that xvio's default reaches. On this machine (itself a
VM whose idle CPUs halt to its host) waking a sleeping thread on another CPU costs tens of
microseconds. Polling removes the backend's wake-up and the guest's kick: it pays when the
backend does not share the vCPU's CPU ("free", "split"); on the vCPU's own CPU ("one-cpu")
its looks compete with the guest for that CPU, and neither polling nor waiting for kicks
reaches the built-in device there. See
tests/e2e/README.md ("Performance") for the breakdown per thread.

Every round (µs/request = 64 bytes / rate; load = 1-minute load average at the boot; steal =
CPU time the machine's own hypervisor took; backend = as xvio's backend saw it: median
(mean) interval between services, median time from the device being notified to the call
eventfd written, CPU time per request; counts = requests served / kicks / calls / requests
found by polling):

| layout | round | device | MB/s | µs/request | load | steal % | backend µs: cycle (mean) / service / CPU | counts |
|---|---|---|---|---|---|---|---|---|
${samples.map(row).join('\n')}

Guest: \`rng_quality=${guest.rng_quality ?? '?'}\` (virtio-rng's own), \`rng_core.default_quality=${guest.default_quality ?? '?'}\`,
${guest.hwrng_threads ?? '?'} hwrng kernel thread. That thread reads the device too, but during boot it sleeps
\`max(1 s, uptime / 2)\` between reads once the CRNG is ready (random.c
\`crng_reseed_interval\`), so it takes a handful of the 65536 requests for either device (the
requests column: 65536 for dd plus those).

Run: \`pnpm --filter @xvio/e2e bench\` (\`XVIO_BENCH_ROUNDS\`, \`XVIO_BENCH_SPLIT_ROUNDS\`,
\`XVIO_BENCH_PINNED_ROUNDS\` set the rounds of each layout, \`XVIO_BENCH_POLL_US\` the poll window).
`,
);
console.log(
  summaries
    .map(
      (each) =>
        `${each.layout}: xvio ${each.rate.xvio.toFixed(2)}, xvio --poll-us ${each.rate['xvio-poll'].toFixed(2)}, C floor ${each.rate.floor.toFixed(2)}, built-in ${each.rate.builtin.toFixed(2)} MB/s; xvio/built-in ${each.ratio.xvio.toFixed(2)}x, polling ${each.ratio.poll.toFixed(2)}x, floor ${each.ratio.floor.toFixed(2)}x, xvio/floor ${each.ratio.xvioOfFloor.toFixed(2)}x`,
    )
    .join('\n'),
);
