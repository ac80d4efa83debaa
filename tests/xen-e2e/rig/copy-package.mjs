// Copies an installed package, and the packages it depends on, out of the pnpm store into
// a plain node_modules folder (links resolved), for a machine with no package manager.
import { cpSync, existsSync, readFileSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';

const [name, target] = process.argv.slice(2);
if (!name || !target) throw new Error('usage: copy-package.mjs NAME TARGET_NODE_MODULES');

/** Finds `node_modules/<name>` from `from` upwards, as Node's resolver would. */
function locate(packageName, from) {
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', packageName);
    if (existsSync(join(candidate, 'package.json'))) return realpathSync(candidate);
    if (dirname(dir) === dir) return undefined;
  }
}

const seen = new Set();
function copy(packageName, from, optional) {
  if (seen.has(packageName)) return;
  const directory = locate(packageName, from);
  if (!directory) {
    if (optional) return; // an optional dependency for another platform
    throw new Error(`copy-package: ${packageName} is not installed (looked from ${from})`);
  }
  seen.add(packageName);
  cpSync(directory, join(target, packageName), { recursive: true, dereference: true });
  const manifest = JSON.parse(readFileSync(join(directory, 'package.json'), 'utf8'));
  for (const dependency of Object.keys(manifest.dependencies ?? {})) copy(dependency, directory, false);
  for (const dependency of Object.keys(manifest.optionalDependencies ?? {}))
    copy(dependency, directory, true);
}
copy(name, new URL('../../../packages/xen', import.meta.url).pathname, false);
console.log(`copy-package: ${[...seen].join(', ')}`);
