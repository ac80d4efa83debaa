// Benchmarks of what the CLI itself adds: how fast the demo's guests are served on the
// simulator and in process, and what composing costs (build time, size, start-up) against
// a bare `node` start. Writes bench/results/cli-bench.{json,md} at the repository root.
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compose } from '../src/compose.js';
import { runForTest } from '../src/testing/run-cli.js';

interface Result {
  name: string;
  value: number;
  unit: string;
  bound?: { name: string; value: number };
}

const root = fileURLToPath(new URL('../../', import.meta.url));
const results: Result[] = [];

/** memcpy of 4 KiB blocks over 64 MiB, MB/s: the bound for moving guest bytes at all. */
function memcpyRate(): number {
  const source = new Uint8Array(64 * 1024 * 1024).fill(7);
  const target = new Uint8Array(4096);
  let best = 0;
  for (let round = 0; round < 3; round++) {
    const start = performance.now();
    for (let offset = 0; offset < source.length; offset += 4096)
      target.set(source.subarray(offset, offset + 4096));
    best = Math.max(best, source.length / 1e6 / ((performance.now() - start) / 1000));
  }
  return Math.round(best);
}

function parseRate(text: string): number {
  const match = /^([0-9.]+) (B|KiB|MiB|GiB)\/s$/.exec(text);
  if (!match) return 0;
  const scale = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 }[match[2] as 'B'];
  return Number(((Number(match[1]) * scale) / 1e6).toFixed(2));
}

async function demo(guests: 'sim' | 'in-process', seconds: number, memcpy: number): Promise<void> {
  const result = await runForTest([
    '--log-level',
    'silent',
    'demo',
    '--seconds',
    String(seconds),
    '--no-live',
    '--guests',
    guests,
  ]);
  if (result.status !== 0) throw new Error(`demo failed: ${result.stderr}${result.stdout}`);
  const lines = result.stdout.split('\n');
  const header = lines.findIndex((line) => line.startsWith('guest   device'));
  for (const line of lines.slice(header + 1)) {
    const row = line.split(/\s{2,}/);
    if (row.length < 10) break;
    results.push({
      name: `demo ${guests} ${row[1]} (${row[8]?.replace(/ \(\d+\)$/, '')}) guest bytes in+out`,
      value: parseRate(row[5]!),
      unit: 'MB/s',
      bound: { name: 'memcpy 4KiB', value: memcpy },
    });
  }
}

function startupMs(command: string, args: readonly string[]): number {
  let best = Number.POSITIVE_INFINITY;
  for (let round = 0; round < 5; round++) {
    const start = performance.now();
    const run = spawnSync(command, args, { encoding: 'utf8' });
    if (run.status !== 0) throw new Error(`${command} failed: ${run.stderr}`);
    best = Math.min(best, performance.now() - start);
  }
  return Math.round(best);
}

async function composeCosts(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'xvio-bench-'));
  try {
    const bare = startupMs(process.execPath, ['-e', '0']);
    const started = performance.now();
    const built = await compose({
      devices: ['console', 'rng', 'net'],
      outDir: dir,
      name: 'backend',
      sea: true,
      xen: true,
    });
    const buildSeconds = (performance.now() - started) / 1000;
    results.push({
      name: 'compose console,rng,net with --sea: build time',
      value: Number(buildSeconds.toFixed(2)),
      unit: 's',
    });
    results.push({
      name: 'compose console,rng,net: bundle size',
      value: Number(((await stat(built.bundle)).size / 1e6).toFixed(2)),
      unit: 'MB',
    });
    results.push({
      name: 'compose console,rng,net: executable size',
      value: Number((built.bytes / 1e6).toFixed(1)),
      unit: 'MB',
    });
    results.push({
      name: 'bundle start-up (--version)',
      value: startupMs(process.execPath, [built.bundle, '--version']),
      unit: 'ms',
      bound: { name: 'node -e 0', value: bare },
    });
    results.push({
      name: 'single executable start-up (--version)',
      value: startupMs(built.executable!, ['--version']),
      unit: 'ms',
      bound: { name: 'node -e 0', value: bare },
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const memcpy = memcpyRate();
await demo('sim', 5, memcpy);
await demo('in-process', 3, memcpy);
await composeCosts();

const machine = `${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} cores, ${Math.round(totalmem() / 1024 ** 3)} GiB, node ${process.version}`;
const report = { machine, date: new Date().toISOString(), results };
await writeFile(join(root, 'bench/results/cli-bench.json'), `${JSON.stringify(report, null, 2)}\n`);
const rows = results.map(
  (result) =>
    `| ${result.name} | ${result.value} ${result.unit} | ${result.bound ? `${result.bound.name}: ${result.bound.value}` : ''} |`,
);
await writeFile(
  join(root, 'bench/results/cli-bench.md'),
  [
    '# @xvio/cli benchmarks',
    '',
    `${machine}, ${report.date}. Run: \`pnpm --filter @xvio/cli bench\`.`,
    '',
    "Demo rows: bytes the guests' drivers moved per second (in + out) during `xvio demo`, each",
    'device on its transport and memory strategy; `sim` goes through the Xen simulator',
    '(ioreq round trips for every PCI register access, event channels, grant operations),',
    '`in-process` through a DeviceController with split rings in test memory. The workloads',
    'are small requests (console lines, 64 B-4 KiB entropy, 64-1464 B frames): these are',
    'per-request costs, not bulk bandwidth. Compose rows: the cost of `xvio compose --sea`.',
    '',
    '| measurement | value | bound |',
    '|---|---|---|',
    ...rows,
    '',
  ].join('\n'),
);
console.log(rows.join('\n'));
