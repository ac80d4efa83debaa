// Runs in dom0 of a real Xen 4.17 hypervisor (booted by rig/boot.sh). Exercises xvio's
// native bindings against the real hypervisor, libraries and xenstored, and prints one
// `XVIO-PASS <check> ...` or `XVIO-FAIL <check> ...` line per check, then measurements as
// `XVIO-MEASURE <name> <value> <unit>` lines for the host side to collect.
import { existsSync, readFileSync } from 'node:fs';
import { createRngDevice } from '@xvio/dev-rng';
import { createGuestMemory } from '@xvio/grant-pool';
import { PciTransport } from '@xvio/transport/pci';
import {
  createIoreqServer,
  openNativeEventChannels,
  openNativeGrantTables,
  openNativeXenServices,
  openNativeXenStore,
  probeXenHost,
} from '@xvio/xen';
import {
  assert,
  check,
  domainNames,
  guestLines,
  relayGuest,
  results,
  selectedScenarios,
  withTimeout,
  writeHvmConfig,
  xl,
} from './dom0-common.js';
import { scenarioMmioGrant } from './dom0-mmio.js';
import { scenarioPciDestroy } from './dom0-pci.js';
import { runPciGuest } from './dom0-pci-netcon.js';
import { scenarioVhostUserXenGrant } from './dom0-vhost-user-xen.js';
import { buildNodeGuestInitramfs, scenarioXenbus, scenarioXenbusRobust } from './dom0-xenbus.js';

const selected = selectedScenarios();
let hvmGuestLines: string[] = [];

