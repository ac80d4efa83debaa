import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDeviceRegistry } from './device-registry.js';
import { runForTest } from './testing/run-cli.js';
import { spawnCli } from './testing/spawn-cli.js';

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

  it('serves a simulated machine until SIGTERM, with xenstored and metrics, then cleans up', async () => {
    const socketPath = join(dir, 'xs.sock');
    await writeFile(
      join(dir, 'serve.toml'),
      [
        'xen = "sim"',
        `xenstored = { socket_path = "${socketPath}" }`,
        '[[domains]]',
        'domid = 2',
        '[[domains.devices]]',
        'type = "console"',
        'transport = "xenbus"',
        'memory = "grant-map"',
      ].join('\n'),
    );
    const cli = spawnCli([
      '--log-level',
      'warn',
      'run',
      '--config',
      join(dir, 'serve.toml'),
      '--metrics-port',
      '0',
    ]);
    try {
      await cli.waitFor(/serving 1 device\(s\) to 1 domain\(s\) on the Xen simulator\n/);
      const port = /metrics: http:\/\/127\.0\.0\.1:(\d+)\/metrics/.exec(cli.stdout())?.[1];
      const env = { ...process.env, XENSTORED_PATH: socketPath };
      expect(
        execFileSync('xenstore-read', ['/local/domain/0/backend/virtio-xenbus/2/0/device-id'], {
          env,
          encoding: 'utf8',
        }),
      ).toBe('3\n');
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      expect(text).toContain('xvio_device_status{domain="dom2",device="dom2-console0"}');
    } finally {
      cli.child.kill('SIGTERM');
    }
    expect(await cli.exited()).toBe(0);
    expect(existsSync(socketPath)).toBe(false);
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

  it("validates each device's options with its package's schema, naming the config path", async () => {
    await writeFile(
      join(dir, 'options.yaml'),
      [
        'xen: sim',
        'domains:',
        '  - domid: 1',
        '    devices:',
        '      - type: rng',
        '        options: { queueSize: 100 }',
        '      - type: net',
        '        options: { mac: "01:00:00:00:00:01", colour: red }',
      ].join('\n'),
    );
    const result = await runForTest(['run', '--config', 'options.yaml', '--check'], { cwd: dir });
    expect(result).toEqual({
      status: 3,
      stdout: '',
      stderr: [
        'xvio: invalid device options:',
        '  domains[0].devices[0].options.queueSize: queueSize must be a power of two',
        '  domains[0].devices[1].options.mac: mac must be a unicast address (group bit clear)',
        '  domains[0].devices[1].options.colour: unknown field; allowed fields: name, mac, mtu, queuePairs, queueSize, linkUp, controlQueue, capture, host',
        '',
      ].join('\n'),
    });
  });

  it('reports a missing file with exit status 7', async () => {
    const result = await runForTest(['run', '--config', 'nothing.toml'], { cwd: dir });
    expect(result.status).toBe(7);
    expect(result.stderr).toMatch(/^xvio: cannot read nothing\.toml: ENOENT/);
  });
});
