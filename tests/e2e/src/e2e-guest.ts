import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Builds are cached here (git-ignored). */
export const WORK_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '.work');
const INIT_SCRIPT = join(dirname(fileURLToPath(import.meta.url)), 'guest-init.sh');

/**
 * Guest modules: all virtio drivers are modules in Debian's kernels. Their dependencies
 * (virtio_pci_modern_dev, failover, ...) are resolved with modinfo.
 */
export const GUEST_MODULES = [
  'virtio',
  'virtio_ring',
  'virtio_pci',
  'virtio_mmio',
  'virtio-rng',
  'virtio_console',
  'virtio_net',
] as const;

export interface GuestKernel {
  /** Debian package it came from. */
  package: string;
  /** Kernel release (`uname -r`). */
  release: string;
  vmlinuz: string;
  /** Root of the unpacked package (lib/modules/<release> below it). */
  root: string;
}

function run(command: string, args: string[], cwd?: string): string {
  return execFileSync(command, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * Debian kernel flavours: `cloud-amd64` (no DRM, boots in ~2 s under TCG) and `amd64`
 * (has virtio_gpu, drm and fbdev emulation as modules, ~4 s).
 */
export type KernelFlavour = 'cloud-amd64' | 'amd64';

const kernelPackagePattern = (flavour: KernelFlavour) =>
  new RegExp(`^linux-image-6\\.1\\.0-\\d+-${flavour}$`);

function kernelPackages(flavour: KernelFlavour): string[] {
  const pattern = kernelPackagePattern(flavour);
  const names = run('apt-cache', ['pkgnames', 'linux-image-6.1.0-'])
    .split('\n')
    .filter((name) => pattern.test(name));
  const abi = (name: string) => Number(/6\.1\.0-(\d+)-/.exec(name)?.[1] ?? 0);
  return names.sort((a, b) => abi(a) - abi(b));
}

function unpacked(name: string): GuestKernel | undefined {
  const root = join(WORK_DIR, 'kernel', name);
  const boot = join(root, 'boot');
  if (!existsSync(boot)) return undefined;
  const vmlinuz = readdirSync(boot).find((file) => file.startsWith('vmlinuz-'));
  if (!vmlinuz) return undefined;
  const release = vmlinuz.slice('vmlinuz-'.length);
  if (!existsSync(join(root, 'lib', 'modules', release, 'modules.dep'))) return undefined;
  return { package: name, release, vmlinuz: join(boot, vmlinuz), root };
}

/**
 * A Debian kernel of `flavour` (default the cloud kernel): the newest
 * `linux-image-6.1.0-*-<flavour>` apt offers, fetched with `apt-get download` and
 * unpacked with `dpkg -x` (nothing is installed). Cached in WORK_DIR.
 */
export function fetchGuestKernel(flavour: KernelFlavour = 'cloud-amd64'): GuestKernel {
  let names = kernelPackages(flavour);
  if (names.length === 0) {
    run('apt-get', ['update', '-qq']);
    names = kernelPackages(flavour);
  }
  const name = names.at(-1);
  if (name === undefined) {
    // Offline: any kernel unpacked before still does.
    const previous = existsSync(join(WORK_DIR, 'kernel')) ? readdirSync(join(WORK_DIR, 'kernel')).sort() : [];
    for (const candidate of previous.reverse().filter((name) => kernelPackagePattern(flavour).test(name))) {
      const kernel = unpacked(candidate);
      if (kernel) return kernel;
    }
    throw new Error(`apt offers no linux-image-6.1.0-*-${flavour} package`);
  }
  const ready = unpacked(name);
  if (ready) return ready;
  const download = join(WORK_DIR, 'download');
  mkdirSync(download, { recursive: true });
  run('apt-get', ['download', '-qq', name], download);
  const deb = readdirSync(download).find((file) => file.startsWith(`${name}_`) && file.endsWith('.deb'));
  if (!deb) throw new Error(`apt-get download ${name} produced no .deb`);
  const staging = join(WORK_DIR, 'kernel', `${name}.partial`);
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true });
  run('dpkg', ['-x', join(download, deb), staging]);
  const release = readdirSync(join(staging, 'lib', 'modules'))[0];
  if (!release) throw new Error(`${deb} holds no modules`);
  // The package's postinst would run depmod; nothing is installed, so run it here.
  run('depmod', ['-b', staging, release]);
  const root = join(WORK_DIR, 'kernel', name);
  rmSync(root, { recursive: true, force: true });
  renameSync(staging, root);
  rmSync(join(download, deb), { force: true });
  const kernel = unpacked(name);
  if (!kernel) throw new Error(`unpacking ${deb} did not give a kernel`);
  return kernel;
}