if (selected('native')) {
  await check('probe', () => {
    const probe = probeXenHost();
    assert(probe.isXenDomain && probe.isControlDomain, `not dom0: hypervisor=${probe.hypervisor}`);
    const missing = Object.entries(probe.services)
      .filter(([, s]) => !s.available)
      .map(([n, s]) => `${n}: ${s.missing.join(',')}`);
    assert(missing.length === 0, `services unavailable: ${missing.join('; ')}`);
    return `hypervisor=${probe.hypervisor} xenstored=${probe.xenstored}`;
  });

  await check('xenstore', async () => {
    const store = await openNativeXenStore();
    try {
      assert((await store.getDomainPath(0)) === '/local/domain/0', 'getDomainPath(0)');
      await store.write('/local/domain/0/xvio/hello', 'world');
      assert((await store.read('/local/domain/0/xvio/hello')) === 'world', 'read back');
      assert((await store.directory('/local/domain/0/xvio')).includes('hello'), 'directory');
      const watch = await store.watch('/local/domain/0/xvio');
      const iterator = watch[Symbol.asyncIterator]();
      const first = await withTimeout(iterator.next(), 10_000, 'initial watch event');
      assert(!first.done, 'watch ended');
      await store.write('/local/domain/0/xvio/changed', '1');
      let seen = false;
      for (let i = 0; i < 5 && !seen; i++) {
        const event = await withTimeout(iterator.next(), 10_000, 'watch event after write');
        seen = !event.done && event.value.path === '/local/domain/0/xvio/changed';
      }
      assert(seen, 'no watch event for the write');
      await watch.close();
      const transaction = await store.startTransaction();
      await transaction.write('/local/domain/0/xvio/tx', 'committed');
      await transaction.commit();
      assert((await store.read('/local/domain/0/xvio/tx')) === 'committed', 'transaction write');
      await store.rm('/local/domain/0/xvio');
      assert(!(await store.exists('/local/domain/0/xvio')), 'rm');
      return 'read/write/directory/watch/transaction/rm against the real xenstored';
    } finally {
      await store.close();
    }
  });

  await check('event-channels', async () => {
    const channels = openNativeEventChannels();
    try {
      const unbound = channels.bindUnboundPort(0);
      const bound = channels.bindInterdomain(0, unbound.localPort);
      const delivered = new Promise<number>((resolve) => unbound.onEvent(resolve));
      const start = performance.now();
      bound.notify();
      const port = await withTimeout(delivered, 10_000, 'event delivery');
      const micros = (performance.now() - start) * 1000;
      assert(port === unbound.localPort, `event on port ${port}, expected ${unbound.localPort}`);
      console.log(`XVIO-MEASURE evtchn-notify-to-delivery ${micros.toFixed(1)} us`);
      // The first delivery includes starting the wait; the median of many is what a device
      // pays per notification.
      const rounds = 51;
      const samples: number[] = [];
      for (let round = 0; round < rounds; round++) {
        const next = new Promise<number>((resolve) => {
          const off = unbound.onEvent((p) => {
            off();
            resolve(p);
          });
        });
        const sent = performance.now();
        bound.notify();
        await withTimeout(next, 10_000, `event delivery ${round}`);
        samples.push((performance.now() - sent) * 1000);
      }
      samples.sort((a, b) => a - b);
      const median = samples[rounds >> 1] as number;
      console.log(`XVIO-MEASURE evtchn-notify-to-delivery-median ${median.toFixed(1)} us`);
      return `port ${bound.localPort} -> ${unbound.localPort}; median of ${rounds} ${median.toFixed(0)} us (min ${samples[0]?.toFixed(0)}, max ${samples[rounds - 1]?.toFixed(0)})`;
    } finally {
      channels.close();
    }
  });

  await check('grant-tables', () => {
    const grants = openNativeGrantTables();
    try {
      const shared = grants.share(0, 2);
      for (let i = 0; i < shared.bytes.length; i++) shared.bytes[i] = (i * 7) & 0xff;
      const mapping = grants.map({ domid: 0, refs: shared.refs, writable: true });
      assert(mapping.bytes.length === 8192, 'mapping size');
      for (let i = 0; i < 8192; i += 511) assert(mapping.bytes[i] === ((i * 7) & 0xff), `mapped byte ${i}`);
      mapping.bytes[4096] = 0xab;
      assert(shared.bytes[4096] === 0xab, 'write through the mapping is not visible to the granter');
      mapping.unmap();
      // Revoking while the grantee maps: Linux's gntalloc (what user-space frontends use)
      // defers the revocation instead of failing, and the mapping stays valid until unmapped.
      // (A kernel frontend such as grant-dma-ops gets the failure: the simulator models that.)
      const revoked = grants.share(0, 1);
      revoked.bytes[0] = 0x5c;
      const held = grants.map({ domid: 0, refs: revoked.refs, writable: false });
      revoked.unshare();
      assert(held.bytes[0] === 0x5c, 'mapping lost its page when the granter revoked');
      held.unmap();
      console.log(
        'XVIO-NOTE gntalloc defers revocation of a mapped grant (unshare returned, mapping stayed valid)',
      );
      const local = new Uint8Array(4096);
      const status = grants.copy([
        {
          source: { kind: 'grant', domid: 0, ref: shared.refs[1]!, offset: 0 },
          dest: { kind: 'local', bytes: local },
          length: 4096,
        },
      ]);
      assert(status[0] === 0, `grant copy status ${status[0]}`);
      assert(local[0] === 0xab, 'grant copy content');

      // The hackathon's question on a real hypervisor: per-request map/unmap vs grant copy vs a
      // persistent mapping (memcpy from a page mapped once), per 4 KiB page.
      const rounds = 300;
      const target = new Uint8Array(4096);
      let start = performance.now();
      for (let i = 0; i < rounds; i++) {
        const m = grants.map({ domid: 0, refs: [shared.refs[0]!], writable: false });
        target.set(m.bytes);
        m.unmap();
      }
      const mapUs = ((performance.now() - start) * 1000) / rounds;
      start = performance.now();
      for (let i = 0; i < rounds; i++) {
        grants.copy([
          {
            source: { kind: 'grant', domid: 0, ref: shared.refs[0]!, offset: 0 },
            dest: { kind: 'local', bytes: target },
            length: 4096,
          },
        ]);
      }
      const copyUs = ((performance.now() - start) * 1000) / rounds;
      const persistent = grants.map({ domid: 0, refs: [shared.refs[0]!], writable: false });
      start = performance.now();
      for (let i = 0; i < rounds * 10; i++) target.set(persistent.bytes);
      const persistentUs = ((performance.now() - start) * 1000) / (rounds * 10);
      persistent.unmap();
      shared.unshare();
      console.log(`XVIO-MEASURE grant-map-unmap-4k ${mapUs.toFixed(2)} us`);
      console.log(`XVIO-MEASURE grant-copy-4k ${copyUs.toFixed(2)} us`);
      console.log(`XVIO-MEASURE persistent-memcpy-4k ${persistentUs.toFixed(3)} us`);
      return `map+unmap ${mapUs.toFixed(1)} us, copy ${copyUs.toFixed(1)} us, persistent ${persistentUs.toFixed(2)} us per 4 KiB`;
    } finally {
      grants.close();
    }
  });
}

