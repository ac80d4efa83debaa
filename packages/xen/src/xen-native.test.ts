import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { XenUnavailableError } from './xen-errors.js';
import {
  openNativeDeviceModel,
  openNativeEventChannels,
  openNativeForeignMemory,
  openNativeGrantTables,
  openNativeXenServices,
  openNativeXenStore,
} from './xen-native.js';
import {
  bindXenLibrary,
  describeXenHost,
  probeXenHost,
  XEN_LIBRARIES,
  type XenLibraryName,
} from './xen-native-libs.js';
import { startXenstoredServer } from './xenstored-server.js';

describe('native bindings', () => {
  it.each(Object.keys(XEN_LIBRARIES) as XenLibraryName[])('%s loads and every symbol resolves', (name) => {
    const { library, missing } = bindXenLibrary(name);
    expect(missing).toEqual([]);
    for (const prototype of XEN_LIBRARIES[name].functions) {
      const symbol = /([A-Za-z_][A-Za-z0-9_]*)\s*\(/.exec(prototype)?.[1] as string;
      expect(typeof library?.[symbol]).toBe('function');
    }
  });
});

describe('native services on this host', () => {
  const probe = probeXenHost({ ...process.env, XENSTORED_PATH: '/nonexistent/xenstored.sock' });

  it('probes devices and libraries without calling into Xen', () => {
    expect(probe.libraries.map((l) => [l.soname, l.loaded])).toEqual(
      Object.values(XEN_LIBRARIES).map((spec) => [spec.soname, true]),
    );
    expect(probe.devices.map((d) => d.path)).toContain('/dev/xen/privcmd');
    expect(probe.services.xenstore.available).toBe(false);
    const lines = describeXenHost(probe);
    expect(lines).toContain('ok       libxenevtchn.so.1');
    expect(lines.filter((line) => line.startsWith('missing')).length).toBe(
      (probe.isXenDomain ? 0 : 1) +
        probe.devices.filter((d) => !d.present).length +
        1 +
        Object.values(probe.services).filter((s) => !s.available).length,
    );
  });

  const openers = {
    evtchn: openNativeEventChannels,
    gnttab: openNativeGrantTables,
    foreignmemory: openNativeForeignMemory,
    devicemodel: openNativeDeviceModel,
  } as const;

  it.each(Object.keys(openers) as (keyof typeof openers)[])(
    '%s opens on a Xen domain or fails fast naming what is missing',
    (service) => {
      const status = probe.services[service];
      let outcome: unknown;
      try {
        const handle = openers[service]();
        handle.close();
        outcome = 'opened';
      } catch (error) {
        outcome = error;
      }
      if (status.available) {
        expect(outcome).toBe('opened');
      } else {
        expect(XenUnavailableError.isInstance(outcome)).toBe(true);
        const error = outcome as XenUnavailableError;
        expect(error.missing).toEqual(status.missing);
        expect(error.message).toMatch(/missing device \/dev\/xen\//);
        expect(error.code).toBe('ENODEV');
      }
    },
  );

  it('refuses to open all services at once when any is missing, listing everything', async () => {
    const error = await openNativeXenServices({
      ...process.env,
      XENSTORED_PATH: '/nonexistent/xenstored.sock',
    }).then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect(XenUnavailableError.isInstance(error)).toBe(true);
    const names = (error as XenUnavailableError).missing.map((m) => m.name);
    expect(names).toContain('/nonexistent/xenstored.sock');
    expect(names.includes('/dev/xen/privcmd')).toBe(
      !probe.devices.find((d) => d.path === '/dev/xen/privcmd')?.present,
    );
  });

  it('reaches a xenstored through XENSTORED_PATH, as libxenstore does', async () => {
    const directory = mkdtempSync(join(tmpdir(), 'xvio-native-xs-'));
    const server = await startXenstoredServer({ socketPath: join(directory, 'socket') });
    try {
      const store = await openNativeXenStore({ ...process.env, XENSTORED_PATH: server.socketPath });
      await store.write('/native/ok', 'yes');
      expect(await store.read('/native/ok')).toBe('yes');
      expect(await store.read('/local/domain/0/name')).toBe('Domain-0');
      await store.close();
    } finally {
      await server.close();
      rmSync(directory, { recursive: true, force: true });
    }
  });
});
