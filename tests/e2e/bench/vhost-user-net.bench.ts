// In one run: an unmodified Linux guest on a TAP inside a network namespace this benchmark
// creates pings the namespace's kernel and moves 16 MiB each way over TCP to a peer there,
// once with its NIC served by xvio's vhost-user net backend and once by QEMU's built-in
// virtio-net (`-netdev tap,vhost=off`), alternately, several rounds; reports the medians and
// the ratios. Needs root (namespace and TAP).
//   pnpm --filter @xvio/e2e bench        (XVIO_BENCH_ROUNDS=5 for more rounds)
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildInitramfs, fetchGuestKernel } from '../src/e2e-guest.js';
import { bootGuest, type GuestRun } from '../src/e2e-qemu.js';
import { ensureSystemPackages } from '../src/e2e-system.js';
import {
  builtinNetDevices,
  NetBackendProcess,
  NetLab,
  NetPeerProcess,
  netCaseArgs,
  vhostUserNetDevices,
} from '../src/net-lab.js';
import type { PeerTransfer } from '../src/net-peer.js';

const BYTES = 16 * 1024 * 1024;
const PINGS = 20;
const rounds = Number(process.env.XVIO_BENCH_ROUNDS ?? 3);
const resultsDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bench', 'results');

interface Sample {
  /** Average of the pings of one boot. */
  rttMs: number;
  /** Shortest of them: what the path costs when nothing else is scheduled in between. */
  rttMinMs: number;
  /** Peer-side MB/s (10^6) of the guest's upload: first to last byte. */
  uploadMBps: number;
  /** Peer-side MB/s of the guest's download: connection to close. */
  downloadMBps: number;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** Checks the run as the test does (both sums, both sizes) and takes its numbers. */
function sampleOf(run: GuestRun, transfers: PeerTransfer[], label: string): Sample {
  const result = run.results.at(-1);
  const sink = transfers.find((transfer) => transfer.kind === 'sink');
  const source = transfers.find((transfer) => transfer.kind === 'source');
  const ok =
    run.passes[0] === 'net' &&
    result !== undefined &&
    sink !== undefined &&
    source !== undefined &&
    sink.md5 === result.md5 &&
    sink.bytes === BYTES &&
    source.md5 === result.down_md5 &&
    result.down_bytes === String(BYTES) &&
    Number(result.rtt_ms) > 0;
  if (!ok || !result || !sink || !source) {
    throw new Error(
      `${label}: the transfer did not check out:\n${run.lines.slice(-20).join('\n')}\n${JSON.stringify(transfers)}`,
    );
  }
  return {
    rttMs: Number(result.rtt_ms),
    rttMinMs: Number(result.rtt_min_avg_max?.split('/')[0]),
    uploadMBps: sink.bytes / sink.seconds / 1e6,
    downloadMBps: source.bytes / source.seconds / 1e6,
  };
}

ensureSystemPackages();
const kernel = fetchGuestKernel();
const initrd = buildInitramfs(kernel);
const dir = mkdtempSync(join(tmpdir(), 'xvio-bench-net-'));
const load = loadavg()[0]!;
const xvio: Sample[] = [];
const builtin: Sample[] = [];
const lab = NetLab.create();
const peer = new NetPeerProcess(lab, BYTES);

async function measure(devices: string[], label: string): Promise<Sample> {
  const before = peer.transfers().length;
  const run = await bootGuest({
    kernel: kernel.vmlinuz,
    initrd,
    devices,
    args: netCaseArgs(BYTES, PINGS),
    timeoutMs: 300_000,
    ...lab.qemu(),
  });
  return sampleOf(run, peer.transfers().slice(before), label);
}

try {
  await peer.start();
  for (let round = 0; round < rounds; round++) {
    builtin.push(await measure(builtinNetDevices(lab), 'QEMU virtio-net'));
    const backend = new NetBackendProcess(lab, join(dir, `net-${round}.sock`));
    await backend.start();
    try {
      xvio.push(await measure(vhostUserNetDevices(backend.socketPath), 'xvio vhost-user net'));
    } finally {
      await backend.stop();
    }
    const [b, x] = [builtin.at(-1)!, xvio.at(-1)!];
    console.log(
      `round ${round + 1}: QEMU rtt ${b.rttMs.toFixed(3)} ms, up ${b.uploadMBps.toFixed(1)} MB/s, down ${b.downloadMBps.toFixed(1)} MB/s; ` +
        `xvio rtt ${x.rttMs.toFixed(3)} ms, up ${x.uploadMBps.toFixed(1)} MB/s, down ${x.downloadMBps.toFixed(1)} MB/s`,
    );
  }
} finally {
  await peer.stop();
  lab.destroy();
  rmSync(dir, { recursive: true, force: true });
}

const round2 = (n: number) => Math.round(n * 100) / 100;
const round3 = (n: number) => Math.round(n * 1000) / 1000;
const pick = (samples: Sample[], key: keyof Sample) => samples.map((sample) => sample[key]);
const medians = (samples: Sample[]) => ({
  rttMs: median(pick(samples, 'rttMs')),
  rttMinMs: median(pick(samples, 'rttMinMs')),
  uploadMBps: median(pick(samples, 'uploadMBps')),
  downloadMBps: median(pick(samples, 'downloadMBps')),
});
const x = medians(xvio);
const b = medians(builtin);
const ratio = {
  upload: x.uploadMBps / b.uploadMBps,
  download: x.downloadMBps / b.downloadMBps,
  // Above 1: xvio's round trip is shorter.
  rtt: b.rttMs / x.rttMs,
};
const machine = `${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, QEMU TCG, guest ${kernel.release}, load ${load.toFixed(1)}`;
const BUILTIN = 'QEMU built-in virtio-net (-netdev tap,vhost=off), same guest, same TAP, same run (median)';
const report = {
  machine,
  date: new Date().toISOString(),
  results: [
    {
      name: 'guest TCP upload 16 MiB to a namespace peer via xvio vhost-user net (median)',
      value: round2(x.uploadMBps),
      unit: 'MB/s',
      bound: { name: BUILTIN, value: round2(b.uploadMBps) },
      samples: pick(xvio, 'uploadMBps').map(round2),
    },
    {
      name: 'guest TCP download 16 MiB from a namespace peer via xvio vhost-user net (median)',
      value: round2(x.downloadMBps),
      unit: 'MB/s',
      bound: { name: BUILTIN, value: round2(b.downloadMBps) },
      samples: pick(xvio, 'downloadMBps').map(round2),
    },
    {
      name: `guest ping RTT to the namespace kernel via xvio vhost-user net (median of ${PINGS}-ping averages)`,
      value: round3(x.rttMs),
      unit: 'ms',
      bound: { name: BUILTIN, value: round3(b.rttMs) },
      samples: pick(xvio, 'rttMs').map(round3),
    },
    {
      name: `guest ping RTT to the namespace kernel via xvio vhost-user net (median of ${PINGS}-ping minimums)`,
      value: round3(x.rttMinMs),
      unit: 'ms',
      bound: { name: BUILTIN, value: round3(b.rttMinMs) },
      samples: pick(xvio, 'rttMinMs').map(round3),
    },
    {
      name: 'guest TCP upload via QEMU built-in virtio-net (median)',
      value: round2(b.uploadMBps),
      unit: 'MB/s',
      samples: pick(builtin, 'uploadMBps').map(round2),
    },
    {
      name: 'guest TCP download via QEMU built-in virtio-net (median)',
      value: round2(b.downloadMBps),
      unit: 'MB/s',
      samples: pick(builtin, 'downloadMBps').map(round2),
    },
    {
      name: 'guest ping RTT via QEMU built-in virtio-net (median)',
      value: round3(b.rttMs),
      unit: 'ms',
      samples: pick(builtin, 'rttMs').map(round3),
    },
    {
      name: 'upload xvio / built-in',
      value: round2(ratio.upload),
      unit: 'x',
      bound: { name: 'parity', value: 1 },
    },
    {
      name: 'download xvio / built-in',
      value: round2(ratio.download),
      unit: 'x',
      bound: { name: 'parity', value: 1 },
    },
    {
      name: 'ping RTT built-in / xvio (above 1: xvio answers faster)',
      value: round2(ratio.rtt),
      unit: 'x',
      bound: { name: 'parity', value: 1 },
    },
  ],
};
const list = (samples: Sample[], key: keyof Sample, digits: number) =>
  pick(samples, key)
    .map((value) => value.toFixed(digits))
    .join(', ');
mkdirSync(resultsDir, { recursive: true });
writeFileSync(join(resultsDir, 'vhost-user-net.json'), `${JSON.stringify(report, null, 2)}\n`);
writeFileSync(
  join(resultsDir, 'vhost-user-net.md'),
  `# vhost-user net: xvio vs QEMU's built-in virtio-net

${report.date} on ${machine}. ${rounds} rounds, alternating; each round boots the same Debian
cloud kernel and busybox initramfs twice with \`virtio-net-pci,vectors=0,romfile=\` on the same
persistent TAP inside a network namespace the benchmark creates: once with \`-netdev
vhost-user\` and xvio's backend process (\`@xvio/dev-net\` on the TAP), once with QEMU's own
\`-netdev tap,vhost=off\`. Each boot pings the namespace's kernel ${PINGS} times (busybox's
average) and moves 16 MiB each way over TCP with busybox \`nc\` to a Node peer in the
namespace; both md5 sums are checked. MB/s (10^6) are timed by the peer (host clock).

| | xvio vhost-user net | QEMU virtio-net (built in) | xvio / built-in |
|---|---|---|---|
| TCP upload, guest to peer (MB/s) | ${x.uploadMBps.toFixed(1)} (${list(xvio, 'uploadMBps', 1)}) | ${b.uploadMBps.toFixed(1)} (${list(builtin, 'uploadMBps', 1)}) | **${ratio.upload.toFixed(2)}x** |
| TCP download, peer to guest (MB/s) | ${x.downloadMBps.toFixed(1)} (${list(xvio, 'downloadMBps', 1)}) | ${b.downloadMBps.toFixed(1)} (${list(builtin, 'downloadMBps', 1)}) | **${ratio.download.toFixed(2)}x** |
| ping RTT, average (ms, lower is better) | ${x.rttMs.toFixed(3)} (${list(xvio, 'rttMs', 3)}) | ${b.rttMs.toFixed(3)} (${list(builtin, 'rttMs', 3)}) | **${ratio.rtt.toFixed(2)}x** (built-in / xvio) |
| ping RTT, minimum (ms) | ${x.rttMinMs.toFixed(3)} (${list(xvio, 'rttMinMs', 3)}) | ${b.rttMinMs.toFixed(3)} (${list(builtin, 'rttMinMs', 3)}) | ${(b.rttMinMs / x.rttMinMs).toFixed(2)}x |

Medians, with every round's value in brackets. Under TCG the guest's own CPU (the emulated
TCP stack, copies and checksums) is the larger cost for both; the devices differ in who
serves the rings: QEMU's main loop (built in) or a separate Node process woken through
eventfds (xvio), which is one more process to schedule on a loaded 2-core machine (the load
above).

Run: \`pnpm --filter @xvio/e2e bench\` as root (\`XVIO_BENCH_ROUNDS\` sets the rounds).
`,
);
console.log(
  `upload xvio ${x.uploadMBps.toFixed(1)} / QEMU ${b.uploadMBps.toFixed(1)} MB/s (${ratio.upload.toFixed(2)}x), ` +
    `download xvio ${x.downloadMBps.toFixed(1)} / QEMU ${b.downloadMBps.toFixed(1)} MB/s (${ratio.download.toFixed(2)}x), ` +
    `rtt xvio ${x.rttMs.toFixed(3)} / QEMU ${b.rttMs.toFixed(3)} ms`,
);
