import type { DeviceContext, VirtioDevice } from '@xvio/transport';
import { describe, expect, it } from 'vitest';
import { createDeviceRegistry, createWorkspaceRegistry } from './device-registry.js';
import { runForTest } from './testing/run-cli.js';
import { spawnCli } from './testing/spawn-cli.js';

function summaryRows(stdout: string, count: number): string[][] {
  const lines = stdout.split('\n');
  const header = lines.findIndex((line) => line.startsWith('guest   device'));
  expect(header).toBeGreaterThan(0);
  return lines.slice(header + 1, header + 1 + count).map((line) => line.split(/\s{2,}/));
}

describe('xvio demo', () => {
  it('serves console, rng and net to two simulated guests over PCI and XenBus', async () => {
    const result = await runForTest(['--log-level', 'warn', 'demo', '--seconds', '3', '--no-live']);
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(result.stdout).toContain(
      '  guest1: HVM domain, virtio-pci (MSI-X) over an ioreq server, grant map per request (Linux grant DMA)\n',
    );
    expect(result.stdout).toContain(
      '  guest2: PV domain, virtio over XenBus (event channels), persistent grant pool\n',
    );
    const rows = summaryRows(result.stdout, 6);
    expect(rows.map((row) => row[1])).toEqual([
      'guest1-console0',
      'guest2-console0',
      'guest1-rng0',
      'guest2-rng0',
      'guest1-net0',
      'guest2-net0',
    ]);
    for (const row of rows) {
      expect(Number(row[2])).toBeGreaterThan(0); // requests
      expect(row[6]).toBe('0'); // faults
      expect(row[7]).toBe('0'); // needs-reset
      expect(row[9]).toBe('running');
    }
    // Each guest received frames the other sent through the switch.
    expect(rows[4]![3]).not.toBe('0 B');
    expect(rows[5]![3]).not.toBe('0 B');
    // dom0 typed into each console and the guests read it; the guests' lines reached dom0.
    expect(rows[0]![3]).not.toBe('0 B');
    expect(rows[1]![3]).not.toBe('0 B');
    expect(result.stdout).toMatch(/\nguest1 console> \[guest1\] console line \d+: the quick brown fox\n/);
    expect(result.stdout).toMatch(/\nguest2 console> \[guest2\] console line \d+: the quick brown fox\n/);
    expect(rows[0]![8]).toMatch(/^grant-map \(\d+\)$/);
    expect(rows[1]![8]).toMatch(/^persistent-pool \(\d+\)$/);
  }, 60_000);

  it('serves rng to two in-process guests and prints the summary', async () => {
    const result = await runForTest(
      ['demo', '--seconds', '1', '--devices', 'rng', '--no-live', '--guests', 'in-process'],
      {
        registry: createWorkspaceRegistry(),
      },
    );
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(result.stdout).toContain(
      '  guest1: in-process driver, split rings in test memory (no transport, no Xen)\n',
    );
    for (const [index, row] of summaryRows(result.stdout, 2).entries()) {
      expect(row[0]).toBe(`guest${index + 1}`);
      expect(row[1]).toBe(`guest${index + 1}-rng0`);
      expect(Number(row[2])).toBeGreaterThan(0); // requests
      expect(row[3]).toMatch(/^[0-9.]+ (B|KiB|MiB|GiB)$/); // entropy the guest received
      expect(row[4]).toBe('-'); // rng: the guest sends nothing
      expect(row[6]).toBe('0'); // faults
      expect(row[7]).toBe('0'); // needs-reset
      expect(row[8]).toMatch(/^test \(\d+\)$/);
      expect(row[9]).toBe('running');
    }
  });

  it('exits 1 and says so when a device faulted', async () => {
    // A device that reports ring corruption on every kick: the controller sets NEEDS_RESET.
    const faulty = (): VirtioDevice => {
      let context: DeviceContext | undefined;
      return {
        deviceType: 4,
        name: 'broken-rng0',
        queueMaxSizes: [64],
        features: 0n,
        configSize: 0,
        readConfig: () => undefined,
        writeConfig: () => undefined,
        activate: (next) => {
          context = next;
        },
        notify: () => context?.fail(new Error('descriptor-out-of-range: head 9999')),
        reset: () => {
          context = undefined;
        },
      };
    };
    const registry = createDeviceRegistry({ rng: async () => ({ createRngDevice: faulty }) });
    const result = await runForTest(
      ['demo', '--seconds', '1', '--devices', 'rng', '--guests', 'in-process'],
      { registry },
    );
    expect(result.status).toBe(1);
    const rows = summaryRows(result.stdout, 2);
    for (const row of rows) {
      expect(row[6]).toBe('1'); // faults
      expect(row[7]).toBe('1'); // needs-reset
      expect(row[9]).toBe('needs reset');
    }
    expect(result.stdout).toContain('\n2 device(s) faulted\n');
  });

  it('runs until SIGINT, then prints the summary and exits 0', async () => {
    const cli = spawnCli(['--log-level', 'warn', 'demo', '--devices', 'rng', '--guests', 'in-process']);
    await cli.waitFor(/running: Ctrl-C stops and prints the summary\n/);
    await new Promise((resolve) => setTimeout(resolve, 300));
    cli.child.kill('SIGINT');
    expect(await cli.exited()).toBe(0);
    expect(cli.stdout()).toMatch(/\nsummary after [0-9.]+ s .*\nguest {3}device/);
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
    const guests = await runForTest(['demo', '--guests', 'kvm']);
    expect(guests.stderr).toBe(
      "error: option '--guests <kind>' argument 'kvm' is invalid. Allowed choices are sim, in-process.\n(run 'xvio demo --help' for usage)\n",
    );
  });
});
