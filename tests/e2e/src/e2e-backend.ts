// The vhost-user rng backend the end-to-end tests run in a process of its own:
//   node --import tsx e2e-backend.ts <socket path> [--connect]
// --connect dials a QEMU that listens (`-chardev socket,...,server=on`) and dials again
// after a disconnect.
// Prints XVIO-BACKEND-READY once the socket listens; SIGTERM closes it cleanly.
import { createRngDevice } from '@xvio/dev-rng';
import { serveVhostUser } from '@xvio/transport/vhost-user';

const socketPath = process.argv[2];
if (!socketPath) {
  console.error('usage: e2e-backend.ts <socket path>');
  process.exit(2);
}

const log = {
  info: (message: string) => console.error(`backend: ${message}`),
  warn: (message: string) => console.error(`backend warn: ${message}`),
  error: (message: string) => console.error(`backend error: ${message}`),
};

const connect = process.argv.includes('--connect');
const server = serveVhostUser({ socketPath, connect, device: () => createRngDevice({ name: 'rng0' }), log });
process.stdout.write('XVIO-BACKEND-READY\n');
process.on('SIGTERM', () => {
  void server.close().then(() => process.exit(0));
});
