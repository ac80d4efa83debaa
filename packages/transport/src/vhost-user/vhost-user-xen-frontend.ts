import { GRANT_ADDRESS_FLAG, PAGE_SIZE } from '@xvio/grant-pool';
import type { SimDomain } from '@xvio/xen';
import { usedRingSize } from '../split-ring-wire.js';
import { grantDma } from '../testing/drivers/guest-dma.js';
import { GuestSplitQueue } from '../testing/drivers/guest-split-queue.js';
import {
  createEventFd,
  drainEventFd,
  signalEventFd,
  TestFrontend,
  waitEventFd,
} from './vhost-user-frontend.js';
import { closeFd } from './vhost-user-libc.js';
import {
  encodeMemTable,
  encodeU64,
  encodeVringAddress,
  encodeVringState,
  ProtocolFeature,
  type RegionDescription,
  Request,
  XEN_MMAP_GRANT,
  XEN_MMAP_NO_ADVANCE_MAP,
} from './vhost-user-wire.js';

/**
 * How the frontend lays out its grant regions:
 * - `on-demand`: one region over the guest's whole grant address space (`1<<63` up to its
 *   last reference), flagged NO_ADVANCE_MAP; rings are reached per view through it.
 * - `rings-in-advance`: what rust-vmm's xen-vhost-frontend sends: each ring's pages as a
 *   grant region mapped in advance, and NO_ADVANCE_MAP regions over the gaps between them,
 *   all with frontend address 0 (it has no mapping of its own for them).
 */
export type XenGrantLayout = 'on-demand' | 'rings-in-advance';

export interface XenGrantFrontendOptions {
  readonly socketPath: string;
  /** The guest whose driver grants its rings and buffers to the backend (Linux's xen-grant-dma). */
  readonly guest: SimDomain;
  /** The backend's domain (the grantee). Default 0. */
  readonly backendDomid?: number;
  /** Ring sizes, by queue index. */
  readonly queueSizes: readonly number[];
  readonly layout: XenGrantLayout;
  /** Virtio features to ack; the backend's offer is masked with them. */
  readonly features: bigint;
  readonly eventIdx?: boolean;
}

/** Where the frontend says its grant regions live in its own address space. */
const USER_BASE = 0x7e00_0000_0000n;

/**
 * A Xen vhost-user frontend for tests, as xen-vhost-frontend drives a backend for a guest
 * with grant DMA: the guest driver (`GuestSplitQueue` over `grantDma`) grants rings and
 * buffers to the backend domain; this frontend negotiates XEN_MMAP, sends grant regions of
 * the guest's domain with its own fds, and starts the rings with kick and call eventfds.
 */
export class XenGrantFrontend {
  readonly queues: GuestSplitQueue[];
  readonly regions: RegionDescription[];
  private readonly kicks: number[] = [];
  private readonly calls: number[] = [];

  private constructor(
    readonly frontend: TestFrontend,
    readonly guest: SimDomain,
    queues: GuestSplitQueue[],
    regions: RegionDescription[],
  ) {
    this.queues = queues;
    this.regions = regions;
  }

  static async connect(options: XenGrantFrontendOptions): Promise<XenGrantFrontend> {
    const frontend = new TestFrontend(options.socketPath);
    try {
      const offered = await frontend.getU64(Request.GET_FEATURES);
      const protocol = await frontend.getU64(Request.GET_PROTOCOL_FEATURES);
      if (!(protocol & ProtocolFeature.XEN_MMAP)) throw new Error('the backend does not offer XEN_MMAP');
      frontend.send(
        Request.SET_PROTOCOL_FEATURES,
        encodeU64(ProtocolFeature.REPLY_ACK | ProtocolFeature.XEN_MMAP | (protocol & ProtocolFeature.MQ)),
      );
      await expectAck(frontend, Request.SET_OWNER);
      await expectAck(frontend, Request.SET_FEATURES, encodeU64(offered & options.features));
      const dma = grantDma(options.guest, options.backendDomid ?? 0);
      const queues = options.queueSizes.map(
        (size, index) => new GuestSplitQueue(options.guest, dma, index, size, options.eventIdx ?? false),
      );
      const regions = grantRegions(options, queues);
      const fds = regions.map(() => createEventFd());
      try {
        // The frontend passes its gntdev fd with each region; the backend maps through its own.
        const status = await frontend.acked(Request.SET_MEM_TABLE, encodeMemTable(regions, true), fds);
        if (status !== 0n) throw new Error(`SET_MEM_TABLE refused (${status})`);
      } finally {
        for (const fd of fds) closeFd(fd);
      }
      const result = new XenGrantFrontend(frontend, options.guest, queues, regions);
      for (const queue of queues) await result.startRing(queue);
      return result;
    } catch (error) {
      frontend.close();
      throw error;
    }
  }

