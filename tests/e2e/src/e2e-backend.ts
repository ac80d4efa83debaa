// An xvio vhost-user backend the end-to-end tests run in a process of its own (as the CLI
// runs one):
//   node --import tsx e2e-backend.ts <socket path> [--connect] [--device rng]
// --connect dials a QEMU that listens (`-chardev socket,...,server=on`) and dials again
// after a disconnect. Prints XVIO-BACKEND-READY once serving; SIGTERM closes it cleanly.
import { createRngDevice } from '@xvio/dev-rng';
import type { VirtioDevice } from '@xvio/transport';
import { serveVhostUser } from '@xvio/transport/vhost-user';

/**
 * Devices by name. The hook for virtio-net: add `net: () => <@xvio/dev-net device>` here
 * and boot the guest with `-netdev vhost-user,id=n0,chardev=vu -device
 * virtio-net-pci,netdev=n0,vectors=0,romfile=` and `xvio.case=net` (see guest-init.sh).
 */
const devices: Record<string, () => VirtioDevice> = {
  rng: () => createRngDevice({ name: 'rng0' }),
};

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

const connect = process.argv.includes('--connect');
const server = serveVhostUser({ socketPath, connect, device, log });
process.stdout.write('XVIO-BACKEND-READY\n');
process.on('SIGTERM', () => {
  void server.close().then(() => process.exit(0));
});
