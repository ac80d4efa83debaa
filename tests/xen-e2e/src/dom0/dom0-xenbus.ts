// Scenarios 3 and 4 (XenBus part): a PVH guest runs a user-space virtio-xenbus frontend
// (src/domu/domu-xenbus.ts, Node inside the guest) against xvio's XenbusBackend in dom0,
// over the real xenstored, real event channels and real grant tables.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createRngDevice } from '@xvio/dev-rng';
import { createGuestMemory, type XenGuestMemory } from '@xvio/grant-pool';
import { VIRTIO_F_ACCESS_PLATFORM } from '@xvio/transport';
import { addXenbusDevice, XenbusBackend, xenbusStateName } from '@xvio/transport/xenbus';
import type { XenServices } from '@xvio/xen';
import { assert, diagnose, domainNames, guestLines, readLog, relayGuest, sleep, xl } from './dom0-common.js';

const GUEST_INITRAMFS = '/tmp/domu-node.cpio';

/**
 * The guest's initramfs is assembled here in dom0 from dom0's own files (busybox, the Xen
 * guest modules, node, its libraries, koffi and the guest bundle): the host build stays small.
 */
export function buildNodeGuestInitramfs(): number {
  const script = `
set -e
g=/tmp/domu-node-root
rm -rf $g; mkdir -p $g/bin $g/proc $g/sys $g/dev $g/tmp $g/lib/modules $g/lib64 $g/lib/x86_64-linux-gnu $g/usr/lib/x86_64-linux-gnu $g/opt/xvio $g/etc
cp /bin/busybox $g/bin/busybox && ln -s busybox $g/bin/sh
for m in xen-evtchn xen-gntdev xen-gntalloc; do cp /lib/modules/$m.ko $g/lib/modules/; done
cp /usr/lib/xen-4.17/bin/node $g/bin/node
cp /lib64/ld-linux-x86-64.so.2 $g/lib64/
for l in libc.so.6 libdl.so.2 libm.so.6 libgcc_s.so.1 libpthread.so.0 libstdc++.so.6; do cp /lib/x86_64-linux-gnu/$l $g/lib/x86_64-linux-gnu/; done
cp /usr/lib/x86_64-linux-gnu/libxen*.so* $g/usr/lib/x86_64-linux-gnu/
cp -r /opt/xvio/node_modules $g/opt/xvio/
cp /opt/xvio/domu-xvio.mjs $g/opt/xvio/
cp /opt/xvio/domu-node-init.sh $g/init
chmod +x $g/init
cd $g && find . | cpio -o -H newc > ${GUEST_INITRAMFS} 2>/dev/null
`;
  execFileSync('sh', ['-c', script], { stdio: ['ignore', 'inherit', 'inherit'] });
  return Number(execFileSync('sh', ['-c', `wc -c < ${GUEST_INITRAMFS}`], { encoding: 'utf8' }).trim());
}

function writeGuestConfig(name: string, mode: string): string {
  const path = `/tmp/${name}.cfg`;
  writeFileSync(
    path,
    [
      `name="${name}"`,
      'type="pvh"',
      'kernel="/root/vmlinuz"',
      `ramdisk="${GUEST_INITRAMFS}"`,
      `cmdline="console=hvc0 rdinit=/init quiet xvio.mode=${mode}"`,
      'memory=512',
      'vcpus=1',
      'on_poweroff="destroy"',
      'on_crash="destroy"',
      // Under TCG (SVM without NRIPS) RDTSCP cannot be emulated: keep it from the guest. AVX
      // too: PVH guests here intermittently took SIGILL on AVX instructions (vpxor in busybox's
      // glibc string functions), which killed init.
      'tsc_mode="native"',
      'cpuid="host,rdtscp=0,avx=0,avx2=0"',
      '',
    ].join('\n'),
  );
  return path;
}

interface Backend {
  backend: XenbusBackend;
  memory: XenGuestMemory;
  device: ReturnType<typeof createRngDevice>;
}

async function startBackend(services: XenServices, domid: number, errors: string[]): Promise<Backend> {
  // The frontend's rings and buffers are grant DMA addresses: map them per request.
  const memory = createGuestMemory({ strategy: 'grant-map', domid }, services);
  const device = createRngDevice({});
  const backend = new XenbusBackend({
    services,
    backendDomid: 0,
    frontendDomid: domid,
    devid: 0,
    device,
    memory,
    platformFeatures: VIRTIO_F_ACCESS_PLATFORM,
    onError: (error) => errors.push(error instanceof Error ? error.message : String(error)),
  });
  await backend.start();
  return { backend, memory, device };
}

async function until(
  what: string,
  ms: number,
  condition: () => boolean | Promise<boolean>,
  progress?: () => string,
): Promise<void> {
  const deadline = Date.now() + ms;
  let lastReport = Date.now();
  while (!(await condition())) {
    if (Date.now() > deadline)
      throw new Error(`timeout after ${ms / 1000} s: ${what}${progress ? ` (${progress()})` : ''}`);
    if (progress && Date.now() - lastReport > 20_000) {
      lastReport = Date.now();
      console.log(`XVIO-STEP waiting for ${what}: ${progress()}`);
    }
    await sleep(250);
  }
}

