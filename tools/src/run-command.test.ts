import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDeviceRegistry } from './device-registry.js';
import { runForTest } from './testing/run-cli.js';

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xvio-run-'));
  await writeFile(
    join(dir, 'sim.toml'),
    'xen = "sim"\n[[domains]]\ndomid = 1\nname = "g1"\n[[domains.devices]]\ntype = "rng"\ntransport = "pci"\n',
  );
  await writeFile(
    join(dir, 'native.yaml'),
    'xen: native\ndomains:\n  - domid: 2\n    devices: [{ type: rng }]\n',
  );
  await writeFile(
    join(dir, 'guest.cfg'),
    'name = "g"\nvirtio = [ "type=virtio,device4, transport=mmio, grant_usage=1, backend=0" ]\n',
  );
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('xvio run', () => {
  it('prints the plan with --check', async () => {
    const result = await runForTest(['run', '--config', 'sim.toml', '--check'], { cwd: dir });
    expect(result).toEqual({
      status: 0,
      stdout:
        'xen: sim, backend domain 0\ndomain 1 (g1):\n  devid 0: rng over pci, memory foreign  [domains[0].devices[0]]\n',
      stderr: '',
    });
  });

  it('accepts an xl domain configuration with --xen and --domid', async () => {
    const result = await runForTest(
      ['run', '--config', 'guest.cfg', '--xen', 'sim', '--domid', '5', '--check'],
      {
        cwd: dir,
      },
    );
    expect(result.stdout).toBe(
      'xen: sim, backend domain 0\ndomain 5 (g):\n  devid 0: rng over mmio, memory grant-map  [domains[0].xl_config virtio[0]]\n',
    );
  });

  it('refuses native Xen on a host without it, saying what is missing', async () => {
    const empty = await mkdtemp(join(tmpdir(), 'xvio-host-'));
    const result = await runForTest(['run', '--config', 'native.yaml', '--host-root', empty], { cwd: dir });
    await rm(empty, { recursive: true });
    expect(result.status).toBe(5);
    expect(result.stderr).toMatch(
      /^xvio: native Xen is not available on this host:\n {2}hypervisor: not running under Xen \(\/sys\/hypervisor\/type is missing\)\n/,
    );
    expect(result.stderr).toContain(
      '\nrun \'xvio doctor\' for what to fix, or choose the simulator (xen = "sim")\n',
    );
  });

  it('says which device is not in the build', async () => {
    const result = await runForTest(['run', '--config', 'sim.toml'], {
      cwd: dir,
      registry: createDeviceRegistry({}),
    });
    expect(result).toEqual({
      status: 4,
      stdout: '',
      stderr: 'xvio: device rng is not available in this build (not composed into it)\n',
    });
  });

  it('requires --config', async () => {
    const result = await runForTest(['run']);
    expect(result.status).toBe(2);
    expect(result.stderr).toBe(
      "error: required option '-c, --config <file>' not specified\n(run 'xvio run --help' for usage)\n",
    );
  });

  it('rejects a bad --xen and a bad --domid', async () => {
    const xen = await runForTest(['run', '--config', 'guest.cfg', '--xen', 'kvm']);
    expect(xen.stderr).toBe(
      "error: option '--xen <mode>' argument 'kvm' is invalid. Allowed choices are native, sim.\n(run 'xvio run --help' for usage)\n",
    );
    const domid = await runForTest(['run', '--config', 'guest.cfg', '--domid', '0']);
    expect(domid.stderr).toBe(
      "error: option '--domid <id>' argument '0' is invalid. allowed: 1..32751.\n(run 'xvio run --help' for usage)\n",
    );
  });

  it('reports an invalid configuration with exit status 3', async () => {
    await writeFile(
      join(dir, 'bad.yaml'),
      'xen: sim\ndomains:\n  - domid: 1\n    devices: [{ type: rng, memory: dma }]\n',
    );
    const result = await runForTest(['run', '--config', 'bad.yaml'], { cwd: dir });
    expect(result.status).toBe(3);
    expect(result.stderr).toBe(
      'xvio: invalid configuration bad.yaml:\n  domains[0].devices[0].memory: got "dma"; allowed values: foreign, grant-map, grant-copy, persistent-pool\n',
    );
  });

  it('reports a missing file with exit status 7', async () => {
    const result = await runForTest(['run', '--config', 'nothing.toml'], { cwd: dir });
    expect(result.status).toBe(7);
    expect(result.stderr).toMatch(/^xvio: cannot read nothing\.toml: ENOENT/);
  });
});
