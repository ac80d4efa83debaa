import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { VirtioDevice } from '../virtio-device.js';
import { createEventFd, drainEventFd, signalEventFd, TestFrontend } from './vhost-user-frontend.js';
import { closeFd } from './vhost-user-libc.js';
import { serveVhostUser, type VhostUserServer } from './vhost-user-server.js';
import { Request } from './vhost-user-wire.js';

function nullDevice(): VirtioDevice {
  return {
    deviceType: 16,
    name: 'gpu0',
    queueMaxSizes: [64, 64],
    features: 0n,
    configSize: 0,
    readConfig() {},
    writeConfig() {},
    activate() {},
    notify() {},
    reset() {},
  };
}

let dir: string;
let servers: VhostUserServer[];
let frontends: TestFrontend[];
let fds: number[];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'xvio-vu-gpu-'));
  servers = [];
  frontends = [];
  fds = [];
});

afterEach(async () => {
  for (const frontend of frontends) frontend.close();
  for (const server of servers) await server.close();
  for (const fd of fds) closeFd(fd);
  rmSync(dir, { recursive: true, force: true });
});

function setUp(gpuSocket?: (fd: number, device: VirtioDevice) => void) {
  const socketPath = join(dir, 'gpu.sock');
  const device = nullDevice();
  servers.push(serveVhostUser({ socketPath, device: () => device, gpuSocket }));
  const frontend = new TestFrontend(socketPath);
  frontends.push(frontend);
  const fd = createEventFd();
  fds.push(fd);
  return { frontend, fd, device };
}

const openFds = () => readdirSync('/proc/self/fd').length;

describe('VHOST_USER_GPU_SET_SOCKET (request 33)', () => {
  it("hands the frontend's fd and the connection's device to the gpuSocket handler", async () => {
    const received: { fd: number; device: VirtioDevice }[] = [];
    const { frontend, fd, device } = setUp((taken, owner) => {
      received.push({ fd: taken, device: owner });
    });
    expect(await frontend.acked(Request.GPU_SET_SOCKET, undefined, [fd])).toBe(0n);
    expect(received).toHaveLength(1);
    expect(received[0]!.device).toBe(device);
    // The handler owns a descriptor of the same object: a write through it reaches ours.
    fds.push(received[0]!.fd);
    signalEventFd(received[0]!.fd);
    expect(drainEventFd(fd)).toBe(1);
  });

  it('is refused, and its fd closed, without a handler', async () => {
    const { frontend, fd } = setUp();
    // The first exchange sets up what every connection keeps (poller); count after it.
    await frontend.getU64(Request.GET_FEATURES);
    const before = openFds();
    expect(await frontend.acked(Request.GPU_SET_SOCKET, undefined, [fd])).toBe(1n);
    expect(openFds()).toBe(before);
    expect(frontend.ended).toBe(false);
  });

  it('ends the connection when the fd is missing (as for every fd-carrying request); the handler is not called', async () => {
    let calls = 0;
    const { frontend } = setUp(() => {
      calls++;
    });
    frontend.send(Request.GPU_SET_SOCKET);
    expect((await frontend.whenEnded()).reason).toBe('eof');
    expect(calls).toBe(0);
  });
});