  /** The frontend address of a guest (grant) address, through the region holding it. */
  userAddress(address: bigint): bigint {
    for (const region of this.regions) {
      if (address >= region.guestAddress && address < region.guestAddress + region.size) {
        return region.userAddress + (address - region.guestAddress);
      }
    }
    throw new Error(`0x${address.toString(16)} is in no region`);
  }

  private async startRing(queue: GuestSplitQueue): Promise<void> {
    const index = queue.index;
    const kick = createEventFd();
    const call = createEventFd();
    this.kicks[index] = kick;
    this.calls[index] = call;
    await expectAck(this.frontend, Request.SET_VRING_NUM, encodeVringState(index, queue.size));
    await expectAck(this.frontend, Request.SET_VRING_BASE, encodeVringState(index, 0));
    await expectAck(
      this.frontend,
      Request.SET_VRING_ADDR,
      encodeVringAddress({
        index,
        flags: 0,
        desc: this.userAddress(queue.descAddress),
        used: this.userAddress(queue.deviceAddress),
        avail: this.userAddress(queue.driverAddress),
        log: 0n,
      }),
    );
    await expectAck(this.frontend, Request.SET_VRING_KICK, encodeU64(BigInt(index)), [kick]);
    await expectAck(this.frontend, Request.SET_VRING_ENABLE, encodeVringState(index, 1));
    await expectAck(this.frontend, Request.SET_VRING_CALL, encodeU64(BigInt(index)), [call]);
    // The backend signals a call fd it receives for a running ring: start from a quiet fd.
    drainEventFd(call);
  }

  /** Kicks queue `index` when the device asked for it (or always with `force`). */
  kick(index: number, force = false): void {
    const queue = this.queues[index]!;
    if (queue.kickPrepare() || force) signalEventFd(this.kicks[index]!);
  }

  /** Waits for a call on queue `index`. */
  waitCall(index: number, timeoutMs = 5000): Promise<number> {
    return waitEventFd(this.calls[index]!, timeoutMs);
  }

  /** Closes the connection (the backend sees the frontend go away); the eventfds stay until `dispose`. */
  close(): void {
    this.frontend.close();
  }

  /** Closes the connection and the eventfds, and takes the rings down as the guest driver would. */
  dispose(): void {
    this.frontend.close();
    for (const fd of [...this.kicks, ...this.calls]) if (fd !== undefined) closeFd(fd);
    this.kicks.length = 0;
    this.calls.length = 0;
  }
}

async function expectAck(
  frontend: TestFrontend,
  request: number,
  payload?: Uint8Array,
  fds?: readonly number[],
): Promise<void> {
  const status = await frontend.acked(request, payload, fds);
  if (status !== 0n) throw new Error(`request ${request} refused (${status})`);
}

function grantRegions(
  options: XenGrantFrontendOptions,
  queues: readonly GuestSplitQueue[],
): RegionDescription[] {
  const domid = options.guest.domid;
  const end = GRANT_ADDRESS_FLAG + BigInt(options.guest.grantEntries * PAGE_SIZE);
  const onDemand = (guestAddress: bigint, size: bigint, userAddress: bigint): RegionDescription => ({
    guestAddress,
    size,
    userAddress,
    mmapOffset: 0n,
    xenFlags: XEN_MMAP_GRANT | XEN_MMAP_NO_ADVANCE_MAP,
    domid,
  });
  if (options.layout === 'on-demand')
    return [onDemand(GRANT_ADDRESS_FLAG, end - GRANT_ADDRESS_FLAG, USER_BASE)];
  const page = BigInt(PAGE_SIZE);
  const rings = queues
    .map((queue, i) => {
      const last = queue.deviceAddress + BigInt(usedRingSize(queue.size));
      const size = ((last - queue.descAddress + page - 1n) / page) * page;
      return {
        guestAddress: queue.descAddress,
        size,
        userAddress: USER_BASE + BigInt(i) * 0x10_0000n,
        mmapOffset: 0n,
        xenFlags: XEN_MMAP_GRANT,
        domid,
      };
    })
    .sort((a, b) => (a.guestAddress < b.guestAddress ? -1 : 1));
  const regions: RegionDescription[] = [];
  let at = GRANT_ADDRESS_FLAG;
  for (const ring of rings) {
    if (ring.guestAddress > at) regions.push(onDemand(at, ring.guestAddress - at, 0n));
    regions.push(ring);
    at = ring.guestAddress + ring.size;
  }
  if (at < end) regions.push(onDemand(at, end - at, 0n));
  return regions;
}
