// Runs the real-Xen rig once (all scenarios) and writes bench/results/xen-e2e.json and .md
// from its XVIO-MEASURE lines. Absolute numbers are QEMU-TCG-slow; the bounds beside them
// (a dom0 memcpy, an event channel round trip on the same machine) give the ratios.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runXenRig } from './xen-rig.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const result = await runXenRig();
if (!result.done) {
  console.error(result.log.slice(-6000));
  throw new Error('dom0 did not finish');
}
const value = (name: string) => result.measures.find((m) => m.name === name)?.value;
const memcpyUs = value('persistent-memcpy-4k');
const memcpy = memcpyUs
  ? { name: 'dom0 memcpy 4 KiB under TCG (MB/s)', value: Number((4096 / memcpyUs).toFixed(1)) }
  : undefined;
const evtchn = value('evtchn-notify-to-delivery-median') ?? value('evtchn-notify-to-delivery');
const evtchnBound = evtchn
  ? { name: 'dom0 event channel notify to delivery (us)', value: evtchn }
  : undefined;

const describe: Record<string, { label: string; bound?: { name: string; value: number } | undefined }> = {
  'grant-map-unmap-4k': {
    label: 'grant map+unmap per 4 KiB request (real Xen)',
    bound: memcpyUs ? { name: 'persistent mapping memcpy 4 KiB (us)', value: memcpyUs } : undefined,
  },
  'grant-copy-4k': {
    label: 'grant copy per 4 KiB request (real Xen)',
    bound: memcpyUs ? { name: 'persistent mapping memcpy 4 KiB (us)', value: memcpyUs } : undefined,
  },
  'persistent-memcpy-4k': { label: 'persistent mapping, memcpy per 4 KiB' },
  'evtchn-notify-to-delivery': {
    label: 'event channel notify to delivery in Node (dom0 loopback), first delivery',
  },
  'evtchn-notify-to-delivery-median': {
    label: 'event channel notify to delivery in Node (dom0 loopback), median of 51',
  },
  'pci-config-dword-read': {
    label:
      'scenario 1: HVM guest PCI config dword read via xvio ioreq server (ioreq round trip, upper bound)',
    bound: evtchnBound,
  },
  'hvm-guest-lifetime': { label: 'scenario 1: HVM guest create to power off' },
  'pci-rng-throughput': {
    label: 'scenario 1: HVM guest reads 16 KiB from /dev/hwrng over xvio PCI (64-byte requests), MB/s',
    bound: memcpy,
  },
  'pci-net-ping-rtt': {
    label: 'virtio-net over PCI: HVM guest ping to dom0 over xvio + TAP, average of 5',
    bound: evtchnBound,
  },
  'pci-net-tcp-guest-to-dom0': {
    label: 'virtio-net over PCI: TCP 2 MiB guest to dom0 (TAP), MB/s',
    bound: memcpy,
  },
  'pci-net-tcp-dom0-to-guest': {
    label: 'virtio-net over PCI: TCP 2 MiB dom0 (TAP) to guest, MB/s',
    bound: memcpy,
  },
  'pci-restart-backend-ready': {
    label: 'scenario 4: PCI backend SIGKILL to a new process serving (adopted ioreq server, 2 s of it dead)',
  },
  'pci-restart-guest-recovery': {
    label: 'scenario 4: PCI backend SIGKILL to the guest completing its next rng read',
  },
  'pci-functions-guest-lifetime': {
    label: 'HVM guest with net, console and restarted rng: create to power off',
  },
  'mmio-grant-map-request': {
    label: 'scenario 2: virtio-mmio rng 4 KiB request round trip in the guest, grant-map (median)',
  },
  'mmio-grant-copy-request': {
    label: 'scenario 2: virtio-mmio rng 4 KiB request round trip in the guest, grant-copy (median)',
  },
  'mmio-persistent-pool-request': {
    label: 'scenario 2: virtio-mmio rng 4 KiB request round trip in the guest, persistent-pool (median)',
  },
  'mmio-grant-map-backend-memory': {
    label: 'scenario 2: backend map+release per 4 KiB request, grant-map (median)',
    bound: memcpyUs ? { name: 'persistent mapping memcpy 4 KiB (us)', value: memcpyUs } : undefined,
  },
  'mmio-grant-copy-backend-memory': {
    label: 'scenario 2: backend map+release per 4 KiB request, grant-copy (median)',
    bound: memcpyUs ? { name: 'persistent mapping memcpy 4 KiB (us)', value: memcpyUs } : undefined,
  },
  'mmio-persistent-pool-backend-memory': {
    label: 'scenario 2: backend map+release per 4 KiB request, persistent-pool (median)',
    bound: memcpyUs ? { name: 'persistent mapping memcpy 4 KiB (us)', value: memcpyUs } : undefined,
  },
  'xenbus-handshake': { label: 'scenario 3: XenBus handshake, frontend InitWait to Connected (PVH guest)' },
  'xenbus-rng-round-trip': {
    label: 'scenario 3: XenBus virtio-rng 64-byte request round trip (guest notify to used)',
    bound: evtchnBound,
  },
  'xenbus-rng-throughput': {
    label: 'scenario 3: XenBus virtio-rng throughput, 16 x 4 KiB in flight, grant-map',
    bound: memcpy,
  },
  'xenbus-backend-restart-to-streaming': {
    label: 'scenario 4: backend restart to guest streaming again (incl. garbage + reset)',
  },
  'xl-destroy-mid-transfer': { label: 'scenario 4: xl destroy of a guest mid-transfer' },
  'xenbus-destroy-to-backend-cleanup': {
    label: 'scenario 4: xl destroy to the XenBus backend having cleaned up by itself',
  },
};

const results = result.measures
  .filter(
    (m, index, all) =>
      describe[m.name] && Number.isFinite(m.value) && all.findIndex((o) => o.name === m.name) === index,
  )
  .map((m) => {
    const entry = describe[m.name];
    return {
      name: `${entry?.label} [${m.name}]`,
      value: m.value,
      unit: m.unit,
      ...(entry?.bound ? { bound: entry.bound } : {}),
    };
  });
const cpu = cpus();
const machine = `${cpu[0]?.model ?? 'unknown cpu'}, ${cpu.length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB, node ${process.version}; Xen 4.17 under QEMU TCG (2 vCPUs, 2 GiB)`;
const date = new Date().toISOString();
const out = join(root, 'bench', 'results');
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'xen-e2e.json'), `${JSON.stringify({ machine, date, results }, null, 2)}\n`);
const md = [
  '# xen-e2e: xvio on a real Xen 4.17 hypervisor (QEMU TCG)',
  '',
  `${machine}, ${date}. Run: \`pnpm --filter @xvio/xen-e2e bench\` (boots the rig once, all scenarios, ${result.seconds.toFixed(0)} s).`,
  'Everything runs under full emulation, so absolute numbers are slow; compare with the bound on the same line.',
  '',
  '| measurement | value | unit | bound |',
  '|---|---:|---|---|',
  ...results.map(
    (r) =>
      `| ${r.name} | ${r.value} | ${r.unit} | ${'bound' in r && r.bound ? `${r.bound.name}: ${r.bound.value}` : ''} |`,
  ),
  '',
  `Scenarios passed: ${result.passed.map((p) => p.name).join(', ')}; failed: ${result.failed.map((f) => f.name).join(', ') || 'none'}.`,
  '',
];
writeFileSync(join(out, 'xen-e2e.md'), md.join('\n'));
console.log(md.join('\n'));
if (result.failed.length > 0) process.exitCode = 1;
