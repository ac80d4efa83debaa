import { describe, expect, it } from 'vitest';
import { createDeviceRegistry, createWorkspaceRegistry } from './device-registry.js';
import { runForTest } from './testing/run-cli.js';

describe('xvio demo', () => {
  it('serves rng to two guests for a second and prints the summary', async () => {
    const result = await runForTest(['demo', '--seconds', '1', '--devices', 'rng', '--no-live'], {
      registry: createWorkspaceRegistry(),
    });
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(result.stdout).toContain(
      '  guest1: in-process driver, split rings in test memory (no transport)\n',
    );
    const lines = result.stdout.split('\n');
    const header = lines.findIndex((line) => line.startsWith('guest   device'));
    expect(header).toBeGreaterThan(0);
    const rows = lines.slice(header + 1, header + 3).map((line) => line.split(/\s{2,}/));
    for (const [index, row] of rows.entries()) {
      expect(row[0]).toBe(`guest${index + 1}`);
      expect(row[1]).toBe(`guest${index + 1}-rng0`);
      expect(Number(row[2])).toBeGreaterThan(0); // requests
      expect(row[3]).toMatch(/^[0-9.]+ (B|KiB|MiB|GiB)$/); // entropy the guest received
      expect(row[4]).toBe('-'); // rng: the guest sends nothing
      expect(row[6]).toBe('0'); // faults
      expect(row[7]).toBe('0'); // needs-reset
      expect(row[8]).toBe('running');
    }
  });

  it('fails clearly when no demo device is in the build', async () => {
    const result = await runForTest(['demo', '--seconds', '1', '--devices', 'rng'], {
      registry: createDeviceRegistry({}),
    });
    expect(result.status).toBe(4);
    expect(result.stderr).toBe('xvio: none of the demo devices is available in this build\n');
    expect(result.stdout).toContain(
      '  rng: device rng is not available in this build (not composed into it)\n',
    );
  });

  it('rejects bad flags with exact messages', async () => {
    const devices = await runForTest(['demo', '--devices', 'rng,sound']);
    expect(devices.status).toBe(2);
    expect(devices.stderr).toBe(
      "error: option '--devices <list>' argument 'rng,sound' is invalid. --devices: unknown device 'sound' (allowed: console, rng, net, gpu, template)\n(run 'xvio demo --help' for usage)\n",
    );
    const seconds = await runForTest(['demo', '--seconds', 'ten']);
    expect(seconds.stderr).toBe(
      "error: option '--seconds <n>' argument 'ten' is invalid. expected an integer in 1..86400.\n(run 'xvio demo --help' for usage)\n",
    );
  });
});
