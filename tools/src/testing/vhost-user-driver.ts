import { join } from 'node:path';
import { VIRTIO_F_VERSION_1 } from '@xvio/transport';
import { MockSplitQueue } from '@xvio/transport/testing';
import { REPO_ROOT } from './spawn-cli.js';

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

async function loadFrontend(): Promise<FrontendModule> {
  // Not a public export of @xvio/transport: the test frontend lives beside the backend's tests.
  const path: string = join(REPO_ROOT, 'packages/transport/src/vhost-user/vhost-user-frontend.ts');
  return (await import(path)) as FrontendModule;
}

export interface EntropyRequestResult {
  readonly setupStatuses: readonly bigint[];
  readonly usedLength: number | undefined;
  /** How many of the buffer's bytes still hold the driver's 0xee fill. */
  readonly untouched: number;
}

/**
 * Connects to a vhost-user rng backend as QEMU would, runs one 512-byte entropy request on
 * queue 0 and disconnects.
 */
export async function requestEntropy(socketPath: string): Promise<EntropyRequestResult> {
  const frontend = await loadFrontend();
  const guest = frontend.createSharedGuestMemory(1 << 20);
  const kick = frontend.createEventFd();
  const call = frontend.createEventFd();
  const connection = new frontend.TestFrontend(socketPath);
  try {
    const handshake = await connection.handshake(guest, {
      features: VIRTIO_F_VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES,
    });
    const queue = new MockSplitQueue(guest.memory, { size: 16, seed: 3 });
    const setupStatuses = [handshake.status, ...(await connection.startRing(0, queue, { kick, call }))];
    // The backend signals a call fd it is given for a running ring: start from a quiet one.
    frontend.drainEventFd(call);
    const { buffers } = queue.addChain([{ writable: true, length: 512 }]);
    frontend.signalEventFd(kick);
    await frontend.waitEventFd(call);
    const used = queue.takeUsed();
    const placed = buffers[0]!;
    const bytes = guest.memory.bytes.subarray(placed.offset, placed.offset + placed.length);
    return {
      setupStatuses,
      usedLength: used[0]?.length,
      untouched: bytes.filter((byte) => byte === 0xee).length,
    };
  } finally {
    connection.close();
    guest.close();
  }
}
