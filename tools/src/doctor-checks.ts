import { constants } from 'node:fs';
import { access, readdir, readFile, realpath, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';

export type CheckStatus = 'ok' | 'warn' | 'fail';

export interface CheckResult {
  readonly name: string;
  readonly status: CheckStatus;
  readonly detail: string;
  /** What to do about it; absent when nothing needs doing. */
  readonly fix?: string;
}

/** Where the checks look: `/` on a real host, a prepared directory in tests. */
export interface HostView {
  readonly root: string;
  readonly uid: number;
  readonly env: Readonly<Record<string, string | undefined>>;
}

/** The Xen device nodes a backend opens, and the module providing each (Linux drivers/xen). */
export const XEN_DEVICES = [
  { node: 'privcmd', module: 'xen_privcmd', purpose: 'hypercalls, foreign mapping and ioreq servers' },
  { node: 'evtchn', module: 'xen_evtchn', purpose: 'event channels' },
  { node: 'gntdev', module: 'xen_gntdev', purpose: 'mapping and copying granted pages' },
  { node: 'gntalloc', module: 'xen_gntalloc', purpose: 'granting pages (persistent pools)' },
  { node: 'xenbus', module: 'xenfs', purpose: 'xenstore from a domain without a local xenstored' },
] as const;

/** Libraries xvio loads, with the minimum minor version of the features it calls (REFERENCE §5). */
export const XEN_LIBRARIES = [
  { soname: 'libxenstore.so.4', minimum: undefined, feature: 'xenstore' },
  { soname: 'libxenctrl.so.4', minimum: undefined, feature: 'domain control' },
  { soname: 'libxenevtchn.so.1', minimum: undefined, feature: 'event channels' },
  { soname: 'libxengnttab.so.1', minimum: 1, feature: 'grant copy (1.1)' },
  { soname: 'libxenforeignmemory.so.1', minimum: 3, feature: 'map_resource for ioreq pages (1.3)' },
  { soname: 'libxendevicemodel.so.1', minimum: undefined, feature: 'ioreq servers and interrupts' },
  { soname: 'libxentoolcore.so.1', minimum: undefined, feature: 'handle restriction' },
  { soname: 'libxencall.so.1', minimum: undefined, feature: 'hypercall buffers' },
] as const;

const LIBRARY_DIRS = [
  '/lib/x86_64-linux-gnu',
  '/usr/lib/x86_64-linux-gnu',
  '/lib/aarch64-linux-gnu',
  '/usr/lib/aarch64-linux-gnu',
  '/usr/lib64',
  '/usr/lib',
  '/usr/local/lib',
];

/** Below this, mapping many grants or a persistent pool may fail with ENOMEM (RLIMIT_MEMLOCK). */
const MLOCK_RECOMMENDED = 64 * 1024 * 1024;

async function readText(host: HostView, path: string): Promise<string | undefined> {
  try {
    return await readFile(join(host.root, path), 'utf8');
  } catch {
    return undefined;
  }
}

async function exists(host: HostView, path: string): Promise<boolean> {
  try {
    await stat(join(host.root, path));
    return true;
  } catch {
    return false;
  }
}

async function readWrite(host: HostView, path: string): Promise<boolean> {
  try {
    await access(join(host.root, path), constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

function checkHypervisor(type: string | undefined): CheckResult {
  if (type?.trim() === 'xen') return { name: 'hypervisor', status: 'ok', detail: 'running as a Xen domain' };
  return {
    name: 'hypervisor',
    status: 'fail',
    detail:
      type === undefined
        ? 'not running under Xen (/sys/hypervisor/type is missing)'
        : `not running under Xen (/sys/hypervisor/type is ${JSON.stringify(type.trim())})`,
    fix: 'boot this host as a Xen dom0 or driver domain, or use the simulator (xen = "sim"; xvio demo)',
  };
}

function checkRole(capabilities: string | undefined, underXen: boolean): CheckResult {
  if (capabilities === undefined) {
    return {
      name: 'domain role',
      status: 'fail',
      detail: '/proc/xen/capabilities is missing (xenfs not mounted)',
      fix: underXen ? 'mount -t xenfs xenfs /proc/xen' : 'only meaningful on a Xen domain',
    };
  }
  if (capabilities.includes('control_d'))
    return { name: 'domain role', status: 'ok', detail: 'dom0 (control domain)' };
  return {
    name: 'domain role',
    status: 'warn',
    detail: 'an unprivileged domain: it can serve guests only as a driver domain',
    fix: 'give the guests backend=<this domain> in their virtio lines and this domain driver_domain=1 in its xl.cfg',
  };
}

async function checkDevices(host: HostView): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  for (const device of XEN_DEVICES) {
    const path = `/dev/xen/${device.node}`;
    const name = `${path}`;
    if (!(await exists(host, path))) {
      results.push({
        name,
        status: device.node === 'xenbus' || device.node === 'gntalloc' ? 'warn' : 'fail',
        detail: `missing (${device.purpose})`,
        fix:
          device.node === 'xenbus'
            ? 'mount xenfs or run xenstored locally'
            : `modprobe ${device.module.replace(/_/g, '-')}`,
      });
    } else if (!(await readWrite(host, path))) {
      results.push({
        name,
        status: 'fail',
        detail: `present but not readable and writable by uid ${host.uid}`,
        fix: `run as root, or grant this user read/write on ${path} (a udev rule)`,
      });
    } else {
      results.push({ name, status: 'ok', detail: `read/write (${device.purpose})` });
    }
  }
  return results;
}

async function checkModules(host: HostView): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  const loaded = (await readText(host, '/proc/modules')) ?? '';
  for (const device of XEN_DEVICES) {
    if (device.module === 'xenfs') continue;
    const present =
      (await exists(host, `/sys/module/${device.module}`)) || loaded.includes(`${device.module} `);
    results.push(
      present
        ? { name: `module ${device.module}`, status: 'ok', detail: 'loaded or built in' }
        : {
            name: `module ${device.module}`,
            status: 'fail',
            detail: `not loaded (${device.purpose})`,
            fix: `modprobe ${device.module.replace(/_/g, '-')}`,
          },
    );
  }
  return results;
}

/** Finds a library by soname prefix; the version is the real file's suffix (libxenctrl.so.4.17.0 -> 4.17.0). */
async function findLibrary(
  host: HostView,
  soname: string,
): Promise<{ path: string; version: string } | undefined> {
  for (const dir of LIBRARY_DIRS) {
    let names: string[];
    try {
      names = await readdir(join(host.root, dir));
    } catch {
      continue;
    }
    const candidates = names.filter((name) => name === soname || name.startsWith(`${soname}.`)).sort();
    const best = candidates.at(-1);
    if (best === undefined) continue;
    let real = best;
    try {
      real = basename(await realpath(join(host.root, dir, best)));
    } catch {
      // a dangling link: report the name we found
    }
    const base = soname.slice(0, soname.indexOf('.so') + 3);
    const version = real.startsWith(`${base}.`) ? real.slice(base.length + 1) : real;
    return { path: join(dir, best), version };
  }
  return undefined;
}

async function checkLibraries(host: HostView): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  for (const library of XEN_LIBRARIES) {
    const found = await findLibrary(host, library.soname);
    const name = library.soname.slice(0, library.soname.indexOf('.so'));
    if (!found) {
      results.push({
        name,
        status: 'fail',
        detail: `${library.soname} not found (${library.feature})`,
        fix: 'install the Xen libraries (Debian: apt-get install libxenmisc4.17 libxenstore4, or libxen-dev)',
      });
      continue;
    }
    const minor = Number(found.version.split('.')[1] ?? '0');
    if (library.minimum !== undefined && minor < library.minimum) {
      results.push({
        name,
        status: 'fail',
        detail: `version ${found.version} is older than needed for ${library.feature}`,
        fix: 'upgrade the Xen libraries (Xen 4.17 or later)',
      });
      continue;
    }
    results.push({ name, status: 'ok', detail: `${found.version} (${found.path})` });
  }
  return results;
}

async function checkXenstore(host: HostView): Promise<CheckResult> {
  const explicit = host.env.XENSTORED_PATH;
  if (explicit) {
    return (await exists(host, explicit))
      ? { name: 'xenstore', status: 'ok', detail: `XENSTORED_PATH=${explicit}` }
      : {
          name: 'xenstore',
          status: 'fail',
          detail: `XENSTORED_PATH=${explicit} does not exist`,
          fix: 'start xenstored, or unset XENSTORED_PATH',
        };
  }
  for (const path of ['/run/xenstored/socket', '/var/run/xenstored/socket', '/dev/xen/xenbus']) {
    if (await exists(host, path)) return { name: 'xenstore', status: 'ok', detail: path };
  }
  return {
    name: 'xenstore',
    status: 'fail',
    detail: 'no xenstored socket and no /dev/xen/xenbus',
    fix: 'start xenstored (dom0: systemctl start xenstored), or set XENSTORED_PATH',
  };
}

/** Parses /proc/self/limits' "Max locked memory" soft limit in bytes (Infinity for unlimited). */
export function parseMemlockLimit(limits: string): number | undefined {
  const line = limits.split('\n').find((candidate) => candidate.startsWith('Max locked memory'));
  if (!line) return undefined;
  const soft = line.slice('Max locked memory'.length).trim().split(/\s+/)[0];
  if (soft === 'unlimited') return Number.POSITIVE_INFINITY;
  const value = Number(soft);
  return Number.isFinite(value) ? value : undefined;
}

function mebibytes(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(bytes % (1024 * 1024) === 0 ? 0 : 1)} MiB`;
}

async function checkMemlock(host: HostView): Promise<CheckResult> {
  const limit = parseMemlockLimit((await readText(host, '/proc/self/limits')) ?? '');
  if (limit === undefined)
    return { name: 'mlock limit', status: 'warn', detail: 'cannot read /proc/self/limits' };
  if (host.uid === 0 || limit >= MLOCK_RECOMMENDED) {
    const text = limit === Number.POSITIVE_INFINITY ? 'unlimited' : mebibytes(limit);
    return {
      name: 'mlock limit',
      status: 'ok',
      detail: `${text}${host.uid === 0 ? ' (root is not bound by it)' : ''}`,
    };
  }
  return {
    name: 'mlock limit',
    status: 'warn',
    detail: `${mebibytes(limit)}: too small for large grant pools`,
    fix: 'ulimit -l unlimited, or LimitMEMLOCK=infinity in the service unit',
  };
}

async function checkHugepages(host: HostView): Promise<CheckResult> {
  const meminfo = (await readText(host, '/proc/meminfo')) ?? '';
  const total = /HugePages_Total:\s+(\d+)/.exec(meminfo)?.[1];
  const size = /Hugepagesize:\s+(\d+) kB/.exec(meminfo)?.[1];
  if (total === undefined) return { name: 'hugepages', status: 'warn', detail: 'cannot read /proc/meminfo' };
  return {
    name: 'hugepages',
    status: 'ok',
    detail: `${total} reserved${size ? ` of ${Number(size) / 1024} MiB` : ''} (optional: vhost-user guests may back memory with them)`,
  };
}

function checkPrivileges(host: HostView): CheckResult {
  return host.uid === 0
    ? { name: 'privileges', status: 'ok', detail: 'running as root' }
    : {
        name: 'privileges',
        status: 'warn',
        detail: `running as uid ${host.uid}: the device nodes above must be writable by it`,
      };
}

/** Every check, in the order a person would fix things. */
export async function runHostChecks(host: HostView): Promise<CheckResult[]> {
  const type = await readText(host, '/sys/hypervisor/type');
  const underXen = type?.trim() === 'xen';
  const results: CheckResult[] = [checkHypervisor(type)];
  results.push(checkRole(await readText(host, '/proc/xen/capabilities'), underXen));
  results.push(...(await checkModules(host)));
  results.push(...(await checkDevices(host)));
  results.push(await checkXenstore(host));
  results.push(...(await checkLibraries(host)));
  results.push(checkPrivileges(host));
  results.push(await checkMemlock(host));
  results.push(await checkHugepages(host));
  return results;
}

/** The one-paragraph verdict `run` quotes when native Xen was asked for and is not there. */
export function nativeXenProblems(results: readonly CheckResult[]): string[] {
  return results
    .filter((result) => result.status === 'fail')
    .map((result) => `${result.name}: ${result.detail}`);
}
