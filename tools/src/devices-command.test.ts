import type { VirtioDevice } from '@xvio/transport';
import { describe, expect, it } from 'vitest';
import { createDeviceRegistry } from './device-registry.js';
import { runForTest } from './testing/run-cli.js';

describe('xvio devices', () => {
  it('lists each device of the build with whether it loads, and exits 1 when one does not', async () => {
    const registry = createDeviceRegistry({
      rng: async () => ({ createRngDevice: () => ({}) as VirtioDevice }),
      net: async () => ({}),
    });
    expect(await runForTest(['devices'], { registry })).toEqual({
      status: 1,
      stdout: [
        '  rng       @xvio/dev-rng       available',
        '  net       @xvio/dev-net       unavailable: device net is not available in this build: @xvio/dev-net does not export createNetDevice()',
        '',
      ].join('\n'),
      stderr: '',
    });
  });

  it('exits 0 when every device loads', async () => {
    const registry = createDeviceRegistry({
      rng: async () => ({ createRngDevice: () => ({}) as VirtioDevice }),
    });
    expect((await runForTest(['devices'], { registry })).status).toBe(0);
  });

  it('rejects arguments it does not take', async () => {
    expect((await runForTest(['devices', 'extra'])).stderr).toBe(
      "error: too many arguments for 'devices'. Expected 0 arguments but got 1.\n(run 'xvio devices --help' for usage)\n",
    );
  });
});
