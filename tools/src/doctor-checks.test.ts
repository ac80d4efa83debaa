import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type CheckResult, parseMemlockLimit, runHostChecks } from './doctor-checks.js';
import { runForTest } from './testing/run-cli.js';

const roots: string[] = [];

async function host(files: Record<string, string>, links: Record<string, string> = {}): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'xvio-doctor-'));
  roots.push(root);
  for (const [path, text] of Object.entries(files)) {
    await mkdir(dirname(join(root, path)), { recursive: true });
    await writeFile(join(root, path), text);
  }
  for (const [path, target] of Object.entries(links)) {
    await mkdir(dirname(join(root, path)), { recursive: true });
    await symlink(target, join(root, path));
  }
  return root;
}

afterEach(async () => {
  for (const root of roots.splice(0)) await rm(root, { recursive: true, force: true });
});

const LIB = '/usr/lib/x86_64-linux-gnu';

/** A dom0 as Debian 12 with Xen 4.17 lays it out. */
function dom0Files(): Record<string, string> {
  const files: Record<string, string> = {
    '/sys/hypervisor/type': 'xen\n',
    '/proc/xen/capabilities': 'control_d\n',
    '/proc/self/limits': 'Max locked memory         unlimited            unlimited            bytes\n',
    '/proc/meminfo': 'HugePages_Total:       0\nHugepagesize:       2048 kB\n',
    '/run/xenstored/socket': '',
  };
  for (const node of ['privcmd', 'evtchn', 'gntdev', 'gntalloc', 'xenbus']) files[`/dev/xen/${node}`] = '';
  for (const module of ['xen_privcmd', 'xen_evtchn', 'xen_gntdev', 'xen_gntalloc'])
    files[`/sys/module/${module}/refcnt`] = '1';
  for (const real of [
    'libxenstore.so.4.0',
    'libxenctrl.so.4.17.0',
    'libxenevtchn.so.1.2',
    'libxengnttab.so.1.2',
    'libxenforeignmemory.so.1.4',
    'libxendevicemodel.so.1.4',
    'libxentoolcore.so.1.0',
    'libxencall.so.1.3',
  ]) {
    files[`${LIB}/${real}`] = '';
  }
  return files;
}

function byName(results: readonly CheckResult[], name: string): CheckResult | undefined {
  return results.find((result) => result.name === name);
}

describe('doctor checks', () => {
  it('passes a dom0 with everything in place', async () => {
    const root = await host(dom0Files(), { [`${LIB}/libxenctrl.so.4.17`]: 'libxenctrl.so.4.17.0' });
    const results = await runHostChecks({ root, uid: 0, env: {} });
    expect(results.filter((result) => result.status !== 'ok')).toEqual([]);
    expect(byName(results, 'domain role')?.detail).toBe('dom0 (control domain)');
    expect(byName(results, 'libxenctrl')?.detail).toBe(`4.17.0 (${LIB}/libxenctrl.so.4.17.0)`);
    expect(byName(results, 'mlock limit')?.detail).toBe('unlimited (root is not bound by it)');
  });

  it('says what to fix on a host that is not Xen', async () => {
    const root = await host({});
    const results = await runHostChecks({ root, uid: 1000, env: {} });
    expect(byName(results, 'hypervisor')).toEqual({
      name: 'hypervisor',
      status: 'fail',
      detail: 'not running under Xen (/sys/hypervisor/type is missing)',
      fix: 'boot this host as a Xen dom0 or driver domain, or use the simulator (xen = "sim"; xvio demo)',
    });
    expect(byName(results, 'module xen_gntdev')).toMatchObject({
      status: 'fail',
      fix: 'modprobe xen-gntdev',
    });
    expect(byName(results, '/dev/xen/privcmd')).toMatchObject({
      status: 'fail',
      fix: 'modprobe xen-privcmd',
    });
    expect(byName(results, 'libxengnttab')).toMatchObject({
      status: 'fail',
      detail: 'libxengnttab.so.1 not found (grant copy (1.1))',
    });
    expect(byName(results, 'privileges')?.status).toBe('warn');
  });

  it('flags a domU, too-old libraries and a small mlock limit for a non-root user', async () => {
    const files = dom0Files();
    files['/proc/xen/capabilities'] = '\n';
    delete files[`${LIB}/libxenforeignmemory.so.1.4`];
    files[`${LIB}/libxenforeignmemory.so.1.2`] = '';
    files['/proc/self/limits'] =
      'Max locked memory         8388608              8388608              bytes\n';
    const root = await host(files);
    const results = await runHostChecks({ root, uid: 1000, env: {} });
    expect(byName(results, 'domain role')).toMatchObject({
      status: 'warn',
      detail: 'an unprivileged domain: it can serve guests only as a driver domain',
    });
    expect(byName(results, 'libxenforeignmemory')).toMatchObject({
      status: 'fail',
      detail: 'version 1.2 is older than needed for map_resource for ioreq pages (1.3)',
    });
    expect(byName(results, 'mlock limit')).toMatchObject({
      status: 'warn',
      detail: '8 MiB: too small for large grant pools',
      fix: 'ulimit -l unlimited, or LimitMEMLOCK=infinity in the service unit',
    });
  });

  it('honours XENSTORED_PATH', async () => {
    const root = await host({ '/tmp/xs.sock': '' });
    const ok = await runHostChecks({ root, uid: 0, env: { XENSTORED_PATH: '/tmp/xs.sock' } });
    expect(byName(ok, 'xenstore')).toMatchObject({ status: 'ok', detail: 'XENSTORED_PATH=/tmp/xs.sock' });
    const missing = await runHostChecks({ root, uid: 0, env: { XENSTORED_PATH: '/nope' } });
    expect(byName(missing, 'xenstore')).toMatchObject({
      status: 'fail',
      detail: 'XENSTORED_PATH=/nope does not exist',
    });
  });

  it('parses the mlock limit', () => {
    expect(
      parseMemlockLimit('Max locked memory         65536                65536                bytes\n'),
    ).toBe(65536);
    expect(
      parseMemlockLimit('Max locked memory         unlimited            unlimited            bytes'),
    ).toBe(Number.POSITIVE_INFINITY);
    expect(parseMemlockLimit('nothing')).toBeUndefined();
  });
});

describe('xvio doctor', () => {
  it('prints the checks and exits 1 when something must be fixed', async () => {
    const root = await host({});
    const result = await runForTest(['doctor', '--root', root]);
    expect(result.status).toBe(1);
    expect(result.stdout).toContain('  FAIL  hypervisor ');
    expect(result.stdout).toMatch(
      /\n\d+ problems to fix before native Xen use; the simulator works regardless/,
    );
  });

  it('exits 0 on a ready host and prints JSON with --json', async () => {
    const root = await host(dom0Files());
    const result = await runForTest(['doctor', '--root', root, '--json']);
    expect(result.status).toBe(0);
    const parsed = JSON.parse(result.stdout) as CheckResult[];
    expect(parsed.every((check) => check.status === 'ok')).toBe(true);
  });
});
