// In one run: an unmodified Linux guest reads 4 MiB from /dev/hwrng through xvio's
// vhost-user rng backend and through QEMU's built-in virtio-rng-pci, alternately, several
// rounds; reports the median guest-side MB/s of each and their ratio, the machine load of
// every round, and where a request's round trip goes as the backend sees it.
//   pnpm --filter @xvio/e2e bench        (XVIO_BENCH_ROUNDS=9 for more rounds,
//                                          XVIO_BENCH_PINNED_ROUNDS=0 to skip the one-CPU rounds)
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildInitramfs, fetchGuestKernel } from '../src/e2e-guest.js';
import { BackendProcess, bootGuest, type GuestRun, transferRate } from '../src/e2e-qemu.js';
import { ensureSystemPackages } from '../src/e2e-system.js';

const BYTES = 4 * 1024 * 1024;
const REQUEST_BYTES = 64;
const rounds = Number(process.env.XVIO_BENCH_ROUNDS ?? 7);
const pinnedRounds = Number(process.env.XVIO_BENCH_PINNED_ROUNDS ?? 3);
const resultsDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bench', 'results');

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

interface Sample {
  device: 'xvio' | 'builtin';
  layout: 'free' | 'one-cpu';
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
// One CPU for QEMU (both devices) and for xvio's backend: no wake-up ever crosses CPUs, so
// the rate shows the work a request costs, not how fast an idle CPU wakes.
const ONE_CPU = String(cpus().length - 1);

async function measure(device: Sample['device'], layout: Sample['layout'], round: number): Promise<Sample> {
  const load = loadavg()[0]!;
  const before = cpuJiffies();
  const wrapper = layout === 'one-cpu' ? ['taskset', '-c', ONE_CPU] : undefined;
  const common = {
    kernel: kernel.vmlinuz,
    initrd,
    args: { case: 'rng', bytes: BYTES },
    timeoutMs: 300_000,
    ...(wrapper ? { wrapper } : {}),
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
  } else {
    const socket = join(dir, `rng-${layout}-${round}.sock`);
    const backend = new BackendProcess(socket, false, ['--timing']);
    await backend.start();
    let run: GuestRun;
    try {
      if (layout === 'one-cpu')
        execFileSync('taskset', ['-a', '-p', '-c', ONE_CPU, String(backend.pid)], { stdio: 'ignore' });
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

try {
  for (let round = 0; round < rounds; round++) {
    // Alternate which device goes first, so neither always follows the other's boot.
    const order: Sample['device'][] = round % 2 ? ['xvio', 'builtin'] : ['builtin', 'xvio'];
    for (const device of order) samples.push(await measure(device, 'free', round));
  }
  for (let round = 0; round < pinnedRounds; round++) {
    const order: Sample['device'][] = round % 2 ? ['xvio', 'builtin'] : ['builtin', 'xvio'];
    for (const device of order) samples.push(await measure(device, 'one-cpu', round));
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

const of = (device: Sample['device'], layout: Sample['layout']) =>
  samples.filter((s) => s.device === device && s.layout === layout);
const rates = (list: Sample[]) => list.map((s) => s.mbps);
const round2 = (n: number) => Math.round(n * 100) / 100;
const xvioFree = of('xvio', 'free');
const builtinFree = of('builtin', 'free');
const xvioRate = median(rates(xvioFree));
const builtinRate = median(rates(builtinFree));
const ratio = xvioRate / builtinRate;
// Each round's two boots run back to back, so their ratio sees nearly the same machine load;
// the median of those ratios is less at the mercy of load that comes and goes between rounds.
const pairedRatios = xvioFree.flatMap((x) => {
  const b = builtinFree.find((s) => s.round === x.round);
  return b ? [x.mbps / b.mbps] : [];
});
const pairedRatio = median(pairedRatios);
const xvioPinned = of('xvio', 'one-cpu');
const builtinPinned = of('builtin', 'one-cpu');
const pinnedRatio = median(rates(xvioPinned)) / Math.max(1e-9, median(rates(builtinPinned)));
const loads = samples.map((s) => s.load);
const steals = samples.map((s) => s.stealPercent);
const timingOf = (list: Sample[], key: keyof Timing) =>
  median(list.flatMap((s) => (s.timing ? [s.timing[key]] : [])));
const usPerRequest = (mbps: number) => REQUEST_BYTES / mbps; // MB/s = bytes per microsecond
const guest = samples[0]?.guest ?? {};
const machine = `${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, QEMU TCG, guest ${kernel.release}, load ${median(loads).toFixed(1)} (${Math.min(...loads).toFixed(1)}-${Math.max(...loads).toFixed(1)}), steal ${Math.max(...steals).toFixed(1)}% at most`;

const report = {
  machine,
  date: new Date().toISOString(),
  results: [
    {
      name: 'guest dd 4 MiB from /dev/hwrng via xvio vhost-user rng (median)',
      value: round2(xvioRate),
      unit: 'MB/s',
      bound: {
        name: 'QEMU built-in virtio-rng-pci, same guest, same run (median)',
        value: round2(builtinRate),
      },
      samples: rates(xvioFree).map(round2),
    },
    {
      name: 'guest dd 4 MiB from /dev/hwrng via QEMU built-in virtio-rng-pci (median)',
      value: round2(builtinRate),
      unit: 'MB/s',
      samples: rates(builtinFree).map(round2),
    },
    {
      name: 'xvio / built-in',
      value: round2(ratio),
      unit: 'x',
      bound: { name: 'target', value: 1 },
    },
    {
      name: 'xvio / built-in, median of the ratios within each round',
      value: round2(pairedRatio),
      unit: 'x',
      bound: { name: 'target', value: 1 },
      samples: pairedRatios.map(round2),
    },
    ...(pinnedRounds > 0
      ? [
          {
            name: 'one CPU for QEMU and the backend: xvio (median)',
            value: round2(median(rates(xvioPinned))),
            unit: 'MB/s',
            bound: { name: 'built-in on the same CPU (median)', value: round2(median(rates(builtinPinned))) },
            samples: rates(xvioPinned).map(round2),
          },
          {
            name: 'one CPU for QEMU and the backend: built-in (median)',
            value: round2(median(rates(builtinPinned))),
            unit: 'MB/s',
            samples: rates(builtinPinned).map(round2),
          },
          { name: 'one CPU: xvio / built-in', value: round2(pinnedRatio), unit: 'x' },
        ]
      : []),
    {
      name: 'xvio backend: kick to kick (one guest round trip), median',
      value: round2(timingOf(xvioFree, 'cycleMedianUs')),
      unit: 'us',
    },
    {
      name: 'xvio backend: kick handed to the device until the call is written, median',
      value: round2(timingOf(xvioFree, 'serviceMedianUs')),
      unit: 'us',
    },
    {
      name: 'xvio backend: CPU time per kick (user + system)',
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

const row = (s: Sample) =>
  `| ${s.layout === 'free' ? 'free' : 'one CPU'} | ${s.round + 1} | ${s.device === 'xvio' ? 'xvio' : 'built-in'} | ${s.mbps.toFixed(2)} | ${usPerRequest(s.mbps).toFixed(1)} | ${s.load.toFixed(1)} | ${s.stealPercent.toFixed(1)} | ${
    s.timing
      ? `${s.timing.cycleMedianUs.toFixed(1)} (${s.timing.cycleMeanUs.toFixed(1)}) / ${s.timing.serviceMedianUs.toFixed(1)} / ${(s.timing.cpuUserUsPerKick + s.timing.cpuSystemUsPerKick).toFixed(1)}`
      : ''
  } | ${s.vhostUser ? `${s.requests ?? '?'} / ${s.vhostUser.kicks} / ${s.vhostUser.calls}` : ''} |`;
const pinnedSummary =
  pinnedRounds > 0
    ? `| one CPU (\`taskset -c ${ONE_CPU}\` for QEMU and the backend alike) | ${median(rates(xvioPinned)).toFixed(2)} | ${median(rates(builtinPinned)).toFixed(2)} | ${pinnedRatio.toFixed(2)}x |\n`
    : '';
writeFileSync(
  join(resultsDir, 'vhost-user-rng.md'),
  `# vhost-user rng: xvio vs QEMU's built-in virtio-rng-pci

${report.date} on ${machine}. Each round boots the same Debian cloud kernel and busybox
initramfs and reads 4 MiB from \`/dev/hwrng\` with \`dd bs=4096\` (guest-side time from
\`/proc/uptime\`), once through xvio's \`vhost-user-rng-pci\` backend process and once through
QEMU's built-in \`virtio-rng-pci\`, alternating which goes first. "free": the scheduler places
QEMU's threads and the backend on the ${cpus().length} CPUs as it likes (${rounds} rounds); "one CPU": QEMU and the
backend all run on CPU ${ONE_CPU} (${pinnedRounds} rounds).

| layout | xvio MB/s (median) | built-in MB/s (median) | xvio / built-in |
|---|---|---|---|
| free | ${xvioRate.toFixed(2)} | ${builtinRate.toFixed(2)} | **${ratio.toFixed(2)}x** (target >= 1.0x); median of the per-round ratios ${pairedRatio.toFixed(2)}x (${pairedRatios.map((r) => r.toFixed(2)).join(', ')}) |
${pinnedSummary}
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
cycle is the guest and QEMU, and above all how fast a sleeping thread on an idle CPU of this
VM is woken. See tests/e2e/README.md ("Performance") for the breakdown per thread.

Run: \`pnpm --filter @xvio/e2e bench\` (\`XVIO_BENCH_ROUNDS\`, \`XVIO_BENCH_PINNED_ROUNDS\` set the rounds).
`,
);
console.log(
  `xvio ${xvioRate.toFixed(2)} MB/s, virtio-rng-pci ${builtinRate.toFixed(2)} MB/s, ratio ${ratio.toFixed(2)}x; one CPU ${pinnedRatio.toFixed(2)}x`,
);
