import type { GuestMemory } from '@xvio/grant-pool';
import type { DescriptorChain } from '../descriptor-chain.js';
import { USED_IDX } from '../split-ring-wire.js';
import type { Virtqueue, VirtqueueState, VirtqueueStats } from '../virtqueue.js';
import { VhostUserError } from './vhost-user-errors.js';
import { closeFd, libc, MFD_CLOEXEC } from './vhost-user-libc.js';
import { mapFdRegion } from './vhost-user-memory.js';
import {
  INFLIGHT_DESC_COUNTER,
  INFLIGHT_DESC_INFLIGHT,
  INFLIGHT_DESC_NEXT,
  INFLIGHT_DESC_SIZE,
  INFLIGHT_REGION_DESC_NUM,
  INFLIGHT_REGION_HEADER,
  INFLIGHT_REGION_LAST_BATCH_HEAD,
  INFLIGHT_REGION_USED_IDX,
  INFLIGHT_REGION_VERSION,
  INFLIGHT_VERSION,
  type InflightDescription,
  inflightRegionSize,
} from './vhost-user-wire.js';

/**
 * The shared inflight area ("Inflight I/O tracking", split rings): one region per queue
 * recording which heads were taken and not yet completed, so that a backend restarted
 * while the frontend keeps running knows what was in flight. The frontend keeps the memfd
 * and hands it to the next backend with SET_INFLIGHT_FD.
 *
 * xvio's queues complete requests in the order they were taken, so the heads in flight
 * are exactly the avail entries from the used index on: a resumed ring restarts from the
 * used index (`resumeBase`) and takes them again.
 */
export class InflightArea {
  private readonly view: DataView;
  private counter = 1n;

  constructor(
    readonly size: number,
    readonly numQueues: number,
    readonly queueSize: number,
    bytes: Uint8Array,
    private readonly release: () => void,
    /** Our own memfd when we created the area (sent with the GET_INFLIGHT_FD reply), else -1. */
    readonly fd: number,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  private regionOffset(queue: number): number {
    return queue * inflightRegionSize(this.queueSize);
  }

  /** Wraps a started queue so that every take and completion is recorded. */
  track(queue: number, inner: Virtqueue): Virtqueue {
    if (queue >= this.numQueues || inner.size > this.queueSize || inner.packed) return inner;
    const base = this.regionOffset(queue);
    const view = this.view;
    if (view.getUint16(base + INFLIGHT_REGION_VERSION, true) === 0) {
      view.setUint16(base + INFLIGHT_REGION_VERSION, INFLIGHT_VERSION, true);
      view.setUint16(base + INFLIGHT_REGION_DESC_NUM, this.queueSize, true);
      view.setUint16(base + INFLIGHT_REGION_USED_IDX, inner.getState().nextUsed, true);
    }
    return new TrackedQueue(inner, view, base, () => this.counter++);
  }

  /**
   * Where a ring resumes after a reconnect: when the area records requests in flight, the
   * used index (after finishing a half-recorded batch, as the spec's reconnect steps say);
   * otherwise undefined (the frontend's SET_VRING_BASE stands).
   */
  resumeBase(queue: number, memory: GuestMemory, usedAddress: bigint, size: number): number | undefined {
    if (queue >= this.numQueues || size > this.queueSize) return undefined;
    const base = this.regionOffset(queue);
    const view = this.view;
    if (view.getUint16(base + INFLIGHT_REGION_VERSION, true) !== INFLIGHT_VERSION) return undefined;
    const idx = new Uint8Array(2);
    memory.read(usedAddress + BigInt(USED_IDX), idx);
    const usedIdx = idx[0]! | (idx[1]! << 8);
    const recorded = view.getUint16(base + INFLIGHT_REGION_USED_IDX, true);
    if (recorded !== usedIdx) {
      // The last batch reached the used ring but not the area: clear its entries.
      let head = view.getUint16(base + INFLIGHT_REGION_LAST_BATCH_HEAD, true);
      let batch = (usedIdx - recorded) & 0xffff;
      while (batch-- > 0 && head < this.queueSize) {
        const entry = base + INFLIGHT_REGION_HEADER + head * INFLIGHT_DESC_SIZE;
        view.setUint8(entry + INFLIGHT_DESC_INFLIGHT, 0);
        head = view.getUint16(entry + INFLIGHT_DESC_NEXT, true);
      }
      view.setUint16(base + INFLIGHT_REGION_USED_IDX, usedIdx, true);
    }
    let inflight = 0;
    for (let head = 0; head < this.queueSize; head++) {
      const entry = base + INFLIGHT_REGION_HEADER + head * INFLIGHT_DESC_SIZE;
      if (view.getUint8(entry + INFLIGHT_DESC_INFLIGHT) === 1) {
        inflight++;
        const counter = view.getBigUint64(entry + INFLIGHT_DESC_COUNTER, true);
        if (counter >= this.counter) this.counter = counter + 1n;
        // Taken again from the avail ring when the ring resumes.
        view.setUint8(entry + INFLIGHT_DESC_INFLIGHT, 0);
      }
    }
    return inflight > 0 ? usedIdx : undefined;
  }

  close(): void {
    this.release();
    closeFd(this.fd);
  }
}

class TrackedQueue implements Virtqueue {
  private batch: number[] = [];
  private lastPopped = -1;

