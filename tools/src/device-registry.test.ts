import type { VirtioDevice } from '@xvio/transport';
import { describe, expect, it } from 'vitest';
import { CliError } from './cli-errors.js';
import { createDeviceRegistry, deviceEntryByType, parseDeviceList } from './device-registry.js';

const fakeDevice = { name: 'rng0', deviceType: 4 } as unknown as VirtioDevice;

describe('device registry', () => {
  it('loads a device through its factory, passing the configuration', async () => {
    const seen: unknown[] = [];
    const registry = createDeviceRegistry({
      rng: async () => ({
        createRngDevice: (config: unknown) => {
          seen.push(config);
          return fakeDevice;
        },
      }),
    });
    expect(registry.names).toEqual(['rng']);
    const loaded = await registry.load('rng');
    expect(loaded.create({ source: 'x' })).toBe(fakeDevice);
    expect(seen).toEqual([{ source: 'x' }]);
  });

  it('says a device that was not composed in is not available', async () => {
    const registry = createDeviceRegistry({});
    await expect(registry.load('net')).rejects.toThrow(
      'device net is not available in this build (not composed into it)',
    );
  });

  it('says a package that cannot be imported is not available, with the reason', async () => {
    const registry = createDeviceRegistry({
      console: async () => {
        throw new Error('Cannot find module x');
      },
    });
    const error = await registry.load('console').catch((caught: unknown) => caught);
    expect(CliError.isInstance(error)).toBe(true);
    expect((error as CliError).code).toBe('device-unavailable');
    expect((error as CliError).message).toBe(
      'device console is not available in this build: @xvio/dev-console could not be loaded (Cannot find module x)',
    );
  });

  it('says a package without the factory is not available', async () => {
    const registry = createDeviceRegistry({ gpu: async () => ({ somethingElse: 1 }) });
    await expect(registry.load('gpu')).rejects.toThrow(
      'device gpu is not available in this build: @xvio/dev-gpu does not export createGpuDevice()',
    );
  });

  it('maps virtio device IDs to devices (spec 5: 1 net, 3 console, 4 entropy, 16 gpu)', () => {
    expect(deviceEntryByType(1)?.name).toBe('net');
    expect(deviceEntryByType(3)?.name).toBe('console');
    expect(deviceEntryByType(4)?.name).toBe('rng');
    expect(deviceEntryByType(16)?.name).toBe('gpu');
    expect(deviceEntryByType(2)).toBeUndefined();
  });

  it('parses device lists and names what is wrong', () => {
    expect(parseDeviceList('console, rng,net')).toEqual(['console', 'rng', 'net']);
    expect(() => parseDeviceList('rng,sound')).toThrow(
      "--devices: unknown device 'sound' (allowed: console, rng, net, gpu, template)",
    );
    expect(() => parseDeviceList('rng,rng')).toThrow("--devices: device 'rng' is listed twice");
    expect(() => parseDeviceList(' , ')).toThrow(
      '--devices: expected a comma-separated list of console, rng, net, gpu, template',
    );
  });
});
