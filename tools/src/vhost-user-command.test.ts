import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VIRTIO_F_VERSION_1 } from '@xvio/transport';
import { MockSplitQueue } from '@xvio/transport/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectSetting } from './device-options.js';
import { runForTest } from './testing/run-cli.js';
import { REPO_ROOT, spawnCli } from './testing/spawn-cli.js';

/** The transport's own vhost-user test frontend (QEMU's side of the protocol, with memfds and eventfds). */
interface FrontendModule {
  TestFrontend: new (
    socketPath: string,
  ) => {
    handshake(memory: unknown, options?: { features?: bigint }): Promise<{ status: bigint; table: bigint }>;
    startRing(index: number, ring: MockSplitQueue, fds: { kick: number; call: number }): Promise<bigint[]>;
    close(): void;
  };
  createSharedGuestMemory(size: number): {
    memory: ConstructorParameters<typeof MockSplitQueue>[0];
    close(): void;
  };
  createEventFd(): number;
  signalEventFd(fd: number): void;
  drainEventFd(fd: number): number;
  waitEventFd(fd: number, timeoutMs?: number): Promise<number>;
}
/** VHOST_USER_F_PROTOCOL_FEATURES (vhost-user spec): bit 30 of the feature word. */
const VHOST_USER_F_PROTOCOL_FEATURES = 1n << 30n;

let dir: string;
let frontend: FrontendModule;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'xvio-vu-'));
  // Not a public export of @xvio/transport: the test frontend lives beside the backend's tests.
  const path: string = join(REPO_ROOT, 'packages/transport/src/vhost-user/vhost-user-frontend.ts');
  frontend = (await import(path)) as FrontendModule;
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('xvio vhost-user', () => {
  it('serves rng to a vhost-user frontend and exits after it with --once', async () => {
    const socketPath = join(dir, 'rng.sock');
    const cli = spawnCli([
      'vhost-user',
      'rng',
      '--socket-path',
      socketPath,
      '--once',
      '--set',
      'source=seeded:7',
    ]);
    await cli.waitFor(/serving rng \(rng0\) on /);
    const guest = frontend.createSharedGuestMemory(1 << 20);
    const kick = frontend.createEventFd();
    const call = frontend.createEventFd();
    const connection = new frontend.TestFrontend(socketPath);
    try {
      const handshake = await connection.handshake(guest, {
        features: VIRTIO_F_VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES,
      });
      expect(handshake.status).toBe(0n);
      const queue = new MockSplitQueue(guest.memory, { size: 16, seed: 3 });
      expect(await connection.startRing(0, queue, { kick, call })).toEqual([0n, 0n, 0n, 0n, 0n, 0n]);
      // The backend signals a call fd it is given for a running ring: start from a quiet one.
      frontend.drainEventFd(call);
      const { buffers } = queue.addChain([{ writable: true, length: 512 }]);
      frontend.signalEventFd(kick);
      await frontend.waitEventFd(call);
      const used = queue.takeUsed();
      expect(used).toHaveLength(1);
      expect(used[0]?.length).toBe(512);
      const bytes = guest.memory.bytes.subarray(buffers[0]!.offset, buffers[0]!.offset + 512);
      // The driver's fill pattern (0xee) is gone: the device wrote entropy over it.
      expect(bytes.filter((byte) => byte === 0xee).length).toBeLessThan(32);
    } finally {
      connection.close();
    }
    expect(await cli.exited()).toBe(0);
    expect(existsSync(socketPath)).toBe(false);
    guest.close();
  });

  it('serves several sockets from one process and removes them on SIGTERM', async () => {
    const first = join(dir, 'a.sock');
    const second = join(dir, 'b.sock');
    const cli = spawnCli(['vhost-user', 'console', '-s', first, '-s', second, '--metrics-port', '0']);
    try {
      const match = await cli.waitFor(/metrics: http:\/\/127\.0\.0\.1:(\d+)\/metrics/);
      expect(cli.stdout()).toContain(
        `serving console (console0) on ${first}\nserving console (console1) on ${second}\n`,
      );
      expect(existsSync(first) && existsSync(second)).toBe(true);
      const text = await (await fetch(`http://127.0.0.1:${match[1]}/metrics`)).text();
      expect(text).toContain('# TYPE xvio_transport_counter gauge');
    } finally {
      cli.child.kill('SIGTERM');
    }
    expect(await cli.exited()).toBe(0);
    expect(existsSync(first) || existsSync(second)).toBe(false);
  });

  it('validates device options once, naming each --set field', async () => {
    const result = await runForTest([
      'vhost-user',
      'rng',
      '-s',
      join(dir, 'x.sock'),
      '--set',
      'queueSize=100',
      '--set',
      'colour=red',
    ]);
    expect(result).toEqual({
      status: 3,
      stdout: '',
      stderr:
        'xvio: invalid options for device rng:\n  --set queueSize: queueSize must be a power of two\n  --set colour: unknown field; allowed fields: name, source, maxBytes, periodMs, maxBytesPerRequest, queueSize\n',
    });
  });

  it('rejects bad flags with exact messages', async () => {
    expect((await runForTest(['vhost-user', 'sound', '-s', 'x.sock'])).stderr).toBe(
      "error: command-argument value 'sound' is invalid for argument 'device'. allowed: console, rng, net, gpu, template.\n(run 'xvio vhost-user --help' for usage)\n",
    );
    expect((await runForTest(['vhost-user', 'rng'])).stderr).toBe(
      "error: required option '-s, --socket-path <path>' not specified\n(run 'xvio vhost-user --help' for usage)\n",
    );
    expect((await runForTest(['vhost-user', 'rng', '-s', 'x.sock', '--set', 'novalue'])).stderr).toBe(
      "error: option '--set <key=value>' argument 'novalue' is invalid. expected key=value.\n(run 'xvio vhost-user --help' for usage)\n",
    );
    expect(
      (await runForTest(['vhost-user', 'rng', '-s', 'x.sock', '-s', 'x.sock'], { cwd: dir })).stderr,
    ).toBe(`xvio: --socket-path ${join(dir, 'x.sock')} is given twice\n`);
  });
});

describe('--set', () => {
  it('nests dotted keys and reads JSON values', () => {
    let options = collectSetting('queueSize=128');
    options = collectSetting('host.type=switch', options);
    options = collectSetting('host.switch=lan', options);
    options = collectSetting('linkUp=false', options);
    options = collectSetting('mac=52:54:00:12:34:56', options);
    expect(options).toEqual({
      queueSize: 128,
      host: { type: 'switch', switch: 'lan' },
      linkUp: false,
      mac: '52:54:00:12:34:56',
    });
    expect(() => collectSetting('a..b=1')).toThrow("'a..b' is not an option name");
  });
});
