// xvio's virtio-gpu behind QEMU's vhost-user-gpu-pci, in a process of its own (as the CLI
// runs one):
//   node --import tsx gpu-backend.ts <socket path> [--width 1024] [--height 768]
// It serves `@xvio/dev-gpu` on the vhost-user socket and QEMU's display protocol on the
// socket QEMU passes with VHOST_USER_GPU_SET_SOCKET. Prints XVIO-BACKEND-READY once
// serving. Commands on stdin, one a line, answered on stdout:
//   snapshot <path>  writes `device.snapshotPng(0)` to <path>:
//                    XVIO-SNAPSHOT <path> <width>x<height>, or XVIO-SNAPSHOT-NONE
//   stats            XVIO-STATS <json> (device metrics, display counters, QEMU's display info)
// SIGTERM closes it cleanly.
import { renameSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { createGpuDevice, type GpuDevice, VhostUserGpuDisplay } from '@xvio/dev-gpu';
import { serveVhostUser } from '@xvio/transport/vhost-user';

function flag(name: string, fallback: number): number {
  const at = process.argv.indexOf(name);
  return at > 0 ? Number(process.argv[at + 1]) : fallback;
}

const socketPath = process.argv[2];
if (!socketPath) {
  console.error('usage: gpu-backend.ts <socket path> [--width W] [--height H]');
  process.exit(2);
}
const width = flag('--width', 1024);
const height = flag('--height', 768);

const log = {
  info: (message: string) => console.error(`backend: ${message}`),
  warn: (message: string) => console.error(`backend warn: ${message}`),
  error: (message: string) => console.error(`backend error: ${message}`),
};

// One device per frontend connection (the server resets it when QEMU stops the device);
// its display outlives it and is re-attached on every GPU_SET_SOCKET.
const display = new VhostUserGpuDisplay({ log });
let device: GpuDevice | undefined;

const server = serveVhostUser({
  socketPath,
  log,
  device: () => {
    device = createGpuDevice({ name: 'gpu0', scanouts: [{ width, height }] }, { host: display });
    return device;
  },
  gpuSocket: (fd) => {
    log.info('display socket from QEMU');
    display.attachFd(fd);
  },
});

createInterface({ input: process.stdin }).on('line', (line) => {
  const [command, argument] = line.trim().split(/\s+/);
  if (command === 'snapshot' && argument) {
    const png = device?.snapshotPng(0);
    const shot = device?.snapshot(0);
    if (!png || !shot) {
      process.stdout.write('XVIO-SNAPSHOT-NONE\n');
      return;
    }
    // Written whole, then renamed: the test never reads half a file.
    writeFileSync(`${argument}.partial`, png);
    renameSync(`${argument}.partial`, argument);
    process.stdout.write(`XVIO-SNAPSHOT ${argument} ${shot.width}x${shot.height}\n`);
  } else if (command === 'stats') {
    const stats = {
      device: device?.metrics() ?? {},
      display: display.counters,
      displayAttached: display.attached,
      qemuDisplays: display.qemuDisplays ?? null,
      qemuProtocolFeatures: display.qemuProtocolFeatures?.toString() ?? null,
      vhostUser: server.metrics(),
    };
    process.stdout.write(`XVIO-STATS ${JSON.stringify(stats)}\n`);
  }
});

process.stdout.write('XVIO-BACKEND-READY\n');
process.on('SIGTERM', () => {
  display.detach();
  void server.close().then(() => process.exit(0));
});
