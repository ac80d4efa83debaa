import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

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

/** A QEMU unpacked from Debian's bookworm-backports (nothing installed), and how to run it. */
export interface UnpackedQemu {
  /** A wrapper script that runs the unpacked binary with its own modules and firmware (fits `XVIO_QEMU`). */
  binary: string;
  /** Debian version of qemu-system-x86, e.g. `1:10.0.2+ds-2+deb13u1~bpo12+1`. */
  version: string;
}

/** What an unpacked QEMU needs: the binary, its modules, its firmware and SeaBIOS. */
const BACKPORTS_QEMU_PACKAGES = ['qemu-system-x86', 'qemu-system-common', 'qemu-system-data', 'seabios'];

/**
 * QEMU from bookworm-backports (10.0 at the time of writing), for devices QEMU 7.2 cannot
 * carry under TCG. Its packages are fetched with `apt-get download` through a sources list
 * of their own (the machine's apt sources and state are untouched) and unpacked with
 * `dpkg -x` below `workDir`; the system QEMU stays as it is. The shared libraries it needs
 * are bookworm's, which qemu-system-x86 7.2 already installed. Throws when apt cannot
 * fetch them: the tests that need it fail, they never skip.
 */
export function fetchBackportsQemu(workDir: string): UnpackedQemu {
  const base = join(workDir, 'qemu-backports');
  const root = join(base, 'root');
  const wrapper = join(base, 'qemu-system-x86_64');
  const versionFile = join(base, 'version');
  if (existsSync(wrapper) && existsSync(versionFile)) {
    return { binary: wrapper, version: readFileSync(versionFile, 'utf8').trim() };
  }
  const apt = join(base, 'apt');
  const download = join(base, 'download');
  for (const dir of [join(apt, 'lists', 'partial'), join(apt, 'cache', 'archives', 'partial'), download])
    mkdirSync(dir, { recursive: true });
  const sources = join(apt, 'sources.list');
  writeFileSync(sources, 'deb http://deb.debian.org/debian bookworm-backports main\n');
  const options = [
    '-o',
    `Dir::Etc::SourceList=${sources}`,
    '-o',
    `Dir::Etc::SourceParts=${join(apt, 'parts')}`,
    '-o',
    `Dir::State::Lists=${join(apt, 'lists')}`,
    '-o',
    `Dir::Cache=${join(apt, 'cache')}`,
    // Downloads land in a directory the _apt user cannot write to.
    '-o',
    'APT::Sandbox::User=root',
  ];
  execFileSync('apt-get', [...options, 'update', '-qq'], { stdio: 'pipe' });
  const version = execFileSync('apt-cache', [...options, 'show', '--no-all-versions', 'qemu-system-x86'], {
    encoding: 'utf8',
  })
    .split('\n')
    .find((line) => line.startsWith('Version: '))
    ?.slice('Version: '.length);
  if (!version?.includes('bpo12'))
    throw new Error(`bookworm-backports offers no qemu-system-x86 (${version})`);
  for (const file of readdirSync(download)) rmSync(join(download, file));
  execFileSync('apt-get', [...options, 'download', '-qq', ...BACKPORTS_QEMU_PACKAGES], {
    cwd: download,
    stdio: 'pipe',
  });
  rmSync(root, { recursive: true, force: true });
  for (const deb of readdirSync(download).filter((file) => file.endsWith('.deb')))
    execFileSync('dpkg', ['-x', join(download, deb), root]);
  const qemu = join(root, 'usr', 'bin', 'qemu-system-x86_64');
  if (!existsSync(qemu)) throw new Error('the backports packages hold no qemu-system-x86_64');
  // Its own modules first (the system's 7.2 modules do not load into 10), its own firmware
  // and SeaBIOS before the system's.
  writeFileSync(
    wrapper,
    [
      '#!/bin/sh',
      `QEMU_MODULE_DIR='${join(root, 'usr', 'lib', 'x86_64-linux-gnu', 'qemu')}'`,
      'export QEMU_MODULE_DIR',
      `exec '${qemu}' -L '${join(root, 'usr', 'share', 'qemu')}' -L '${join(root, 'usr', 'share', 'seabios')}' "$@"`,
      '',
    ].join('\n'),
    { mode: 0o755 },
  );
  writeFileSync(versionFile, `${version}\n`);
  return { binary: wrapper, version };
}
