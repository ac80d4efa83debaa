import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { XenUnavailableError } from './xen-errors.js';
import { pollerSettled } from './xen-fd-watcher.js';
import { libc, O_CLOEXEC } from './xen-libc.js';
import {
  EVTCHN_PORT_BYTES,
  EventChannelPortStream,
  NativeEventChannels,
  openNativeDeviceModel,
  openNativeEventChannels,
  openNativeForeignMemory,
  openNativeGrantTables,
  openNativeXenServices,
  openNativeXenStore,
} from './xen-native.js';
import {
  type BoundLibrary,
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

describe('native event channels over a stand-in evtchn fd', () => {
  /**
   * libxenevtchn as Linux's evtchn device behaves, with a pipe for the device: a notify of a
   * local loopback pair makes the peer port pending, the device writes it into the fd as a
   * little-endian u32 and masks it until it is written back (unmask).
   */
  function fakeEvtchn() {
    const fds = new Int32Array(2);
    expect(libc().pipe2(fds, O_CLOEXEC)).toBe(0);
    const [readEnd, writeEnd] = [fds[0] as number, fds[1] as number];
    const peers = new Map<number, number>();
    const masked = new Set<number>();
    const unmasked: number[] = [];
    let nextPort = 10;
    const raise = (port: number) => {
      masked.add(port);
      const bytes = new Uint8Array(EVTCHN_PORT_BYTES);
      new DataView(bytes.buffer).setUint32(0, port, true);
      libc().write(writeEnd, bytes, bytes.length);
    };
    const fn = (body: (...args: unknown[]) => unknown) =>
      Object.assign(body, { async: () => undefined }) as BoundLibrary[string];
    const library: BoundLibrary = {
      xenevtchn_open: fn(() => ({ handle: true })),
      xenevtchn_fd: fn(() => readEnd),
      xenevtchn_bind_unbound_port: fn(() => nextPort++),
      xenevtchn_bind_interdomain: fn((_handle, _domid, remote) => {
        const port = nextPort++;
        peers.set(port, remote as number);
        peers.set(remote as number, port);
        return port;
      }),
      xenevtchn_notify: fn((_handle, port) => {
        const peer = peers.get(port as number);
        if (peer !== undefined && !masked.has(peer)) raise(peer);
        return 0;
      }),
      xenevtchn_unmask: fn((_handle, port) => {
        masked.delete(port as number);
        unmasked.push(port as number);
        return 0;
      }),
      xenevtchn_unbind: fn(() => 0),
      xenevtchn_close: fn(() => {
        libc().close(readEnd);
        libc().close(writeEnd);
        return 0;
      }),
    };
    return { library, raise, writeEnd, unmasked };
  }

  it('splits reads into ports and keeps a cut port until its remaining bytes arrive', () => {
    const stream = new EventChannelPortStream();
    expect(stream.ports(Uint8Array.of(1, 0, 0, 0, 2, 1, 0, 0))).toEqual([1, 0x102]);
    expect(stream.ports(Uint8Array.of(7, 0))).toEqual([]);
    expect(stream.ports(Uint8Array.of(0))).toEqual([]);
    expect(stream.ports(Uint8Array.of(0, 9, 0, 0, 0, 0xff))).toEqual([7, 9]);
    expect(stream.ports(Uint8Array.of(0xff, 0xff, 0xff))).toEqual([0xffff_ffff]);
  });

  for (const via of ['loop', 'poller'] as const) {
    it(`delivers every notification, unmasks before the listeners and closes its fd (${via})`, async () => {
      await pollerSettled();
      await new Promise((resolve) => setTimeout(resolve, 20));
      const before = readdirSync('/proc/self/fd').length;
      const fake = fakeEvtchn();
      const channels = new NativeEventChannels(fake.library, via);
      const unbound = channels.bindUnboundPort(0);
      const bound = channels.bindInterdomain(0, unbound.localPort);
      const seen: { port: number; unmaskedFirst: boolean }[] = [];
      let wake: () => void = () => {};
      unbound.onEvent((port) => {
        seen.push({ port, unmaskedFirst: fake.unmasked.at(-1) === port });
        wake();
      });
      for (let round = 1; round <= 3; round++) {
        const delivered = new Promise<void>((resolve) => {
          wake = resolve;
        });
        bound.notify();
        await delivered;
        expect(seen.length).toBe(round);
      }
      expect(seen.every((s) => s.port === unbound.localPort && s.unmaskedFirst)).toBe(true);

      // Several ports in one read, one port cut across two reads, a port nobody bound.
      const boundSeen = new Promise<number>((resolve) => bound.onEvent(resolve));
      const both = new Uint8Array(12);
      const view = new DataView(both.buffer);
      view.setUint32(0, 999, true);
      view.setUint32(4, bound.localPort, true);
      view.setUint32(8, unbound.localPort, true);
      const unboundSeen = new Promise<void>((resolve) => {
        wake = resolve;
      });
      libc().write(fake.writeEnd, both, 6);
      await new Promise((resolve) => setTimeout(resolve, 10));
      libc().write(fake.writeEnd, both.subarray(6), 6);
      expect(await boundSeen).toBe(bound.localPort);
      await unboundSeen;
      expect(seen.length).toBe(4);

      // A closed channel hears nothing more.
      unbound.close();
      fake.raise(unbound.localPort);
      channels.close();
      await pollerSettled();
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(seen.length).toBe(4);
      expect(channels.lastError).toBeUndefined();
      expect(readdirSync('/proc/self/fd').length).toBe(before);
    });
  }
});