// vhost-user XEN_MMAP grant regions: a frontend in this process grants pages to dom0 with
// gntalloc and sends them as grant regions; xvio's backend maps each request through gntdev.
if (selected('vhost-user-xen-grant')) await check('vhost-user-xen-grant', () => scenarioVhostUserXenGrant());

// Scenario 1: a stock Debian Linux HVM guest finds xvio's virtio-rng as a PCI function
// (00:05.0) that xvio serves from dom0 through an ioreq server, with guest-physical DMA
// reached by foreign mapping; the guest's own virtio_pci and virtio-rng drivers bind and
// the guest reads /dev/hwrng.
if (selected('pci-rng'))
  await check('hvm-pci-rng', async () => {
    const { config, serial } = writeHvmConfig('xvio-hvm');
    const created = performance.now();
    const step = (what: string) =>
      console.log(`XVIO-STEP hvm-pci-rng ${((performance.now() - created) / 1000).toFixed(1)} s ${what}`);
    xl('create', '-p', config);
    const domid = Number(xl('domid', 'xvio-hvm').trim());
    step(`created domain ${domid}`);
    const services = await openNativeXenServices();
    const server = createIoreqServer(
      { deviceModel: services.deviceModel, foreignMemory: services.foreignMemory, events: services.events },
      { domid, onError: (error) => console.log(`XVIO-NOTE ioreq error ${error.message}`) },
    );
    const memory = createGuestMemory(
      { strategy: 'foreign', domid },
      { foreignMemory: services.foreignMemory, grants: services.grants },
    );
    const device = createRngDevice({});
    const transport = new PciTransport({
      server,
      device,
      memory,
      pci: { segment: 0, bus: 0, device: 5, function: 0 },
      onError: (error) => console.log(`XVIO-NOTE transport ${String(error)}`),
    });
    server.enable();
    step('ioreq server enabled, PCI function 00:05.0 claimed');
    xl('unpause', 'xvio-hvm');
    step('guest unpaused');
    const deadline = Date.now() + 600_000;
    let lastReport = Date.now();
    while (Date.now() < deadline && xl('list').includes('xvio-hvm')) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      if (Date.now() - lastReport > 20_000) {
        lastReport = Date.now();
        const lines = existsSync(serial) ? readFileSync(serial, 'latin1').split('\n').length : 0;
        step(
          `waiting: ${server.stats.answered} ioreqs answered, ${lines} guest console lines, device ${JSON.stringify(device.metrics())}`,
        );
      }
    }
    const seconds = (performance.now() - created) / 1000;
    const log = existsSync(serial) ? readFileSync(serial, 'latin1') : '';
    const lines = guestLines(log);
    relayGuest(lines);
    hvmGuestLines = lines;
    if (xl('list').includes('xvio-hvm')) xl('destroy', 'xvio-hvm');
    const stats = { ...server.stats };
    const counters = { ...transport.counters };
    await server.close();
    const live = { grants: services.grants.liveMappings(), memory: memory.counters };
    await services.close();
    console.log(
      `XVIO-NOTE hvm after close: xl list ${domainNames().join(',')}, ioreq stats ${JSON.stringify(stats)}, transport ${JSON.stringify(counters)}, memory ${JSON.stringify(live)}`,
    );
    console.log(`XVIO-MEASURE hvm-guest-lifetime ${seconds.toFixed(1)} s`);
    console.log(`XVIO-MEASURE hvm-ioreqs-answered ${stats.answered} count`);
    assert(
      log.includes('DOMU-PASS hwrng'),
      `the guest did not read the rng (counters: ${JSON.stringify(transport.counters)}, device ${JSON.stringify(device.metrics())}, guest: ${log
        .split('\n')
        .filter((l) => l.includes('DOMU'))
        .join(' | ')})`,
    );
    assert(
      !lines.some((l) => l.startsWith('DOMU-FAIL')),
      `the guest reported a failure: ${lines.filter((l) => l.startsWith('DOMU-FAIL')).join(' | ')}`,
    );
    return `guest ${domid} read /dev/hwrng through xvio's PCI function in ${seconds.toFixed(0)} s; ${stats.answered} ioreqs answered, ${device.metrics().bytes} bytes served`;
  });

