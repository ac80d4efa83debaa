// Builds net-switch.run.ts with tsup, as the packages are published, and runs it. Running the
// sources under tsx instead measures tsx: esbuild's keepNames wraps every closure the memory
// strategies create per request in a defineProperty call (about a tenth of the time per packet).
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'tsup';

const here = dirname(fileURLToPath(import.meta.url));
const outDir = join(here, '.work');
mkdirSync(outDir, { recursive: true });
await build({
  entry: { 'net-switch': join(here, 'net-switch.run.ts') },
  outDir,
  format: ['esm'],
  platform: 'node',
  target: 'node20',
  // Workspace packages export TypeScript sources: bundle them; koffi is native and stays out.
  noExternal: [/^@xvio\//],
  external: ['koffi'],
  dts: false,
  sourcemap: false,
  splitting: false,
  silent: true,
  config: false,
});
process.env.XVIO_NET_BENCH_RESULTS ??= join(here, '..', '..', '..', 'bench', 'results');
// A fresh process measures: importing into this one measured the build too (its heap is
// collected concurrently, and tsx's loader thread runs beside it), which took up to three
// quarters of the CPU time a run counts, at random.
const run = spawnSync(process.execPath, [join(outDir, 'net-switch.js')], { stdio: 'inherit' });
process.exitCode = run.status ?? 1;