  constructor(
    private readonly inner: Virtqueue,
    private readonly view: DataView,
    private readonly base: number,
    private readonly nextCounter: () => bigint,
  ) {}

  get size(): number {
    return this.inner.size;
  }
  get packed(): boolean {
    return this.inner.packed;
  }
  get broken() {
    return this.inner.broken;
  }
  get stats(): VirtqueueStats {
    return this.inner.stats;
  }

  private entry(head: number): number {
    return this.base + INFLIGHT_REGION_HEADER + head * INFLIGHT_DESC_SIZE;
  }

  pop(): DescriptorChain | undefined {
    const chain = this.inner.pop();
    if (chain && chain.head < this.inner.size) {
      const entry = this.entry(chain.head);
      this.view.setBigUint64(entry + INFLIGHT_DESC_COUNTER, this.nextCounter(), true);
      this.view.setUint8(entry + INFLIGHT_DESC_INFLIGHT, 1);
      this.lastPopped = chain.head;
    }
    return chain;
  }

  undoPop(): void {
    this.inner.undoPop();
    if (this.lastPopped >= 0) this.view.setUint8(this.entry(this.lastPopped) + INFLIGHT_DESC_INFLIGHT, 0);
    this.lastPopped = -1;
  }

  hasAvailable(): boolean {
    return this.inner.hasAvailable();
  }

  addUsed(chain: DescriptorChain, length: number): void {
    this.inner.addUsed(chain, length);
    if (chain.head >= this.inner.size) return;
    const view = this.view;
    view.setUint16(
      this.entry(chain.head) + INFLIGHT_DESC_NEXT,
      view.getUint16(this.base + INFLIGHT_REGION_LAST_BATCH_HEAD, true),
      true,
    );
    view.setUint16(this.base + INFLIGHT_REGION_LAST_BATCH_HEAD, chain.head, true);
    this.batch.push(chain.head);
  }

  publishUsed(): number {
    const count = this.inner.publishUsed();
    if (count > 0) {
      for (const head of this.batch) this.view.setUint8(this.entry(head) + INFLIGHT_DESC_INFLIGHT, 0);
      this.view.setUint16(this.base + INFLIGHT_REGION_USED_IDX, this.inner.getState().nextUsed, true);
    }
    this.batch = [];
    return count;
  }

  needsNotification(): boolean {
    return this.inner.needsNotification();
  }
  enableNotification(): boolean {
    return this.inner.enableNotification();
  }
  disableNotification(): void {
    this.inner.disableNotification();
  }
  getState(): VirtqueueState {
    return this.inner.getState();
  }
}

/** GET_INFLIGHT_FD: a zeroed memfd big enough for every queue's region, mapped here too. */
export function createInflightArea(numQueues: number, queueSize: number): InflightArea {
  const c = libc();
  const size = numQueues * inflightRegionSize(queueSize);
  const fd = c.memfdCreate('xvio-inflight', MFD_CLOEXEC);
  if (fd < 0) throw new VhostUserError('host-failure', `memfd_create failed: errno ${c.errno()}`);
  try {
    if (c.ftruncate(fd, size) !== 0)
      throw new VhostUserError('host-failure', `ftruncate failed: errno ${c.errno()}`);
    const [piece] = mapFdRegion(fd, {
      guestAddress: 0n,
      size: BigInt(size),
      userAddress: 0n,
      mmapOffset: 0n,
      xenFlags: 0,
      domid: 0,
    });
    return new InflightArea(size, numQueues, queueSize, piece!.bytes, () => piece!.unmap?.(), fd);
  } catch (error) {
    closeFd(fd);
    throw error;
  }
}

/** SET_INFLIGHT_FD: maps the area the frontend kept. The fd stays the caller's. */
export function mapInflightArea(fd: number, description: InflightDescription): InflightArea {
  const size = description.numQueues * inflightRegionSize(description.queueSize);
  if (description.mmapSize < BigInt(size) || description.mmapSize > 1n << 30n) {
    throw new VhostUserError(
      'invalid-inflight',
      `inflight area of ${description.mmapSize} bytes, need ${size}`,
    );
  }
  const [piece] = mapFdRegion(fd, {
    guestAddress: 0n,
    size: description.mmapSize,
    userAddress: 0n,
    mmapOffset: description.mmapOffset,
    xenFlags: 0,
    domid: 0,
  });
  return new InflightArea(
    size,
    description.numQueues,
    description.queueSize,
    piece!.bytes,
    () => piece!.unmap?.(),
    -1,
  );
}
