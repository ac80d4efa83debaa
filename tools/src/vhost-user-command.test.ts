import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectSetting } from './device-options.js';
import { runForTest } from './testing/run-cli.js';
import { spawnCli } from './testing/spawn-cli.js';
import { requestEntropy } from './testing/vhost-user-driver.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xvio-vu-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('xvio vhost-user', () => {
  it('serves rng to a vhost-user frontend and exits after it with --once', async () => {
    const socketPath = join(dir, 'rng.sock');
    const cli = spawnCli([
      'vhost-user',
      'rng',
      '--socket-path',
      socketPath,
      '--once',
      '--set',
      'source=seeded:7',
    ]);
    await cli.waitFor(/serving rng \(rng0\) on /);
    const result = await requestEntropy(socketPath);
    expect(result.setupStatuses).toEqual([0n, 0n, 0n, 0n, 0n, 0n, 0n]);
    expect(result.usedLength).toBe(512);
    // The driver's fill pattern (0xee) is gone: the device wrote entropy over it.
    expect(result.untouched).toBeLessThan(32);
    expect(await cli.exited()).toBe(0);
    expect(existsSync(socketPath)).toBe(false);
  });

  it('serves several sockets from one process and removes them on SIGTERM', async () => {
    const first = join(dir, 'a.sock');
    const second = join(dir, 'b.sock');
    const cli = spawnCli(['vhost-user', 'console', '-s', first, '-s', second, '--metrics-port', '0']);
    try {
      const match = await cli.waitFor(/metrics: http:\/\/127\.0\.0\.1:(\d+)\/metrics/);
      expect(cli.stdout()).toContain(
        `serving console (console0) on ${first}\nserving console (console1) on ${second}\n`,
      );
      expect(existsSync(first) && existsSync(second)).toBe(true);
      const text = await (await fetch(`http://127.0.0.1:${match[1]}/metrics`)).text();
      expect(text).toContain('# TYPE xvio_transport_counter gauge');
    } finally {
      cli.child.kill('SIGTERM');
    }
    expect(await cli.exited()).toBe(0);
    expect(existsSync(first) || existsSync(second)).toBe(false);
  });

  it('validates device options once, naming each --set field', async () => {
    const result = await runForTest([
      'vhost-user',
      'rng',
      '-s',
      join(dir, 'x.sock'),
      '--set',
      'queueSize=100',
      '--set',
      'colour=red',
    ]);
    expect(result).toEqual({
      status: 3,
      stdout: '',
      stderr:
        'xvio: invalid options for device rng:\n  --set queueSize: queueSize must be a power of two\n  --set colour: unknown field; allowed fields: name, source, maxBytes, periodMs, maxBytesPerRequest, queueSize\n',
    });
  });

  it('refuses --xen-mmap on a host that is not a Xen domain, saying what is missing', async () => {
    const result = await runForTest(['vhost-user', 'rng', '-s', join(dir, 'xen.sock'), '--xen-mmap']);
    expect(result.status).toBe(5);
    expect(result.stderr).toMatch(/native Xen is not available on this host/);
    expect(result.stderr).toMatch(/xvio doctor/);
  });

  it('rejects bad flags with exact messages', async () => {
    expect((await runForTest(['vhost-user', 'sound', '-s', 'x.sock'])).stderr).toBe(
      "error: command-argument value 'sound' is invalid for argument 'device'. allowed: console, rng, net, gpu, template.\n(run 'xvio vhost-user --help' for usage)\n",
    );
    expect((await runForTest(['vhost-user', 'rng'])).stderr).toBe(
      "error: required option '-s, --socket-path <path>' not specified\n(run 'xvio vhost-user --help' for usage)\n",
    );
    expect((await runForTest(['vhost-user', 'rng', '-s', 'x.sock', '--set', 'novalue'])).stderr).toBe(
      "error: option '--set <key=value>' argument 'novalue' is invalid. expected key=value.\n(run 'xvio vhost-user --help' for usage)\n",
    );
    expect((await runForTest(['vhost-user', 'rng', '-s', 'x.sock', '--poll-us', '20000'])).stderr).toBe(
      "error: option '--poll-us <microseconds>' argument '20000' is invalid. allowed: 0..10000.\n(run 'xvio vhost-user --help' for usage)\n",
    );
    expect(
      (await runForTest(['vhost-user', 'rng', '-s', 'x.sock', '-s', 'x.sock'], { cwd: dir })).stderr,
    ).toBe(`xvio: --socket-path ${join(dir, 'x.sock')} is given twice\n`);
  });
});

describe('--set', () => {
  it('nests dotted keys and reads JSON values', () => {
    let options = collectSetting('queueSize=128');
    options = collectSetting('host.type=switch', options);
    options = collectSetting('host.switch=lan', options);
    options = collectSetting('linkUp=false', options);
    options = collectSetting('mac=52:54:00:12:34:56', options);
    expect(options).toEqual({
      queueSize: 128,
      host: { type: 'switch', switch: 'lan' },
      linkUp: false,
      mac: '52:54:00:12:34:56',
    });
    expect(() => collectSetting('a..b=1')).toThrow("'a..b' is not an option name");
  });
});
