// An xvio vhost-user backend the end-to-end tests run in a process of its own (as the CLI
// runs one):
//   node --import tsx e2e-backend.ts <socket path> [--connect] [--device rng|net] [--tap NAME] [--timing] [--poll-us N]
// --connect dials a QEMU that listens (`-chardev socket,...,server=on`) and dials again
// after a disconnect. Prints XVIO-BACKEND-READY once serving; SIGTERM closes it cleanly.
import { createNetHost, NetDevice, netWire } from '@xvio/dev-net';
import { createRngDevice, type RngDevice } from '@xvio/dev-rng';
import type { VirtioDevice } from '@xvio/transport';
import { serveVhostUser } from '@xvio/transport/vhost-user';

/**
 * Devices by name. `net` (`@xvio/dev-net` on a TAP) is booted with `-netdev
 * vhost-user,id=n0,chardev=vu -device virtio-net-pci,netdev=n0,vectors=0,romfile=` and
 * `xvio.case=net` (see guest-init.sh and net.test.ts).
 */
const devices: Record<string, () => VirtioDevice> = {
  rng: () => {
    rng = createRngDevice({ name: 'rng0' });
    return timing ? timed(rng) : rng;
  },
  net: () => netDevice(),
};

// --timing (the rng benchmark): how long each kick spends in the device, from the moment the
// backend hands the kick to the device to the return of the call write (notify() of the rng
// device serves the ring and writes the call eventfd), and the time between kicks as the
// backend sees them (one guest round trip per 64-byte request). Two performance.now() calls
// per kick into preallocated arrays: no allocation on the request path.
const timing = process.argv.includes('--timing');
/** The rng device of the latest connection (its counters are printed on SIGTERM). */
let rng: RngDevice | undefined;
const TIMING_SLOTS = 1 << 17;
const kickStarts = new Float64Array(TIMING_SLOTS);
const kickServices = new Float64Array(TIMING_SLOTS);
let kicksTimed = 0;
let cpuAtFirstKick: NodeJS.CpuUsage | undefined;

function timed(device: VirtioDevice): VirtioDevice {
  const notify = device.notify.bind(device);
  device.notify = (queueIndex: number) => {
    const start = performance.now();
    if (kicksTimed === 0) cpuAtFirstKick = process.cpuUsage();
    notify(queueIndex);
    const slot = kicksTimed++ & (TIMING_SLOTS - 1);
    kickStarts[slot] = start;
    kickServices[slot] = performance.now() - start;
  };
  return device;
}

function percentile(sorted: Float64Array, fraction: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * fraction))] ?? 0;
}

/** Medians and tails in microseconds; the first 100 kicks (driver start) are left out. */
function timingReport(): Record<string, number> {
  const count = Math.min(kicksTimed, TIMING_SLOTS);
  const first = kicksTimed > TIMING_SLOTS ? 0 : Math.min(100, count);
  const services = kickServices.slice(first, count).sort();
  const cycles = new Float64Array(Math.max(0, count - first - 1));
  for (let i = first + 1; i < count; i++) cycles[i - first - 1] = kickStarts[i]! - kickStarts[i - 1]!;
  cycles.sort();
  const cpu = cpuAtFirstKick ? process.cpuUsage(cpuAtFirstKick) : { user: 0, system: 0 };
  const round = (value: number) => Math.round(value * 100) / 100;
  return {
    kicks: kicksTimed,
    serviceMedianUs: round(percentile(services, 0.5) * 1000),
    serviceP90Us: round(percentile(services, 0.9) * 1000),
    cycleMedianUs: round(percentile(cycles, 0.5) * 1000),
    cycleP90Us: round(percentile(cycles, 0.9) * 1000),
    cycleMeanUs: round((cycles.reduce((sum, value) => sum + value, 0) / Math.max(1, cycles.length)) * 1000),
    cpuUserUsPerKick: round(cpu.user / Math.max(1, kicksTimed)),
    cpuSystemUsPerKick: round(cpu.system / Math.max(1, kicksTimed)),
  };
}

// net: one device for the process, reused by every connection (the server resets it when a
// frontend leaves), because its TAP fd lives as long as the device: a second device would
// find the interface busy. `--tap` names an interface the test created (persistent, inside
// the network namespace this process runs in).
//
// Under vhost-user the frontend keeps the control queue: QEMU forwards to the backend only the
// acked bits of its vhost feature list, which holds GUEST_ANNOUNCE (and MQ) but not CTRL_VQ.
// `controlQueue: 'frontend'` tells the device so (the CLI's `xvio vhost-user net` does the same).
let net: NetDevice | undefined;
function netDevice(): NetDevice {
  const tap = process.argv.indexOf('--tap');
  const ifname = tap > 0 ? process.argv[tap + 1] : undefined;
  net ??= new NetDevice({
    name: 'net0',
    // QEMU's `-device virtio-net-pci,mac=` is what the guest sees; this one is never read.
    mac: netWire.parseMac('52:54:00:12:34:56')!,
    host: createNetHost({ type: 'tap', ...(ifname ? { ifname } : {}) }),
    controlQueue: 'frontend',
  });
  return net;
}

const socketPath = process.argv[2];
const deviceFlag = process.argv.indexOf('--device');
const deviceName = deviceFlag > 0 ? process.argv[deviceFlag + 1] : 'rng';
const device = deviceName === undefined ? undefined : devices[deviceName];
if (!socketPath || !device) {
  console.error(
    `usage: e2e-backend.ts <socket path> [--connect] [--device ${Object.keys(devices).join('|')}]`,
  );
  process.exit(2);
}

const log = {
  info: (message: string) => console.error(`backend: ${message}`),
  warn: (message: string) => console.error(`backend warn: ${message}`),
  error: (message: string) => console.error(`backend error: ${message}`),
};

// Open the TAP before READY, so a missing interface fails the start, not the first frontend.
if (deviceName === 'net') netDevice();

const connect = process.argv.includes('--connect');
const pollFlag = process.argv.indexOf('--poll-us');
const pollUs = pollFlag > 0 ? Number(process.argv[pollFlag + 1]) : 0;
const server = serveVhostUser({ socketPath, connect, device, log, pollUs });
process.stdout.write('XVIO-BACKEND-READY\n');
process.on('SIGTERM', () => {
  // The device's counters (TAP frames and bytes each way, drops) for the test to read.
  if (net) console.error(`backend metrics: ${JSON.stringify(net.metrics())}`);
  console.error(`backend vhost-user: ${JSON.stringify(server.metrics())}`);
  if (rng) console.error(`backend rng: ${JSON.stringify(rng.metrics())}`);
  if (timing) console.error(`backend timing: ${JSON.stringify(timingReport())}`);
  void server
    .close()
    .then(() => net?.host.close())
    .then(() => process.exit(0));
});
