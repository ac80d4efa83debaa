#!/usr/bin/env node
// Proves that every package works on its own from its packed tarball: `pnpm pack` each
// package (which builds dist/ and rewrites workspace: ranges), then for each one install its
// tarball -- plus the tarballs of the xvio packages it depends on, as a user would get them
// from the registry -- with plain npm into an empty project, and import every export.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const dirs = [...readdirSync(join(root, 'packages')).map((d) => join('packages', d)), 'tools'];
const packages = new Map();
for (const dir of dirs) {
  const manifest = JSON.parse(readFileSync(join(root, dir, 'package.json'), 'utf8'));
  if (manifest.private) continue;
  packages.set(manifest.name, { dir, manifest });
}
const only = process.argv.slice(2);
const work = mkdtempSync(join(tmpdir(), 'xvio-pack-'));
const tarballs = new Map();
for (const [name, { dir }] of packages) {
  const out = execFileSync('pnpm', ['pack', '--pack-destination', work], {
    cwd: join(root, dir),
    encoding: 'utf8',
  });
  tarballs.set(name, out.trim().split('\n').pop());
}
const closure = (name, seen = new Set()) => {
  if (seen.has(name)) return seen;
  seen.add(name);
  for (const dep of Object.keys(packages.get(name).manifest.dependencies ?? {})) {
    if (packages.has(dep)) closure(dep, seen);
  }
  return seen;
};
let failed = 0;
let checked = 0;
for (const [name, { manifest }] of packages) {
  if (only.length > 0 && !only.includes(name)) continue;
  checked++;
  const project = join(work, `use-${name.replace('/', '-')}`);
  mkdirSync(project);
  writeFileSync(
    join(project, 'package.json'),
    JSON.stringify({ name: 'consumer', private: true, type: 'module' }),
  );
  const files = [...closure(name)].map((n) => tarballs.get(n));
  const subpaths = Object.keys(manifest.publishConfig?.exports ?? { '.': null });
  const imports = subpaths.map((p) => (p === '.' ? name : `${name}/${p.slice(2)}`));
  const script = imports
    .map(
      (spec) =>
        `const m${imports.indexOf(spec)} = await import('${spec}'); if (Object.keys(m${imports.indexOf(spec)}).length === 0) throw new Error('${spec} exports nothing');`,
    )
    .join('\n');
  // Peer dependencies (vitest, for the conformance suite in a testing subpath) are what a
  // user's test setup brings: the main entry must work without them, subpaths with them.
  const peers = Object.entries(manifest.peerDependencies ?? {}).map(([peer, range]) => `${peer}@${range}`);
  try {
    execFileSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', ...files], {
      cwd: project,
      stdio: 'pipe',
    });
    writeFileSync(
      join(project, 'main.mjs'),
      `const m = await import('${name}'); if (Object.keys(m).length === 0) throw new Error('${name} exports nothing');\n`,
    );
    execFileSync('node', ['main.mjs'], { cwd: project, stdio: 'pipe' });
    if (peers.length > 0)
      execFileSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', ...peers], {
        cwd: project,
        stdio: 'pipe',
      });
    writeFileSync(join(project, 'check.mjs'), `${script}\nconsole.log('ok');\n`);
    execFileSync('node', ['check.mjs'], { cwd: project, stdio: 'pipe' });
    console.log(
      `pack-check: ${name}: ${imports.join(', ')} import from a clean npm install${peers.length ? ` (subpaths with peers ${peers.join(', ')})` : ''}`,
    );
  } catch (error) {
    failed++;
    console.error(`pack-check: ${name} FAILED\n${error.stderr?.toString() ?? error.message}`);
  }
}
rmSync(work, { recursive: true, force: true });
console.log(`pack-check: ${checked - failed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
