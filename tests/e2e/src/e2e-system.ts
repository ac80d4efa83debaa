import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

/** Debian packages the guests need, and a file each one provides. */
export const SYSTEM_PACKAGES: readonly { package: string; provides: string }[] = [
  { package: 'qemu-system-x86', provides: '/usr/bin/qemu-system-x86_64' },
  { package: 'busybox-static', provides: '/bin/busybox' },
  { package: 'kmod', provides: '/usr/sbin/depmod' },
  { package: 'cpio', provides: '/usr/bin/cpio' },
];

/** The packages that are missing on this machine. */
export function missingPackages(): string[] {
  return SYSTEM_PACKAGES.filter((p) => !existsSync(p.provides)).map((p) => p.package);
}

function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/**
 * Installs what the guests need with apt when it is missing. Throws when something stays
 * missing: the end-to-end tests fail rather than skip (CI installs these through
 * .ci/install-system-deps.sh).
 */
export function ensureSystemPackages(): void {
  let missing = missingPackages();
  if (missing.length === 0) return;
  if (!isRoot()) {
    throw new Error(`missing Debian packages ${missing.join(' ')}: run .ci/install-system-deps.sh as root`);
  }
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = () =>
    spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], {
      env,
      encoding: 'utf8',
    });
  let result = install();
  if (result.status !== 0) {
    execFileSync('apt-get', ['update', '-qq'], { env, stdio: 'ignore' });
    result = install();
  }
  missing = missingPackages();
  if (missing.length > 0) {
    throw new Error(`apt-get could not install ${missing.join(' ')}: ${result.stderr}`);
  }
}