// Scenario 4, registers: after reading, the same guest unbinds virtio-pci and writes garbage
// over the whole BAR with devmem; every write is an ioreq its vCPU waits on, so reaching the
// end (and powering off) proves xvio answered them all without crashing.
if (selected('pci-rng'))
  await check('hvm-register-garbage', () => {
    const line = hvmGuestLines.find((l) => l.startsWith('DOMU-PASS register-garbage'));
    assert(line, `the guest did not finish its garbage writes: ${hvmGuestLines.slice(-3).join(' | ')}`);
    return line.slice('DOMU-PASS register-garbage '.length);
  });

if (selected('pci-destroy')) {
  const services = await openNativeXenServices();
  try {
    await check('hvm-pci-destroy', () => scenarioPciDestroy(services));
  } finally {
    await services.close();
  }
}

// virtio-net (TAP in dom0: ping, TCP both ways with checksums) and virtio-console (a named
// port both ways) as two PCI functions of xvio's ioreq server, and a backend restart (virtio-rng
// served by a separate process, killed and restarted while the guest reads): one HVM guest.
const pciNetcon = selected('pci-net') || selected('pci-console') || selected('pci-netcon');
const pciRestart = selected('pci-restart');
if (pciNetcon || pciRestart) {
  const services = await openNativeXenServices();
  try {
    let outcome: Awaited<ReturnType<typeof runPciGuest>> | undefined;
    let failure: unknown;
    try {
      outcome = await runPciGuest(services, { netcon: pciNetcon, restart: pciRestart });
    } catch (error) {
      failure = error;
    }
    const part = (name: 'netcon' | 'restart') => () => {
      if (!outcome) throw failure;
      return outcome[name]();
    };
    if (pciNetcon) await check('hvm-pci-net-console', part('netcon'));
    if (pciRestart) await check('hvm-pci-restart', part('restart'));
  } finally {
    await services.close();
  }
}

// Scenario 2: grant DMA from a stock HVM guest's user space (gntalloc) over virtio-mmio windows
// xvio serves through its ioreq server, one rng per memory strategy (grant-map, grant-copy,
// persistent-pool), with a revoke-while-mapped case.
if (selected('mmio-grant')) {
  const services = await openNativeXenServices();
  try {
    await check('hvm-mmio-grant', () => scenarioMmioGrant(services));
  } finally {
    await services.close();
  }
}

if (selected('xenbus') || selected('robust')) {
  const built = performance.now();
  const bytes = buildNodeGuestInitramfs();
  console.log(
    `XVIO-STEP node guest initramfs ${(bytes / 1e6).toFixed(0)} MB built in ${((performance.now() - built) / 1000).toFixed(1)} s`,
  );
  const services = await openNativeXenServices();
  try {
    if (selected('xenbus'))
      await check('xenbus-pvh', () => onceMoreIfGuestCrashed('xenbus-pvh', () => scenarioXenbus(services)));
    if (selected('robust')) {
      await check('xenbus-robust', () =>
        onceMoreIfGuestCrashed('xenbus-robust', () => scenarioXenbusRobust(services)),
      );
    }
  } finally {
    await services.close();
  }
}

const failed = results.filter((r) => !r.ok).length;
console.log(`XVIO-SUMMARY ${results.length - failed} passed, ${failed} failed`);
process.exitCode = failed === 0 ? 0 : 1;

/**
 * Node inside a PVH guest under QEMU TCG occasionally dies of SIGSEGV or SIGILL (emulated CPU
 * features; AVX is already hidden). That says nothing about xvio, so such a run is repeated
 * once with a fresh guest and backend, and the repeat is reported. Any other failure stands.
 */
async function onceMoreIfGuestCrashed(name: string, scenario: () => Promise<string>): Promise<string> {
  try {
    return await scenario();
  } catch (error) {
    const crash = /DOMU-EXIT rc=(139|132)\b/.exec(String(error instanceof Error ? error.message : error));
    if (!crash) throw error;
    console.log(
      `XVIO-NOTE ${name}: the guest's node died of signal ${Number(crash[1]) - 128} under emulation; running the scenario once more`,
    );
    return await scenario();
  }
}
