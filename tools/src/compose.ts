import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, copyFile, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Plugin } from 'esbuild';
import { CliError, describeError } from './cli-errors.js';
import { type DeviceName, deviceEntry } from './device-registry.js';

/** postject's sentinel for Node's single-executable blob (Node docs, "Single executable applications"). */
export const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
/** Name of koffi's native module beside a bundle, and of the SEA asset holding it. */
export const KOFFI_ASSET = 'koffi.node';

const TOOLS_DIR = fileURLToPath(new URL('../', import.meta.url));
// From source (tsx, tests) this is backend-main.ts; from the published dist/, backend-main.js.
const BACKEND_MAIN = fileURLToPath(
  new URL(import.meta.url.endsWith('.ts') ? './backend-main.ts' : './backend-main.js', import.meta.url),
);

export interface ComposeOptions {
  readonly devices: readonly DeviceName[];
  readonly outDir: string;
  /** File name of the bundle (`.cjs` added) and of the executable. */
  readonly name: string;
  /** Also build a Node single-executable application. */
  readonly sea: boolean;
  /** Bundle the Xen services (run, xenstored); default true. */
  readonly xen: boolean;
}

export interface ComposeResult {
  readonly bundle: string;
  readonly nativeModule: string;
  readonly executable: string | undefined;
  readonly bytes: number;
}

function identifier(name: string): string {
  return `device_${name.replace(/[^a-z0-9]/g, '_')}`;
}

/** The generated entry: static imports of exactly the chosen packages, nothing else. */
export function composeEntry(options: Pick<ComposeOptions, 'devices' | 'name' | 'xen'>): string {
  const lines = [`import { runBackend } from ${JSON.stringify(BACKEND_MAIN)};`];
  for (const device of options.devices) {
    lines.push(`import * as ${identifier(device)} from ${JSON.stringify(deviceEntry(device).packageName)};`);
  }
  if (options.xen) lines.push(`import * as xen from '@xvio/xen';`);
  lines.push(`import * as vhostUser from '@xvio/transport/vhost-user';`);
  const devices = options.devices.map((device) => `    ${device}: async () => ${identifier(device)},`);
  lines.push(
    'runBackend({',
    `  name: ${JSON.stringify(options.name)},`,
    '  devices: {',
    ...devices,
    '  },',
    `  xen: ${options.xen ? 'async () => xen' : 'null'},`,
    '  vhostUser: async () => vhostUser,',
    '}).then(',
    '  (status) => { process.exitCode = status; },',
    '  (error) => { console.error(error); process.exitCode = 1; },',
    ');',
  );
  return `${lines.join('\n')}\n`;
}

function koffiCommonJsEntry(): string {
  // The `require` condition of koffi's exports: its CommonJS entry.
  return createRequire(join(TOOLS_DIR, 'package.json')).resolve('koffi');
}

/** Where koffi's prebuilt native module for this platform is (the one `koffi` itself loads). */
export function koffiNativePath(): string {
  const fromKoffi = createRequire(koffiCommonJsEntry());
  const platformPackage = `@koromix/koffi-${process.platform}-${process.arch}`;
  const packageDir = dirname(fromKoffi.resolve(`${platformPackage}/package.json`));
  return join(packageDir, `${process.platform}_${process.arch}`, 'koffi.node');
}

/**
 * koffi's platform package loads `koffi.node` with a computed require, which a bundle cannot
 * follow. This stands in for it: in a single executable it extracts the embedded asset once
 * (content-addressed, private directory, checked before use) and loads it; beside a plain
 * bundle it loads the `koffi.node` copied next to it.
 */