function moduleInfo(kernel: GuestKernel, module: string, field: 'filename' | 'depends'): string {
  return run('modinfo', ['-b', kernel.root, '-k', kernel.release, '-F', field, module]).trim();
}

/** The module files (relative to lib/modules/<release>) for `modules` and their dependencies. */
export function resolveModules(kernel: GuestKernel, modules: readonly string[]): string[] {
  const seen = new Set<string>();
  const files: string[] = [];
  const base = join(kernel.root, 'lib', 'modules', kernel.release);
  const visit = (module: string) => {
    if (seen.has(module)) return;
    seen.add(module);
    const file = moduleInfo(kernel, module, 'filename');
    // Built into the kernel: nothing to copy.
    if (!file.startsWith('/')) return;
    for (const dependency of moduleInfo(kernel, module, 'depends').split(',').filter(Boolean))
      visit(dependency);
    files.push(relative(base, file));
  };
  for (const module of modules) visit(module);
  return files;
}

/**
 * A busybox-static initramfs with the virtio modules and the test /init, cached by the
 * hash of everything that goes in. Returns its path.
 */
export function buildInitramfs(kernel: GuestKernel, modules: readonly string[] = GUEST_MODULES): string {
  const init = readFileSync(INIT_SCRIPT);
  const busybox = '/bin/busybox';
  const files = resolveModules(kernel, modules);
  const key = createHash('sha256')
    .update(init)
    .update(kernel.release)
    .update(files.join(','))
    .update(String(statSync(busybox).size))
    .digest('hex')
    .slice(0, 16);
  const out = join(WORK_DIR, `initramfs-${kernel.release}-${key}.cpio.gz`);
  if (existsSync(out)) return out;
  const root = mkdtempSync(join(tmpdir(), 'xvio-initramfs-'));
  try {
    for (const dir of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'proc', 'sys', 'dev', 'tmp', 'etc', 'root']) {
      mkdirSync(join(root, dir), { recursive: true });
    }
    copyFileSync(busybox, join(root, 'bin', 'busybox'));
    for (const applet of run(busybox, ['--list-full']).split('\n').filter(Boolean)) {
      if (applet === 'bin/busybox') continue;
      const target = join(root, applet);
      mkdirSync(dirname(target), { recursive: true });
      if (!existsSync(target)) symlinkSync('/bin/busybox', target);
    }
    const modulesDir = join(root, 'lib', 'modules', kernel.release);
    const sourceDir = join(kernel.root, 'lib', 'modules', kernel.release);
    for (const file of files) {
      mkdirSync(dirname(join(modulesDir, file)), { recursive: true });
      copyFileSync(join(sourceDir, file), join(modulesDir, file));
    }
    for (const index of ['modules.order', 'modules.builtin', 'modules.builtin.modinfo']) {
      if (existsSync(join(sourceDir, index))) copyFileSync(join(sourceDir, index), join(modulesDir, index));
    }
    run('depmod', ['-b', root, kernel.release]);
    writeFileSync(join(root, 'init'), init, { mode: 0o755 });
    mkdirSync(WORK_DIR, { recursive: true });
    const partial = `${out}.partial`;
    execFileSync('sh', ['-c', `find . | cpio -o -H newc --quiet | gzip -1 > '${partial}'`], { cwd: root });
    renameSync(partial, out);
    return out;
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}
