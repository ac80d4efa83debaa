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
const rounds = Number(process.env.XVIO_BENCH_ROUNDS ?? 7);
const splitRounds = Number(process.env.XVIO_BENCH_SPLIT_ROUNDS ?? 5);
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
 * xvio: xvio's backend process; builtin: QEMU's virtio-rng-pci; floor: the C floor backend,
 * what the vhost-user process hop costs at the least (see bench/floor/vhost-user-rng-floor.c).
 */
type Device = 'xvio' | 'builtin' | 'floor';

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
  vhostUser?: { kicks: number; calls: number };
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
    const backend = new BackendProcess(socket, false, ['--timing']);
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
    const vhostUser = backendLine<{ kicks: number; calls: number }>(log, 'vhost-user');
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
      ...(vhostUser ? { vhostUser: { kicks: vhostUser.kicks, calls: vhostUser.calls } } : {}),
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

/** The three devices in turn, each round starting with another, so none always follows the same boot. */
const DEVICES: Device[] = ['builtin', 'xvio', 'floor'];
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
  xvio: number;
  builtin: number;
  floor: number;
  /** xvio / built-in, ratio of the medians. */
  ratio: number;
  /** floor / built-in: what any vhost-user backend reaches at most here. */
  floorRatio: number;
  /** xvio / floor: the part of the reachable rate xvio reaches. */
  ofFloor: number;
  /**
   * Each round's boots run back to back, so their ratios see nearly the same machine load;
   * the median of those ratios is less at the mercy of load that comes and goes.
   */
  paired: number[];
  pairedFloor: number[];
  pairedOfFloor: number[];
}

/** Per round, a's rate over b's. */
function pairedRatios(a: Sample[], b: Sample[]): number[] {
  return a.flatMap((x) => {
    const y = b.find((each) => each.round === x.round);
    return y ? [x.mbps / y.mbps] : [];
  });
}

const summaries: LayoutSummary[] = (['free', 'split', 'one-cpu'] as const).flatMap((layout) => {
  const xvio = of('xvio', layout);
  const builtin = of('builtin', layout);
  const floor = of('floor', layout);
  if (xvio.length === 0 || builtin.length === 0 || floor.length === 0) return [];
  const xvioRate = median(rates(xvio));
  const builtinRate = median(rates(builtin));
  const floorRate = median(rates(floor));
  return [
    {
      layout,
      rounds: xvio.length,
      xvio: xvioRate,
      builtin: builtinRate,
      floor: floorRate,
      ratio: xvioRate / builtinRate,
      floorRatio: floorRate / builtinRate,
      ofFloor: xvioRate / floorRate,
      paired: pairedRatios(xvio, builtin),
      pairedFloor: pairedRatios(floor, builtin),
      pairedOfFloor: pairedRatios(xvio, floor),
    },
  ];
});
const free = summaries.find((each) => each.layout === 'free')!;
const xvioFree = of('xvio', 'free');
const loads = samples.map((s) => s.load);
const steals = samples.map((s) => s.stealPercent);
const timingOf = (list: Sample[], key: keyof Timing) =>
  median(list.flatMap((s) => (s.timing ? [s.timing[key]] : [])));
const usPerRequest = (mbps: number) => REQUEST_BYTES / mbps; // MB/s = bytes per microsecond
const guest = samples[0]?.guest ?? {};
const machine = `${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, QEMU TCG, guest ${kernel.release}, load ${median(loads).toFixed(1)} (${Math.min(...loads).toFixed(1)}-${Math.max(...loads).toFixed(1)}), steal ${Math.max(...steals).toFixed(1)}% at most`;
const layoutLabel: Record<Layout, string> = {
  free: 'free',
  split: `split (vCPU on CPU ${VCPU_CPU}; QEMU's other threads and xvio's backend on CPU ${EMULATOR_CPU})`,
  'one-cpu': `one CPU (QEMU and xvio's backend on CPU ${ONE_CPU})`,
};

