// Scenario 2, grant-based DMA on a real hypervisor: a stock Debian HVM guest has no
// CONFIG_XEN_VIRTIO, so a static program in the guest (rig/guest-virtio-mmio.c) is the driver.
// It grants its rings and buffers to dom0 with /dev/xen/gntalloc, puts grant DMA addresses
// (1<<63 | gref<<12 | offset) on a split virtqueue, and drives virtio-mmio windows mapped from
// /dev/mem. xvio serves three virtio-rng devices there through its ioreq server
// (`MmioTransport`), one per memory strategy of @xvio/grant-pool: grant-map (map per request),
// grant-copy and persistent-pool. The guest runs one round per window and reports; dom0 checks
// what the backend held at every completion and measures each strategy's cost per request.
import { createRngDevice } from '@xvio/dev-rng';
import {
  createGuestMemory,
  type GuestMemory,
  GuestMemoryError,
  type MappedRanges,
  type MemoryRange,
  PersistentPoolMemory,
  parseGuestMemoryConfig,
} from '@xvio/grant-pool';
import { VIRTIO_F_ACCESS_PLATFORM } from '@xvio/transport';
import { MmioTransport } from '@xvio/transport/mmio';
import { createIoreqServer, type XenServices } from '@xvio/xen';
import {
  assert,
  diagnose,
  domainNames,
  guestLines,
  readLog,
  relayGuest,
  sleep,
  writeHvmConfig,
  xl,
} from './dom0-common.js';

/**
 * Where the windows live in the guest's physical address space: above the guest's 256 MiB of
 * RAM and below hvmloader's PCI hole (0xf0000000 up, grown downwards only when the BARs need
 * more than 256 MiB) and its reserved area (0xfc000000 up), so no RAM, BAR or firmware table is
 * there and an access traps to the ioreq server that claims it.
 */
export const MMIO_GRANT_BASE = 0xd000_0000n;
const STRATEGIES = ['grant-map', 'grant-copy', 'persistent-pool'] as const;

/** What the backend did with one device's memory, seen from around the strategy. */
interface Observed {
  requests: number;
  /** Host time spent in `map` and `release` (the strategy's own cost), per request, in ms. */
  memoryMs: number[];
  /** Buffer mappings still live right after `release`, i.e. when the used element is published. */
  liveAtCompletion: number[];
  ringViews: number;
  /** The typed faults `map` or `release` threw (a request failed alone: revoked or read-only grants). */
  faults: string[];
}

/**
 * Wraps a strategy to watch it from the outside: times `map` + `release` per request and
 * records how many mappings beyond the ring views are live right after `release`, which
 * `openChain(...).close()` calls just before the used element is published.
 */
function observe(inner: GuestMemory): { memory: GuestMemory; seen: Observed } {
  const seen: Observed = { requests: 0, memoryMs: [], liveAtCompletion: [], ringViews: 0, faults: [] };
  const memory: GuestMemory = {
    get kind() {
      return inner.kind;
    },
    get counters() {
      return inner.counters;
    },
    check: (address, length, access) => inner.check(address, length, access),
    read: (address, target) => inner.read(address, target),
    write: (address, source) => inner.write(address, source),
    view: (address, length, access) => {
      const view = inner.view(address, length, access);
      seen.ringViews++;
      return view;
    },
    map: (ranges: readonly MemoryRange[]): MappedRanges => {
      const start = performance.now();
      let mapped: MappedRanges;
      try {
        mapped = inner.map(ranges);
      } catch (error) {
        seen.faults.push(GuestMemoryError.isInstance(error) ? error.code : String(error));
        throw error;
      }
      const mapMs = performance.now() - start;
      return {
        segments: mapped.segments,
        release: (written) => {
          const begin = performance.now();
          try {
            mapped.release(written);
          } catch (error) {
            // Grant copy meets a refused grant at the copy-back (see @xvio/grant-pool README).
            seen.faults.push(GuestMemoryError.isInstance(error) ? error.code : String(error));
            throw error;
          } finally {
            seen.memoryMs.push(mapMs + performance.now() - begin);
            seen.requests++;
            seen.liveAtCompletion.push(inner.liveMappings() - seen.ringViews);
          }
        },
      };
    },
    fence: (order) => inner.fence(order),
    unmapAll: () => {
      inner.unmapAll();
      seen.ringViews = 0;
    },
    liveMappings: () => inner.liveMappings(),
  };
  return { memory, seen };
}

