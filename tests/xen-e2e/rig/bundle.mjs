// Bundles the dom0 program (and the PVH guest's frontend program) with the xvio packages
// they import into one ESM file each; koffi is left external because it loads a native
// module at run time.
import { build } from 'esbuild';

const [outfile, entry = 'dom0/dom0-xvio.ts'] = process.argv.slice(2);
await build({
  entryPoints: [new URL(`../src/${entry}`, import.meta.url).pathname],
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  outfile,
  external: ['koffi'],
  banner: {
    js: "import { createRequire as __xvioRequire } from 'node:module'; const require = __xvioRequire(import.meta.url);",
  },
  logLevel: 'warning',
});