const served = (device: { metrics(): { bytes?: number } }): number => device.metrics().bytes ?? 0;

function consoleLog(name: string): string {
  return `/var/log/xen/console/guest-${name}.log`;
}

/** Scenario 3: handshake, data, close over the real xenstored, event channels and grants. */
export async function scenarioXenbus(services: XenServices): Promise<string> {
  const name = 'xvio-pvh';
  const created = performance.now();
  const step = (what: string) =>
    console.log(`XVIO-STEP xenbus ${((performance.now() - created) / 1000).toFixed(1)} s ${what}`);
  xl('create', '-p', writeGuestConfig(name, 'basic'));
  const domid = Number(xl('domid', name).trim());
  const paths = await addXenbusDevice(services.store, 0, domid, 0);
  const errors: string[] = [];
  const { backend, memory, device } = await startBackend(services, domid, errors);
  step(`domain ${domid} created, backend in ${xenbusStateName(backend.xenbusState)} at ${paths.backend}`);
  xl('unpause', name);
  const log = consoleLog(name);
  try {
    await until(
      'the guest to power off',
      400_000,
      () => !domainNames().includes(name),
      () =>
        `backend ${xenbusStateName(backend.xenbusState)}, counters ${JSON.stringify(backend.counters)}, ${served(device)} bytes, guest: ${guestLines(readLog(log)).slice(-2).join(' | ')}`,
    );
  } catch (error) {
    // The guest never powered off: its whole console (kernel lines too) and Xen's log, while
    // the domain still exists.
    diagnose(log);
    throw error;
  } finally {
    if (domainNames().includes(name)) xl('destroy', name);
  }
  const lines = guestLines(readLog(log));
  relayGuest(lines);
  if (!lines.some((l) => l.startsWith('DOMU-PASS xenbus-close'))) diagnose(log);
  await backend.settled();
  const counters = { ...backend.counters };
  const finalState = backend.xenbusState;
  // The guest powered off and was destroyed: the backend may already have found its frontend
  // gone and removed its nodes (X.10.1); otherwise this is the toolstack removing the device.
  await backend.close();
  if (await services.store.exists(paths.backend)) await services.store.rm(paths.backend);
  const live = services.grants.liveMappings();
  console.log(
    `XVIO-NOTE xenbus backend counters ${JSON.stringify(counters)}, memory ${JSON.stringify(memory.counters)}, errors ${JSON.stringify(errors)}`,
  );
  assert(
    lines.some((l) => l.startsWith('DOMU-PASS xenbus-data')),
    `no data moved: ${lines.join(' | ')}`,
  );
  assert(
    lines.some((l) => l.startsWith('DOMU-PASS xenbus-close')),
    `no clean close: ${lines.join(' | ')}`,
  );
  assert(
    !lines.some((l) => l.startsWith('DOMU-FAIL')),
    `guest failure: ${lines.filter((l) => l.startsWith('DOMU-FAIL')).join(' | ')}`,
  );
  assert(
    counters.connects === 1 && counters.disconnects >= 1,
    `backend counters ${JSON.stringify(counters)}`,
  );
  assert(live === 0, `${live} grant mappings left in dom0`);
  return `PVH guest ${domid} connected over XenBus (backend ended ${xenbusStateName(finalState)}), read ${served(device)} bytes of virtio-rng through ${counters.kicks} kicks and ${counters.notifications} notifications; no mapping left`;
}

/**
 * Scenario 4 on XenBus: the backend is killed and restarted under a connected guest, the guest
 * writes garbage to its ring, then the guest is destroyed mid-transfer.
 */
