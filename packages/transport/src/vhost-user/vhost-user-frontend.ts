import type { TestMemory } from '@xvio/grant-pool';
import { createRegionsMemory } from '@xvio/grant-pool';
import { VhostUserError } from './vhost-user-errors.js';
import {
  closeFd,
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  libc,
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
} from './vhost-user-libc.js';
import { mapFdRegion } from './vhost-user-memory.js';
import { watchReadable } from './vhost-user-poller.js';
import { type ChannelEnd, connectUnix, MessageChannel } from './vhost-user-socket.js';
import {
  encodeMemTable,
  encodeU64,
  encodeVringAddress,
  encodeVringState,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  FLAG_VERSION,
  ProtocolFeature,
  payloadView,
  type RegionDescription,
  Request,
  type VhostUserMessage,
} from './vhost-user-wire.js';

/** The frontend's (QEMU's) virtual address of guest address 0 in the test guest's memory. */
export const FRONTEND_USER_BASE = 0x7f00_0000_0000n;

/** Guest RAM shared as a memfd, seen by the test "driver" as TestMemory. */
export interface SharedGuestMemory {
  readonly fd: number;
  readonly size: number;
  /** Driver's view (for MockSplitQueue): guest address = offset. */
  readonly memory: TestMemory;
  readonly region: RegionDescription;
  close(): void;
}

/** Creates guest RAM as a sealable memfd mapped in this process. */
export function createSharedGuestMemory(size: number): SharedGuestMemory {
  const c = libc();
  const fd = c.memfdCreate('xvio-test-guest', MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0 || c.ftruncate(fd, size) !== 0) throw new Error(`memfd: errno ${c.errno()}`);
  const region: RegionDescription = {
    guestAddress: 0n,
    size: BigInt(size),
    userAddress: FRONTEND_USER_BASE,
    mmapOffset: 0n,
    xenFlags: 0,
    domid: 0,
  };
  const pieces = mapFdRegion(fd, region);
  const bytes = pieces[0]!.bytes;
  const regions = createRegionsMemory(pieces);
  const memory = Object.assign(regions, {
    base: 0n,
    size,
    bytes,
    dataView: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength),
    address: (offset: number) => BigInt(offset),
  }) as unknown as TestMemory;
  return {
    fd,
    size,
    memory,
    region,
    close() {
      for (const piece of pieces) piece.unmap?.();
      closeFd(fd);
    },
  };
}

/** An eventfd for kicks or calls. */
export function createEventFd(): number {
  const fd = libc().eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) throw new Error(`eventfd: errno ${libc().errno()}`);
  return fd;
}

/** Adds one to an eventfd (a kick). */
export function signalEventFd(fd: number): void {
  libc().write(fd, encodeU64(1n), 8);
}

/** Reads and resets an eventfd's counter; 0 when it was not signalled. */
export function drainEventFd(fd: number): number {
  const buffer = new Uint8Array(8);
  const n = Number(libc().read(fd, buffer, 8));
  return n === 8 ? Number(new DataView(buffer.buffer).getBigUint64(0, true)) : 0;
}

/** Resolves with the counter once `fd` is signalled, or rejects after `timeoutMs`. */
export function waitEventFd(fd: number, timeoutMs = 5000): Promise<number> {
  return new Promise((resolve, reject) => {
    const immediate = drainEventFd(fd);
    if (immediate > 0) {
      resolve(immediate);
      return;
    }
    const timer = setTimeout(() => {
      watch.close();
      reject(new Error(`eventfd ${fd} not signalled within ${timeoutMs} ms`));
    }, timeoutMs);
    const watch = watchReadable(fd, () => {
      const value = drainEventFd(fd);
      if (value === 0) return;
      clearTimeout(timer);
      watch.close();
      resolve(value);
    });
  });
}

/**
 * A vhost-user frontend for tests, speaking the protocol as QEMU does: real messages over
 * the socket, real memfds and eventfds passed with SCM_RIGHTS. One request at a time.
 */
export class TestFrontend {
  private readonly channel: MessageChannel;
  private pending:
    | { resolve: (message: VhostUserMessage) => void; reject: (error: Error) => void }
    | undefined;
  private endValue: ChannelEnd | undefined;
  private readonly endWaiters: ((end: ChannelEnd) => void)[] = [];
  /** Replies nobody waited for (a backend bug if any appear). */
  readonly unexpected: VhostUserMessage[] = [];

  /** Connects to `socketPath`, or speaks over an fd already connected (a frontend that listens). */
  constructor(socket: string | { fd: number }) {
    const fd = typeof socket === 'string' ? connectUnix(socket) : socket.fd;
    this.channel = new MessageChannel(
      fd,
      (message) => {
        const pending = this.pending;
        this.pending = undefined;
        if (pending) pending.resolve(message);
        else {
          for (const received of message.fds) closeFd(received);
          this.unexpected.push(message);
        }
      },
      (end) => {
        this.endValue = end;
        this.pending?.reject(new Error(`backend closed the connection (${end.reason})`));
        this.pending = undefined;
        for (const waiter of this.endWaiters.splice(0)) waiter(end);
      },
    );
  }

