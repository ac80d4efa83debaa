import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CliError } from './cli-errors.js';
import { configFormat, loadRunPlan, planRun } from './run-config.js';

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xvio-config-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function write(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

async function errorOf(promise: Promise<unknown>): Promise<CliError> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  if (!CliError.isInstance(error)) throw new Error(`expected a CliError, got ${String(error)}`);
  return error;
}

describe('run configuration', () => {
  it('accepts TOML and applies the defaults', async () => {
    const file = await write(
      'ok.toml',
      [
        'xen = "sim"',
        '[[domains]]',
        'domid = 1',
        'name = "guest1"',
        '[[domains.devices]]',
        'type = "rng"',
        '[domains.devices.options]',
        'source = "os"',
        '[[domains.devices]]',
        'type = "net"',
        'transport = "pci"',
        'memory = "persistent-pool"',
      ].join('\n'),
    );
    const plan = await loadRunPlan(file, dir);
    expect(plan.xen).toBe('sim');
    expect(plan.backendDomid).toBe(0);
    expect(plan.domains).toEqual([
      {
        domid: 1,
        name: 'guest1',
        devices: [
          {
            device: 'rng',
            devid: 0,
            transport: 'mmio',
            memory: 'foreign',
            options: { source: 'os' },
            source: 'domains[0].devices[0]',
          },
          {
            device: 'net',
            devid: 1,
            transport: 'pci',
            memory: 'persistent-pool',
            options: {},
            source: 'domains[0].devices[1]',
          },
        ],
      },
    ]);
  });

  it('accepts YAML with xl.cfg virtio lines, skipping lines meant for another backend', async () => {
    const file = await write(
      'ok.yaml',
      [
        'xen: native',
        'backend_domid: 2',
        'domains:',
        '  - domid: 7',
        '    virtio:',
        '      - "type=virtio,device4, transport=mmio, grant_usage=1, backend=2"',
        '      - "type=virtio,device3, transport=mmio, backend=2"',
        '      - "type=virtio,device3, transport=mmio, grant_usage=0, backend=2"',
        '      - "type=virtio,device1, backend=0"',
      ].join('\n'),
    );
    const plan = await loadRunPlan(file, dir);
    expect(plan.domains[0]?.devices.map((d) => [d.device, d.devid, d.transport, d.memory])).toEqual([
      ['rng', 0, 'mmio', 'grant-map'],
      // libxl's default: grants when the backend is not dom0
      ['console', 1, 'mmio', 'grant-map'],
      ['console', 2, 'mmio', 'foreign'],
    ]);
    expect(plan.skipped).toEqual(['domains[0].virtio[3]: backend=0 is not this backend (domain 2)']);
  });

  it('reads an xl domain configuration referenced from the config', async () => {
    await write(
      'guest.cfg',
      'name = "web"\nvirtio = [ "type=virtio,device4, transport=mmio, grant_usage=1, backend=0" ]\n',
    );
    const file = await write('xl.toml', 'xen = "sim"\n[[domains]]\ndomid = 4\nxl_config = "guest.cfg"\n');
    const plan = await loadRunPlan(file, dir);
    expect(plan.domains[0]).toMatchObject({ domid: 4, name: 'web' });
    expect(plan.domains[0]?.devices.map((d) => [d.device, d.memory, d.source])).toEqual([
      ['rng', 'grant-map', 'domains[0].xl_config virtio[0]'],
    ]);
  });

  it('takes an xl domain configuration as the config itself, given --xen and --domid', async () => {
    const file = await write(
      'direct.cfg',
      'name = "db"\nvirtio = [ "type=virtio,device1, transport=mmio, backend=0" ]\n',
    );
    const plan = await loadRunPlan(file, dir, { xen: 'sim', domid: 9 });
    expect(plan.domains[0]?.domid).toBe(9);
    expect(plan.domains[0]?.devices[0]?.device).toBe('net');
    const error = await errorOf(loadRunPlan(file, dir, {}));
    expect(error.message).toBe(
      `${file} is an xl domain configuration: also give --xen (allowed values: native, sim) and --domid (the guest domain ID xl create assigned)`,
    );
  });

  it('names every bad field with its path and the allowed values', async () => {
    const file = await write(
      'bad.toml',
      [
        'xen = "kvm"',
        'colour = "blue"',
        '[[domains]]',
        'domid = 0',
        '[[domains.devices]]',
        'type = "sound"',
        'transport = "usb"',
        'memory = "dma"',
        'devid = 1.5',
        'speed = 3',
      ].join('\n'),
    );
    const error = await errorOf(loadRunPlan(file, dir));
    expect(error.code).toBe('invalid-config');
    expect(error.exitCode).toBe(3);
    expect(error.message).toBe(
      [
        `invalid configuration ${file}:`,
        '  xen: got "kvm"; allowed values: native, sim',
        '  domains[0].domid: got 0; must be >= 1',
        '  domains[0].devices[0].type: got "sound"; allowed values: console, rng, net, gpu, template',
        '  domains[0].devices[0].devid: expected an integer, got 1.5',
        '  domains[0].devices[0].transport: got "usb"; allowed values: mmio, pci, xenbus',
        '  domains[0].devices[0].memory: got "dma"; allowed values: foreign, grant-map, grant-copy, persistent-pool',
        '  domains[0].devices[0].speed: unknown field; allowed fields: type, devid, transport, memory, options',
        '  colour: unknown field; allowed fields: xen, backend_domid, metrics, xenstored, discover, domains',
      ].join('\n'),
    );
  });

  it('requires the hypervisor mode and at least one domain', async () => {
    const error = await errorOf(planRun({ domains: [] }, 'c.toml', dir));
    expect(error.message).toBe(
      ['invalid configuration c.toml:', '  xen: is required; allowed values: native, sim'].join('\n'),
    );
    const empty = await errorOf(planRun({ xen: 'sim' }, 'c.toml', dir));
    expect(empty.message).toBe(
      ['invalid configuration c.toml:', '  domains: needs at least 1 entries (or discover = "libxl")'].join(
        '\n',
      ),
    );
    const discover = await errorOf(planRun({ xen: 'sim', discover: 'udev' }, 'c.toml', dir));
    expect(discover.message).toBe(
      ['invalid configuration c.toml:', '  discover: got "udev"; allowed values: libxl'].join('\n'),
    );
    expect((await planRun({ xen: 'sim', discover: 'libxl' }, 'c.toml', dir)).discoverLibxl).toBe(true);
  });

  it('rejects wrong types, duplicate domains and devids, and empty domains', async () => {
    const typeError = await errorOf(
      planRun({ xen: 'sim', domains: 'all', metrics: { port: 70000 } }, 'c.yaml', dir),
    );
    expect(typeError.message).toBe(
      [
        'invalid configuration c.yaml:',
        '  metrics.port: got 70000; must be <= 65535',
        '  domains: expected a list, got "all"',
      ].join('\n'),
    );
    const error = await errorOf(
      planRun(
        {
          xen: 'sim',
          domains: [
            {
              domid: 1,
              devices: [
                { type: 'rng', devid: 0 },
                { type: 'console', devid: 0 },
              ],
            },
            { domid: 1, devices: [{ type: 'rng' }] },
            { domid: 2 },
          ],
        },
        'c.yaml',
        dir,
      ),
    );
    expect(error.message).toBe(
      [
        'invalid configuration c.yaml:',
        '  domains[0].devices: devid 0 is used twice',
        '  domains[1].domid: 1 is used by an earlier domain',
        '  domains[2]: no devices (add devices, virtio or xl_config)',
      ].join('\n'),
    );
  });

  it('reports a bad xl line and an unreadable xl file against their entry', async () => {
    const error = await errorOf(
      planRun(
        {
          xen: 'sim',
          domains: [{ domid: 1, virtio: ['type=virtio,device4,speed=9'], xl_config: 'missing.cfg' }],
        },
        'c.yaml',
        dir,
      ),
    );
    expect(error.message).toMatch(
      /^invalid configuration c\.yaml:\n {2}domains\[0\]\.xl_config: cannot read missing\.cfg \(ENOENT/,
    );
    expect(error.message).toContain(
      '\n  domains[0].virtio[0]: unknown string "speed=9" in virtio spec "type=virtio,device4,speed=9"',
    );
  });

  it('reports syntax errors of each format', async () => {
    const toml = await write('syntax.toml', 'xen = \n');
    expect((await errorOf(loadRunPlan(toml, dir))).message).toMatch(/^cannot parse .*syntax\.toml as TOML: /);
    const yaml = await write('syntax.yaml', 'xen: [sim\n');
    expect((await errorOf(loadRunPlan(yaml, dir))).message).toMatch(/^cannot parse .*syntax\.yaml as YAML: /);
  });

  it('knows formats by extension', () => {
    expect(configFormat('a.toml')).toBe('toml');
    expect(configFormat('a.YML')).toBe('yaml');
    expect(configFormat('guest.cfg')).toBe('xl');
    expect(() => configFormat('a.json')).toThrow(
      "--config a.json: unknown format '.json' (allowed: .toml, .yaml, .yml, .cfg for an xl domain configuration)",
    );
  });
});