export async function scenarioXenbusRobust(services: XenServices): Promise<string> {
  const name = 'xvio-pvh-robust';
  const created = performance.now();
  const step = (what: string) =>
    console.log(`XVIO-STEP robust ${((performance.now() - created) / 1000).toFixed(1)} s ${what}`);
  xl('create', '-p', writeGuestConfig(name, 'robust'));
  const domid = Number(xl('domid', name).trim());
  const paths = await addXenbusDevice(services.store, 0, domid, 0);
  const errors: string[] = [];
  const first = await startBackend(services, domid, errors);
  xl('unpause', name);
  const log = consoleLog(name);
  const progress = (b: Backend) => () =>
    `backend ${xenbusStateName(b.backend.xenbusState)}, counters ${JSON.stringify(b.backend.counters)}, ${served(b.device)} bytes, guest: ${guestLines(readLog(log)).slice(-2).join(' | ')}`;
  let second: Backend | undefined;
  let destroyStart = 0;
  try {
    await until(
      'the first connection to move 64 KiB',
      400_000,
      () => first.backend.counters.connects >= 1 && served(first.device) >= 64 * 1024,
      progress(first),
    );
    step(`connected, ${served(first.device)} bytes served; killing the backend`);
    // A backend process that died: its connection state is gone, nothing was closed politely.
    first.backend.abandon();
    const liveAfterAbandon = services.grants.liveMappings();
    second = await startBackend(services, domid, errors);
    const restarted = performance.now();
    step(
      `new backend in ${xenbusStateName(second.backend.xenbusState)} (${liveAfterAbandon} mappings left by the dead one)`,
    );
    const b2 = second;
    await until(
      'the guest to reconnect, reset after garbage and stream',
      300_000,
      () => readLog(log).includes('DOMU-STREAMING') && b2.backend.counters.connects >= 2,
      progress(b2),
    );
    console.log(
      `XVIO-MEASURE xenbus-backend-restart-to-streaming ${((performance.now() - restarted) / 1000).toFixed(2)} s`,
    );
    const streamingFrom = served(b2.device);
    await until(
      'bytes to flow after the reset',
      120_000,
      () => served(b2.device) > streamingFrom + 32 * 1024,
      progress(b2),
    );
    step(`streaming (${served(b2.device)} bytes); destroying the guest mid-transfer`);
    destroyStart = performance.now();
    xl('destroy', name);
    console.log(
      `XVIO-MEASURE xl-destroy-mid-transfer ${((performance.now() - destroyStart) / 1000).toFixed(2)} s`,
    );
  } finally {
    if (domainNames().includes(name)) xl('destroy', name);
  }
  const lines = guestLines(readLog(log));
  relayGuest(lines, 'robust-');
  if (!lines.some((l) => l.startsWith('DOMU-PASS reset-recovered'))) diagnose(log);
  const b2 = second;
  assert(b2, 'the backend was never restarted');
  // dom0 only ran `xl destroy`: the backend must notice by itself (X.10.1) and clean up.
  await until(
    'the backend to notice its frontend is gone and clean up by itself',
    30_000,
    () => b2.backend.gone !== undefined,
    progress(b2),
  );
  await b2.backend.settled();
  const cleanupSeconds = (performance.now() - destroyStart) / 1000;
  console.log(`XVIO-MEASURE xenbus-destroy-to-backend-cleanup ${cleanupSeconds.toFixed(2)} s`);
  const heldAfterDestroy = services.grants.liveMappings();
  const portsAfterDestroy = b2.backend.eventChannelPorts;
  const stateAfterDestroy = b2.backend.xenbusState;
  const namesAfterDestroy = domainNames();
  const parentLeft = await services.store.exists(`/local/domain/0/backend/virtio-xenbus/${domid}`);
  await until(
    'the destroyed domain to be gone from xl list',
    30_000,
    () => !domainNames().some((n) => n === name || n === '(null)'),
    () => domainNames().join(','),
  );
  const live = services.grants.liveMappings();
  const nodesLeft =
    (await services.store.exists(paths.backend)) || (await services.store.exists(paths.frontend));
  console.log(
    `XVIO-NOTE robust after destroy: backend found its frontend gone (${b2.backend.gone}) ${cleanupSeconds.toFixed(2)} s after xl destroy and cleaned up unaided: state ${xenbusStateName(stateAfterDestroy)}, ${heldAfterDestroy} mappings, ${portsAfterDestroy.length} event channels, xl list ${namesAfterDestroy.join(',')}; counters ${JSON.stringify(b2.backend.counters)}, memory ${JSON.stringify(b2.memory.counters)}, errors ${JSON.stringify(errors.slice(0, 5))}`,
  );
  for (const check of ['backend-restart', 'garbage-needs-reset', 'reset-recovered']) {
    assert(
      lines.some((l) => l.startsWith(`DOMU-PASS ${check}`)),
      `guest did not pass ${check}: ${lines.join(' | ')}`,
    );
  }
  assert(
    !lines.some((l) => l.startsWith('DOMU-FAIL')),
    `guest failure: ${lines.filter((l) => l.startsWith('DOMU-FAIL')).join(' | ')}`,
  );
  assert(
    b2.backend.controller.metrics.needsReset >= 1,
    `the garbage did not put the device in NEEDS_RESET: ${JSON.stringify(b2.backend.controller.metrics)}`,
  );
  assert(b2.backend.counters.frontendGone === 1, `counters ${JSON.stringify(b2.backend.counters)}`);
  assert(heldAfterDestroy === 0, `${heldAfterDestroy} grant mappings left after the backend's cleanup`);
  assert(portsAfterDestroy.length === 0, `event channels left bound: ${portsAfterDestroy.join(',')}`);
  assert(live === 0, `${live} grant mappings left in dom0`);
  assert(!nodesLeft && !parentLeft, 'backend or frontend xenstore nodes left');
  return `backend killed and restarted under a connected guest (guest set up again), garbage avail.idx -> NEEDS_RESET -> driver reset -> served again, guest destroyed mid-transfer: the backend noticed by itself (${b2.backend.gone}) in ${cleanupSeconds.toFixed(2)} s and left 0 mappings, 0 event channels and no xenstore nodes, xl list clean`;
}