const NATIVE_SHIM = `
const fs = require('node:fs');
const path = require('node:path');
const os = require('node:os');
const crypto = require('node:crypto');
function nativePath() {
  let sea;
  try { sea = require('node:sea'); } catch { sea = undefined; }
  if (sea && sea.isSea()) {
    const data = Buffer.from(sea.getRawAsset(${JSON.stringify(KOFFI_ASSET)}));
    const digest = crypto.createHash('sha256').update(data).digest('hex');
    const uid = typeof process.getuid === 'function' ? process.getuid() : 'user';
    const dir = path.join(os.tmpdir(), 'xvio-native-' + uid + '-' + digest.slice(0, 16));
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const stat = fs.lstatSync(dir);
    if (!stat.isDirectory() || (typeof process.getuid === 'function' && stat.uid !== process.getuid())) {
      throw new Error('refusing to load native code from ' + dir + ': not a private directory');
    }
    const file = path.join(dir, ${JSON.stringify(KOFFI_ASSET)});
    let current;
    try { current = fs.readFileSync(file); } catch { current = undefined; }
    if (!current || crypto.createHash('sha256').update(current).digest('hex') !== digest) {
      const temporary = file + '.' + process.pid;
      fs.writeFileSync(temporary, data, { mode: 0o700 });
      fs.renameSync(temporary, file);
    }
    return file;
  }
  return path.join(__dirname, ${JSON.stringify(KOFFI_ASSET)});
}
const native = { exports: {} };
process.dlopen(native, nativePath());
module.exports = native.exports;
`;

/**
 * \`createRequire(import.meta.url)('koffi')\` (how the vhost-user libc layer loads koffi lazily)
 * would look for node_modules beside the bundle; inside it, the bundled koffi answers.
 */
const MODULE_SHIM = `
const real = require('node:module');
const bundled = { koffi: () => require('koffi') };
function createRequire(from) {
  const fallback = real.createRequire(from || __filename);
  const wrapped = (id) => (Object.prototype.hasOwnProperty.call(bundled, id) ? bundled[id]() : fallback(id));
  wrapped.resolve = fallback.resolve;
  wrapped.cache = fallback.cache;
  return wrapped;
}
module.exports = { ...real, createRequire, default: { ...real, createRequire } };
`;

function composePlugin(): Plugin {
  return {
    name: 'xvio-compose',
    setup(build) {
      // One koffi in the bundle, its CommonJS build: the ESM build reaches its platform
      // package through createRequire, which a bundle cannot follow.
      build.onResolve({ filter: /^koffi$/ }, () => ({ path: koffiCommonJsEntry() }));
      build.onResolve({ filter: /^@koromix\/koffi-/ }, (args) => ({
        path: args.path,
        namespace: 'xvio-native',
      }));
      build.onLoad({ filter: /.*/, namespace: 'xvio-native' }, () => ({
        contents: NATIVE_SHIM,
        loader: 'js',
      }));
      build.onResolve({ filter: /^(node:)?module$/ }, (args) =>
        args.namespace === 'xvio-module'
          ? { path: 'node:module', external: true }
          : { path: 'module', namespace: 'xvio-module' },
      );
      build.onLoad({ filter: /.*/, namespace: 'xvio-module' }, () => ({
        contents: MODULE_SHIM,
        loader: 'js',
        resolveDir: TOOLS_DIR,
      }));
    },
  };
}

async function loadEsbuild(): Promise<typeof import('esbuild')> {
  try {
    return await import('esbuild');
  } catch (error) {
    throw new CliError('build-failed', `esbuild is not installed: ${describeError(error)}`, { cause: error });
  }
}

