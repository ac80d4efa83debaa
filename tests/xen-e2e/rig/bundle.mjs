// Bundles the dom0 program with the xvio packages it imports into one ESM file; koffi is
// left external because it loads a native module at run time.
import { build } from 'esbuild';

const [outfile] = process.argv.slice(2);
await build({
  entryPoints: [new URL('../src/dom0/dom0-xvio.ts', import.meta.url).pathname],
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  outfile,
  external: ['koffi'],
  banner: { js: "import { createRequire as __xvioRequire } from 'node:module'; const require = __xvioRequire(import.meta.url);" },
  logLevel: 'warning',
});