  get ended(): boolean {
    return this.endValue !== undefined;
  }

  /** Resolves when the backend closes the connection. */
  whenEnded(): Promise<ChannelEnd> {
    if (this.endValue) return Promise.resolve(this.endValue);
    return new Promise((resolve) => this.endWaiters.push(resolve));
  }

  /** Sends a message with no reply expected. The fds stay ours (the kernel duplicates them). */
  send(request: number, payload?: Uint8Array, fds?: readonly number[], flags = FLAG_VERSION): void {
    this.channel.send(request, flags, payload, fds);
  }

  /** Sends raw bytes (for malformed headers). */
  sendRaw(bytes: Uint8Array, fds?: readonly number[]): void {
    this.channel.sendRaw(bytes, fds);
  }

  /** Sends a message and waits for the reply (a GET_* answer or a REPLY_ACK). */
  request(
    request: number,
    payload?: Uint8Array,
    fds?: readonly number[],
    needReply = false,
  ): Promise<VhostUserMessage> {
    if (this.pending) return Promise.reject(new Error('one request at a time'));
    if (this.endValue) return Promise.reject(new Error('connection closed'));
    const reply = new Promise<VhostUserMessage>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending = undefined;
        reject(new Error(`no reply to request ${request}`));
      }, 5000);
      this.pending = {
        resolve: (message) => {
          clearTimeout(timer);
          resolve(message);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
    });
    this.send(request, payload, fds, FLAG_VERSION | (needReply ? FLAG_NEED_REPLY : 0));
    return reply.then((message) => {
      if (message.request !== request || !(message.flags & FLAG_REPLY)) {
        throw new VhostUserError('invalid-size', `reply ${message.request} to request ${request}`);
      }
      return message;
    });
  }

  /** Sends with NEED_REPLY and returns the acknowledgement's status (0 is success). */
  async acked(request: number, payload?: Uint8Array, fds?: readonly number[]): Promise<bigint> {
    const reply = await this.request(request, payload, fds, true);
    return payloadView(reply.payload).getBigUint64(0, true);
  }

  async getU64(request: number): Promise<bigint> {
    const reply = await this.request(request);
    return payloadView(reply.payload).getBigUint64(0, true);
  }

  /**
   * The handshake QEMU 7.2 does for vhost-user-rng, up to the memory table: features,
   * protocol features (with REPLY_ACK), owner, acked features, the table.
   */
  async handshake(memory: SharedGuestMemory, options: { features?: bigint; protocolFeatures?: bigint } = {}) {
    const offered = await this.getU64(Request.GET_FEATURES);
    const protocol = await this.getU64(Request.GET_PROTOCOL_FEATURES);
    // QEMU does not know XEN_MMAP (it changes the region layout): leave it out unless asked.
    const wantedProtocol = options.protocolFeatures ?? protocol & ~ProtocolFeature.XEN_MMAP;
    this.send(Request.SET_PROTOCOL_FEATURES, encodeU64(wantedProtocol));
    await this.acked(Request.SET_OWNER);
    const features = options.features ?? offered;
    const status = await this.acked(Request.SET_FEATURES, encodeU64(features));
    const table = await this.acked(Request.SET_MEM_TABLE, encodeMemTable([memory.region]), [memory.fd]);
    return { offered, protocol, status, table };
  }

  /** Sets a ring up as QEMU starts one: num, base, addresses, kick, enable, call. */
  async startRing(
    index: number,
    ring: { size: number; descAddress: bigint; availAddress: bigint; usedAddress: bigint },
    fds: { kick: number; call: number },
    base = 0,
  ): Promise<bigint[]> {
    const statuses: bigint[] = [];
    statuses.push(await this.acked(Request.SET_VRING_NUM, encodeVringState(index, ring.size)));
    statuses.push(await this.acked(Request.SET_VRING_BASE, encodeVringState(index, base)));
    statuses.push(
      await this.acked(
        Request.SET_VRING_ADDR,
        encodeVringAddress({
          index,
          flags: 0,
          desc: FRONTEND_USER_BASE + ring.descAddress,
          used: FRONTEND_USER_BASE + ring.usedAddress,
          avail: FRONTEND_USER_BASE + ring.availAddress,
          log: 0n,
        }),
      ),
    );
    statuses.push(await this.acked(Request.SET_VRING_KICK, encodeU64(BigInt(index)), [fds.kick]));
    statuses.push(await this.acked(Request.SET_VRING_ENABLE, encodeVringState(index, 1)));
    statuses.push(await this.acked(Request.SET_VRING_CALL, encodeU64(BigInt(index)), [fds.call]));
    return statuses;
  }

  /** Stops a ring as QEMU does: disable, then GET_VRING_BASE; returns the base. */
  async stopRing(index: number): Promise<number> {
    await this.acked(Request.SET_VRING_ENABLE, encodeVringState(index, 0));
    const reply = await this.request(Request.GET_VRING_BASE, encodeVringState(index, 0));
    return payloadView(reply.payload).getUint32(4, true);
  }

  close(): void {
    this.channel.close();
  }
}