/** Builds one CommonJS bundle with only the chosen devices (and koffi's native module beside it). */
export async function composeBundle(
  options: ComposeOptions,
): Promise<{ bundle: string; nativeModule: string }> {
  const esbuild = await loadEsbuild();
  await mkdir(options.outDir, { recursive: true });
  const bundle = join(options.outDir, `${options.name}.cjs`);
  let result: Awaited<ReturnType<typeof esbuild.build>>;
  try {
    result = await esbuild.build({
      stdin: {
        contents: composeEntry(options),
        resolveDir: TOOLS_DIR,
        sourcefile: 'compose-entry.ts',
        loader: 'ts',
      },
      bundle: true,
      platform: 'node',
      // A single executable runs CommonJS only (Node SEA docs); the plain bundle uses the same.
      format: 'cjs',
      target: 'node20',
      outfile: bundle,
      banner: {
        js: "#!/usr/bin/env node\nvar __xvio_import_meta_url = require('node:url').pathToFileURL(__filename).href;",
      },
      define: { 'import.meta.url': '__xvio_import_meta_url' },
      plugins: [composePlugin()],
      logLevel: 'silent',
      legalComments: 'none',
      metafile: true,
    });
  } catch (error) {
    const errors = (error as { errors?: { text: string }[] }).errors ?? [];
    const unresolved = errors
      .map((entry) => /Could not resolve "(@xvio\/dev-[a-z0-9-]+)"/.exec(entry.text)?.[1])
      .find((name) => name !== undefined);
    if (unresolved) {
      const device = options.devices.find((name) => deviceEntry(name).packageName === unresolved);
      throw new CliError(
        'device-unavailable',
        `device ${device ?? unresolved} is not available in this build: ${unresolved} cannot be bundled`,
      );
    }
    const detail =
      errors.length > 0
        ? errors
            .map((entry) => entry.text)
            .slice(0, 5)
            .join('; ')
        : describeError(error);
    throw new CliError('build-failed', `bundling failed: ${detail}`, { cause: error });
  }
  const included = Object.keys(result.metafile?.inputs ?? {});
  for (const device of options.devices) {
    const folder = `dev-${device}/`;
    if (!included.some((input) => input.includes(folder))) {
      throw new CliError(
        'build-failed',
        `bundling failed: ${deviceEntry(device).packageName} is not in the bundle`,
      );
    }
  }
  await chmod(bundle, 0o755);
  const nativeModule = join(options.outDir, KOFFI_ASSET);
  await copyFile(koffiNativePath(), nativeModule);
  return { bundle, nativeModule };
}

function run(command: string, args: readonly string[], cwd: string): void {
  const result = spawnSync(command, args, { cwd, encoding: 'utf8' });
  if (result.status !== 0) {
    const output = `${result.stderr ?? ''}${result.stdout ?? ''}`.trim().split('\n').slice(-5).join('\n');
    throw new CliError(
      'build-failed',
      `${[command, ...args].join(' ')} failed: ${output || result.error?.message || `status ${result.status}`}`,
    );
  }
}

/**
 * A Node single-executable application around the bundle: the SEA blob (with koffi's native
 * module as an asset) injected into a copy of this node binary with postject.
 */
export async function composeExecutable(
  bundle: string,
  nativeModule: string,
  options: ComposeOptions,
): Promise<string> {
  const work = join(options.outDir, `.${options.name}-sea`);
  await mkdir(work, { recursive: true });
  const blob = join(work, 'sea-prep.blob');
  const config = join(work, 'sea-config.json');
  await writeFile(
    config,
    JSON.stringify({
      main: bundle,
      output: blob,
      disableExperimentalSEAWarning: true,
      useCodeCache: false,
      useSnapshot: false,
      assets: { [KOFFI_ASSET]: nativeModule },
    }),
  );
  run(process.execPath, ['--experimental-sea-config', config], work);
  const executable = join(options.outDir, options.name);
  await rm(executable, { force: true });
  await copyFile(process.execPath, executable);
  await chmod(executable, 0o755);
  const require = createRequire(join(TOOLS_DIR, 'package.json'));
  const postject = join(dirname(require.resolve('postject/package.json')), 'dist', 'cli.js');
  run(process.execPath, [postject, executable, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', SEA_FUSE], work);
  await rm(work, { recursive: true, force: true });
  return executable;
}

export async function compose(options: ComposeOptions): Promise<ComposeResult> {
  const { bundle, nativeModule } = await composeBundle(options);
  const executable = options.sea ? await composeExecutable(bundle, nativeModule, options) : undefined;
  const bytes = (await stat(executable ?? bundle)).size;
  return { bundle, nativeModule, executable, bytes };
}

/** A content digest of the bundle, printed so two builds can be compared. */
export async function bundleDigest(path: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(path))
    .digest('hex')
    .slice(0, 16);
}