const report = {
  machine,
  date: new Date().toISOString(),
  results: [
    {
      name: 'guest dd 4 MiB from /dev/hwrng via xvio vhost-user rng (median)',
      value: round2(free.xvio),
      unit: 'MB/s',
      bound: {
        name: 'QEMU built-in virtio-rng-pci, same guest, same run (median)',
        value: round2(free.builtin),
      },
      samples: rates(xvioFree).map(round2),
    },
    {
      name: 'guest dd 4 MiB from /dev/hwrng via QEMU built-in virtio-rng-pci (median)',
      value: round2(free.builtin),
      unit: 'MB/s',
      samples: rates(of('builtin', 'free')).map(round2),
    },
    {
      name: 'guest dd 4 MiB from /dev/hwrng via the C floor vhost-user rng backend (median)',
      value: round2(free.floor),
      unit: 'MB/s',
      samples: rates(of('floor', 'free')).map(round2),
    },
    ...summaries.flatMap((summary) => [
      {
        name: `xvio / built-in, ${layoutLabel[summary.layout]}`,
        value: round2(summary.ratio),
        unit: 'x',
        bound: { name: 'target', value: 1 },
        xvio: round2(summary.xvio),
        builtin: round2(summary.builtin),
      },
      {
        name: `xvio / built-in, ${layoutLabel[summary.layout]}, median of the ratios within each round`,
        value: round2(median(summary.paired)),
        unit: 'x',
        bound: { name: 'target', value: 1 },
        samples: summary.paired.map(round2),
      },
      {
        name: `C floor backend / built-in, ${layoutLabel[summary.layout]} (the most any vhost-user backend reaches here)`,
        value: round2(summary.floorRatio),
        unit: 'x',
        bound: { name: 'target for xvio', value: 1 },
        floor: round2(summary.floor),
        builtin: round2(summary.builtin),
        pairedMedian: round2(median(summary.pairedFloor)),
        samples: summary.pairedFloor.map(round2),
      },
      {
        name: `xvio / C floor backend, ${layoutLabel[summary.layout]}`,
        value: round2(summary.ofFloor),
        unit: 'x',
        bound: { name: 'C floor vhost-user rng backend', value: 1 },
        xvio: round2(summary.xvio),
        floor: round2(summary.floor),
        pairedMedian: round2(median(summary.pairedOfFloor)),
        samples: summary.pairedOfFloor.map(round2),
      },
    ]),
    {
      name: 'xvio backend (free): kick to kick (one guest round trip), median',
      value: round2(timingOf(xvioFree, 'cycleMedianUs')),
      unit: 'us',
    },
    {
      name: 'xvio backend (free): kick handed to the device until the call is written, median',
      value: round2(timingOf(xvioFree, 'serviceMedianUs')),
      unit: 'us',
    },
    {
      name: 'xvio backend (free): CPU time per kick (user + system)',
      value: round2(timingOf(xvioFree, 'cpuUserUsPerKick') + timingOf(xvioFree, 'cpuSystemUsPerKick')),
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

const deviceLabel: Record<Device, string> = { xvio: 'xvio', builtin: 'built-in', floor: 'C floor' };
const row = (s: Sample) =>
  `| ${s.layout} | ${s.round + 1} | ${deviceLabel[s.device]} | ${s.mbps.toFixed(2)} | ${usPerRequest(s.mbps).toFixed(1)} | ${s.load.toFixed(1)} | ${s.stealPercent.toFixed(1)} | ${
    s.timing
      ? `${s.timing.cycleMedianUs.toFixed(1)} (${s.timing.cycleMeanUs.toFixed(1)}) / ${s.timing.serviceMedianUs.toFixed(1)} / ${(s.timing.cpuUserUsPerKick + s.timing.cpuSystemUsPerKick).toFixed(1)}`
      : ''
  } | ${s.vhostUser ? `${s.requests ?? '?'} / ${s.vhostUser.kicks} / ${s.vhostUser.calls}` : ''} |`;
const summaryRows = summaries
  .map(
    (summary) =>
      `| ${layoutLabel[summary.layout]} | ${summary.rounds} | ${summary.xvio.toFixed(2)} | ${summary.floor.toFixed(2)} | ${summary.builtin.toFixed(2)} | **${summary.ratio.toFixed(2)}x** (${median(summary.paired).toFixed(2)}x) | ${summary.floorRatio.toFixed(2)}x (${median(summary.pairedFloor).toFixed(2)}x) | **${summary.ofFloor.toFixed(2)}x** (${median(summary.pairedOfFloor).toFixed(2)}x) |`,
  )
  .join('\n');
writeFileSync(
  join(resultsDir, 'vhost-user-rng.md'),
  `# vhost-user rng: xvio vs QEMU's built-in virtio-rng-pci, and the floor of any vhost-user backend

${report.date} on ${machine}. Each round boots the same Debian cloud kernel and busybox
initramfs and reads 4 MiB from \`/dev/hwrng\` with \`dd bs=4096\` (guest-side time from
\`/proc/uptime\`) three times, back to back, each round starting with another: through xvio's
\`vhost-user-rng-pci\` backend process; through QEMU's built-in \`virtio-rng-pci\`; and through
the C floor (\`tests/e2e/bench/floor/vhost-user-rng-floor.c\`), a vhost-user rng backend with
nothing between kick and call (C, one epoll loop, the ring read in place, no checks, the same
ring features and the same 64 KiB getrandom pool as xvio's OS source), which shows what the
vhost-user process hop costs whoever writes the backend. Three layouts, QEMU placed the same
way for every device: "free", the scheduler places every thread; "split", QEMU pinned as
libvirt's \`vcpupin\`/\`emulatorpin\` pin a guest (the vCPU thread on CPU ${VCPU_CPU}, QEMU's
other threads, among them the main loop that runs the built-in device, on CPU ${EMULATOR_CPU})
and the backend beside the main loop; "one-cpu", QEMU and the backend all on CPU ${ONE_CPU}.
Target: xvio >= 1.0x the built-in device. Ratios are of the medians; in brackets, the median
of the per-round ratios.

| layout | rounds | xvio MB/s | C floor MB/s | built-in MB/s | xvio / built-in | C floor / built-in | xvio / C floor |
|---|---|---|---|---|---|---|---|
${summaryRows}

Every round (µs/request = 64 bytes / rate; load = 1-minute load average at the boot; steal =
CPU time the machine's own hypervisor took, it is a VM itself; backend = as xvio's backend
saw it: median (mean) kick-to-kick interval, median time from the kick reaching the device to the
call eventfd written, CPU time per kick; counts = requests served / kicks / calls):

| layout | round | device | MB/s | µs/request | load | steal % | backend µs: cycle (mean) / service / CPU | counts |
|---|---|---|---|---|---|---|---|---|
${samples.map(row).join('\n')}

Guest: \`rng_quality=${guest.rng_quality ?? '?'}\` (virtio-rng's own), \`rng_core.default_quality=${guest.default_quality ?? '?'}\`,
${guest.hwrng_threads ?? '?'} hwrng kernel thread. That thread reads the device too, but during boot it sleeps
\`max(1 s, uptime / 2)\` between reads once the CRNG is ready (random.c
\`crng_reseed_interval\`), so it takes a handful of the 65536 requests for either device (the
requests column: 65536 for dd plus those).

Linux 6.1's virtio-rng keeps exactly one 64-byte buffer (\`data[SMP_CACHE_BYTES]\`) in
flight, so the rate is one round trip per 64 bytes. Built in, a request costs two thread
hand-offs inside QEMU (vCPU thread → main loop's bottom half → vCPU); through vhost-user it
costs three (vCPU writes the kick eventfd → backend → call eventfd → QEMU's main loop → vCPU).
The backend's own service time is the small part (the "service" column); the rest of the
cycle is the guest, QEMU, and how fast a sleeping thread is woken: on another CPU of this
machine (itself a VM whose idle CPUs halt to its host) that takes tens of microseconds. Which
hand-offs cross CPUs decides the ratio: when the scheduler keeps QEMU's vCPU thread and main
loop on one CPU (one-cpu always, free often), the built-in device's two hand-offs stay on one CPU and the
backend's hop is extra work; when the vCPU has a CPU of its own (split), both devices cross
CPUs twice per request (kick and interrupt) and the backend's hop beside the main loop costs
about what the built-in device's bottom half does. See tests/e2e/README.md ("Performance")
for the breakdown per thread.

Run: \`pnpm --filter @xvio/e2e bench\` (\`XVIO_BENCH_ROUNDS\`, \`XVIO_BENCH_SPLIT_ROUNDS\`,
\`XVIO_BENCH_PINNED_ROUNDS\` set the rounds).
`,
);
console.log(
  summaries
    .map(
      (each) =>
        `${each.layout}: xvio ${each.xvio.toFixed(2)} MB/s, C floor ${each.floor.toFixed(2)} MB/s, built-in ${each.builtin.toFixed(2)} MB/s; xvio/built-in ${each.ratio.toFixed(2)}x, floor/built-in ${each.floorRatio.toFixed(2)}x, xvio/floor ${each.ofFloor.toFixed(2)}x`,
    )
    .join('\n'),
);