function median(values: readonly number[]): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[sorted.length >> 1] as number;
}

export async function scenarioMmioGrant(services: XenServices): Promise<string> {
  const name = 'xvio-hvm-mmio';
  const { config, serial } = writeHvmConfig(
    name,
    `xvio.mode=mmio-grant xvio.mmio=0x${MMIO_GRANT_BASE.toString(16)} xvio.strategies=${STRATEGIES.join('+')}`,
  );
  const created = performance.now();
  const step = (what: string) =>
    console.log(`XVIO-STEP mmio-grant ${((performance.now() - created) / 1000).toFixed(1)} s ${what}`);
  xl('create', '-p', config);
  const domid = Number(xl('domid', name).trim());
  const errors: string[] = [];
  const server = createIoreqServer(
    { deviceModel: services.deviceModel, foreignMemory: services.foreignMemory, events: services.events },
    { domid, onError: (error) => errors.push(`ioreq: ${error.message}`) },
  );
  const devices = STRATEGIES.map((strategy, i) => {
    const inner = createGuestMemory(parseGuestMemoryConfig({ strategy, domid }), services);
    const { memory, seen } = observe(inner);
    const device = createRngDevice({});
    const transport = new MmioTransport({
      server,
      device,
      memory,
      base: MMIO_GRANT_BASE + 0x200n * BigInt(i),
      interrupt: { kind: 'none' },
      // The device reaches only granted memory: the driver must accept ACCESS_PLATFORM.
      platformFeatures: VIRTIO_F_ACCESS_PLATFORM,
      onError: (error) => errors.push(`${strategy}: ${String(error)}`),
    });
    return { strategy, inner, seen, device, transport };
  });
  server.enable();
  xl('unpause', name);
  step(`guest ${domid} unpaused; virtio-mmio windows at 0x${MMIO_GRANT_BASE.toString(16)} (+0x200 each)`);

  const pool = devices.find((d) => d.strategy === 'persistent-pool');
  const frontend = `/local/domain/${domid}/data`;
  let poolPages = 0;
  const deadline = Date.now() + 600_000;
  let lastReport = Date.now();
  // `xl list` runs synchronously and blocks the event loop that answers the guest's ioreqs, so
  // progress is read from the guest's console and the domain list consulted only now and then.
  let lastList = Date.now();
  try {
    for (;;) {
      if (readLog(serial).includes('DOMU-DONE')) break;
      if (Date.now() - lastList > 15_000) {
        lastList = Date.now();
        if (!domainNames().includes(name)) break;
      }
      if (Date.now() > deadline) {
        diagnose(serial);
        throw new Error('the guest did not finish within 600 s');
      }
      // The pool protocol (pool-table-wire): the guest publishes its table's grant reference;
      // the backend loads it and acknowledges, so the guest's first pool request hits the pool.
      if (pool && poolPages === 0 && (await services.store.exists(`${frontend}/persistent-pool-table`))) {
        const ref = Number(await services.store.read(`${frontend}/persistent-pool-table`));
        assert(pool.inner instanceof PersistentPoolMemory, 'persistent-pool strategy');
        poolPages = pool.inner.loadPoolTable(ref);
        await services.store.write(`${frontend}/persistent-pool-loaded`, String(poolPages));
        step(`pool table (grant ${ref}) loaded: ${poolPages} pages`);
      }
      if (Date.now() - lastReport > 20_000) {
        lastReport = Date.now();
        const last = guestLines(readLog(serial)).at(-1) ?? 'no guest line yet';
        step(
          `waiting: ${server.stats.answered} ioreqs, ${devices.map((d) => `${d.strategy} ${d.seen.requests}`).join(', ')} requests; guest: ${last}`,
        );
      }
      await sleep(500);
    }
    // Done: the guest powers off (on_poweroff=destroy).
    for (let i = 0; i < 60 && domainNames().includes(name); i++) await sleep(500);
  } finally {
    if (domainNames().includes(name)) xl('destroy', name);
  }
  const seconds = (performance.now() - created) / 1000;
  const lines = guestLines(readLog(serial));
  relayGuest(lines);
  const live = devices.map((d) => d.inner.liveMappings());
  for (const d of devices) d.transport.close();
  await server.close();
  const report = devices.map((d) => ({
    strategy: d.strategy,
    requests: d.seen.requests,
    memoryUsPerRequest: median(d.seen.memoryMs) * 1000,
    memoryUsMean: (d.seen.memoryMs.reduce((a, b) => a + b, 0) * 1000) / Math.max(1, d.seen.memoryMs.length),
    maxLiveAtCompletion: Math.max(0, ...d.seen.liveAtCompletion),
    counters: d.inner.counters,
    device: d.device.metrics(),
    registers: d.transport.counters,
    controller: { ...d.transport.controller.metrics },
    faults: d.seen.faults,
  }));
  for (const r of report) {
    console.log(`XVIO-MEASURE mmio-${r.strategy}-backend-memory ${r.memoryUsPerRequest.toFixed(1)} us`);
    console.log(
      `XVIO-NOTE mmio-grant ${r.strategy}: ${r.requests} requests, backend memory per request median ${r.memoryUsPerRequest.toFixed(1)} us (mean ${r.memoryUsMean.toFixed(1)}), max buffer mappings live at a completion ${r.maxLiveAtCompletion}, counters ${JSON.stringify(r.counters)}, device ${JSON.stringify(r.device)}, controller ${JSON.stringify(r.controller)}, faults ${JSON.stringify(r.faults)}`,
    );
  }
  console.log(`XVIO-MEASURE mmio-grant-ioreqs-answered ${server.stats.answered} count`);
  console.log(`XVIO-MEASURE mmio-grant-guest-lifetime ${seconds.toFixed(1)} s`);
  if (errors.length > 0) console.log(`XVIO-NOTE mmio-grant errors ${JSON.stringify(errors.slice(0, 6))}`);

  const failures = lines.filter((l) => l.startsWith('DOMU-FAIL'));
  assert(failures.length === 0, `the guest reported: ${failures.join(' | ')}`);
  for (const strategy of STRATEGIES)
    assert(
      lines.some((l) => l.startsWith(`DOMU-PASS mmio-${strategy} `)),
      `no guest PASS for ${strategy}: ${lines.slice(-4).join(' | ')}`,
    );
  assert(
    lines.some((l) => l.startsWith('DOMU-PASS mmio-revoke-while-mapped')),
    'no revoke-while-mapped PASS',
  );
  const [map, copy, persistent] = report;
  assert(map && copy && persistent, 'three devices');
  // Map per request: nothing of a buffer is mapped when the used element is published, so the
  // guest's revocation right after it never finds a grant in use.
  assert(
    map.requests > 0 && map.maxLiveAtCompletion === 0,
    `grant-map left ${map.maxLiveAtCompletion} buffer mappings at a completion`,
  );
  assert(copy.requests > 0 && copy.maxLiveAtCompletion === 0, 'grant-copy mapped a buffer');
  assert(
    persistent.counters.cacheHits > 0 && poolPages > 0,
    `the persistent pool was never hit: ${JSON.stringify(persistent.counters)}`,
  );
  assert(
    live.every((n) => n === 0),
    `mappings left after the guest reset its devices: ${JSON.stringify(live)}`,
  );
  // A revoked or read-only grant fails its request only: no device ever needed a reset.
  for (const r of report) {
    assert(
      r.controller.needsReset === 0,
      `${r.strategy} went to NEEDS_RESET: ${JSON.stringify(r.controller)}`,
    );
    // Each strategy names the two refused grants for what they are.
    assert(
      r.faults.includes('grant-not-permitted') && r.faults.includes('read-only'),
      `${r.strategy} faults ${JSON.stringify(r.faults)}: expected grant-not-permitted (revoked) and read-only`,
    );
  }
  assert(services.grants.liveMappings() === 0, `${services.grants.liveMappings()} grant mappings left`);
  return `HVM guest ${domid} drove 3 virtio-mmio rng windows with grant DMA from user space in ${seconds.toFixed(0)} s; backend memory per request: grant-map ${map.memoryUsPerRequest.toFixed(0)} us, grant-copy ${copy.memoryUsPerRequest.toFixed(0)} us, persistent-pool ${persistent.memoryUsPerRequest.toFixed(0)} us; ${server.stats.answered} ioreqs`;
}
