// An xvio vhost-user backend the end-to-end tests run in a process of its own (as the CLI
// runs one):
//   node --import tsx e2e-backend.ts <socket path> [--connect] [--device rng|net] [--tap NAME]
// --connect dials a QEMU that listens (`-chardev socket,...,server=on`) and dials again
// after a disconnect. Prints XVIO-BACKEND-READY once serving; SIGTERM closes it cleanly.
import { createNetHost, NetDevice, netWire } from '@xvio/dev-net';
import { createRngDevice } from '@xvio/dev-rng';
import type { VirtioDevice } from '@xvio/transport';
import { serveVhostUser } from '@xvio/transport/vhost-user';

/**
 * Devices by name. `net` (`@xvio/dev-net` on a TAP) is booted with `-netdev
 * vhost-user,id=n0,chardev=vu -device virtio-net-pci,netdev=n0,vectors=0,romfile=` and
 * `xvio.case=net` (see guest-init.sh and net.test.ts).
 */
const devices: Record<string, () => VirtioDevice> = {
  rng: () => createRngDevice({ name: 'rng0' }),
  net: () => netDevice(),
};

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
const server = serveVhostUser({ socketPath, connect, device, log });
process.stdout.write('XVIO-BACKEND-READY\n');
process.on('SIGTERM', () => {
  // The device's counters (TAP frames and bytes each way, drops) for the test to read.
  if (net) console.error(`backend metrics: ${JSON.stringify(net.metrics())}`);
  void server
    .close()
    .then(() => net?.host.close())
    .then(() => process.exit(0));
});
