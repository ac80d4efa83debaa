// Runs inside a PVH guest of the real Xen rig: a user-space frontend of the virtio-xenbus
// transport (docs/spec/virtio-xenbus.md) over the guest's own /dev/xen/xenbus, evtchn,
// gntalloc and gntdev, talking to xvio's XenbusBackend in dom0. xvio's XenbusGuestDriver is
// simulator-bound (it grants arbitrary guest frames and reads simulated guest memory), so
// this frontend is written here against the same wire module: rings and buffers live in
// pages shared with gntalloc and travel as grant DMA addresses (1<<63 | gref<<12).
// Prints `DOMU-PASS <check> ...`, `DOMU-FAIL <check> ...`, `DOMU-MEASURE <name> <value> <unit>`.
import { readFileSync } from 'node:fs';
import { encodeGrantAddress } from '@xvio/grant-pool';
import {
  STATUS_DEVICE_NEEDS_RESET,
  splitRing,
  VIRTIO_F_ACCESS_PLATFORM,
  VIRTIO_F_VERSION_1,
} from '@xvio/transport';
import {
  parseXenbusState,
  xenbusWire as wire,
  XENBUS_STATE_CLOSED,
  XENBUS_STATE_CLOSING,
  XENBUS_STATE_CONNECTED,
  XENBUS_STATE_INIT_WAIT,
  XENBUS_STATE_INITIALISED,
  XENBUS_STATE_INITIALISING,
  type XenbusState,
} from '@xvio/transport/xenbus';
import {
  type EventChannel,
  type EventChannels,
  type GrantMapping,
  type GrantTables,
  openNativeEventChannels,
  openNativeGrantTables,
  openNativeXenStore,
  type SharedGrantPages,
  type XenStore,
} from '@xvio/xen';

const QUEUE_SIZE = 16;
const BUFFER_BYTES = 4096;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

class Frontend {
  backend = '';
  backendDomid = 0;
  connected = false;
  private config: GrantMapping | undefined;
  private ring: SharedGrantPages | undefined;
  private buffers: SharedGrantPages | undefined;
  private control: EventChannel | undefined;
  private queue: EventChannel | undefined;
  private availIdx = 0;
  private lastUsed = 0;
  private wakeup: (() => void) | undefined;

  constructor(
    readonly store: XenStore,
    readonly grants: GrantTables,
    readonly events: EventChannels,
    readonly front: string,
  ) {}

  async backendState(): Promise<XenbusState> {
    const path = `${this.backend}/state`;
    // A reply that never comes would hang this driver silently (its other waits all have a
    // deadline): fail loudly instead, naming the read.
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`xenstore read of ${path} not answered in 30 s`)), 30_000);
    });
    try {
      return parseXenbusState(await Promise.race([this.store.tryRead(path), late]));
    } finally {
      clearTimeout(timer);
    }
  }

  async waitBackend(accept: (s: XenbusState) => boolean, ms: number, what: string): Promise<XenbusState> {
    const deadline = Date.now() + ms;
    for (;;) {
      const state = await this.backendState();
      if (accept(state)) return state;
      if (Date.now() > deadline) throw new Error(`timeout waiting for backend ${what} (state ${state})`);
      await sleep(20);
    }
  }

  private read(key: string) {
    return this.store.tryRead(`${this.backend}/${key}`);
  }

  /** The spec's connection: read the offer, share rings, publish in one transaction, Initialised, wait Connected. */
  async connect(): Promise<void> {
    this.backend = (await this.store.tryRead(`${this.front}/backend`)) ?? '';
    this.backendDomid =
      wire.parseBoundedInt(await this.store.tryRead(`${this.front}/backend-id`), 0x7fef) ?? 0;
    if (!this.backend) throw new Error(`${this.front} has no backend`);
    await this.waitBackend((s) => s === XENBUS_STATE_INIT_WAIT, 120_000, 'InitWait');
    const offer = wire.parseFeatures(await this.read(wire.KEY_DEVICE_FEATURES));
    const configRef = wire.parseBoundedInt(await this.read(wire.KEY_CONFIG_REF), 0xffff_ffff);
    const queues = wire.parseBoundedInt(await this.read(wire.KEY_NUM_QUEUES), 1024);
    const maxSize = wire.parseBoundedInt(await this.read(wire.queueKey(0, wire.KEY_QUEUE_MAX_SIZE)), 32768);
    const perQueue = (await this.read(wire.KEY_FEATURE_PER_QUEUE_EVENTS)) === '1';
    if (offer === undefined || configRef === undefined || !queues || !maxSize || maxSize < QUEUE_SIZE)
      throw new Error(
        `malformed offer: features=${offer} config-ref=${configRef} queues=${queues} max-size=${maxSize}`,
      );
    if ((offer & VIRTIO_F_VERSION_1) === 0n) throw new Error('backend does not offer VIRTIO_F_VERSION_1');
    const features = offer & (VIRTIO_F_VERSION_1 | VIRTIO_F_ACCESS_PLATFORM);
    this.release();
    this.config = this.grants.map({ domid: this.backendDomid, refs: [configRef], writable: false });
    // Rings: descriptor table, driver area, device area, one page each (grant DMA addresses
    // must not cross a page unless the refs are consecutive, which gntalloc does not promise).
    this.ring = this.grants.share(this.backendDomid, 3);
    this.ring.bytes.fill(0);
    this.buffers ??= this.grants.share(this.backendDomid, QUEUE_SIZE);
    this.availIdx = 0;
    this.lastUsed = 0;
    this.control = this.events.bindUnboundPort(this.backendDomid);
    this.control.onEvent(() => this.wakeup?.());
    this.queue = perQueue ? this.events.bindUnboundPort(this.backendDomid) : undefined;
    this.queue?.onEvent(() => this.wakeup?.());
    const ring = this.ring;
    const control = this.control;
    const queue = this.queue;
    const address = (page: number) => `0x${encodeGrantAddress(ring.refs[page] as number, 0).toString(16)}`;
    await this.store.transaction(async (tx) => {
      await tx.write(`${this.front}/${wire.KEY_DRIVER_FEATURES}`, wire.formatFeatures(features));
      await tx.write(`${this.front}/${wire.KEY_EVENT_CHANNEL}`, String(control.localPort));
      await tx.write(`${this.front}/${wire.queueKey(0, wire.KEY_QUEUE_SIZE)}`, String(QUEUE_SIZE));
      await tx.write(`${this.front}/${wire.queueKey(0, wire.KEY_QUEUE_DESC)}`, address(0));
      await tx.write(`${this.front}/${wire.queueKey(0, wire.KEY_QUEUE_DRIVER)}`, address(1));
      await tx.write(`${this.front}/${wire.queueKey(0, wire.KEY_QUEUE_DEVICE)}`, address(2));
      if (queue)
        await tx.write(`${this.front}/${wire.queueKey(0, wire.KEY_EVENT_CHANNEL)}`, String(queue.localPort));
      await tx.write(`${this.front}/state`, String(XENBUS_STATE_INITIALISED));
    });
    const state = await this.waitBackend(
      (s) => s === XENBUS_STATE_CONNECTED || s === XENBUS_STATE_CLOSING,
      60_000,
      'Connected',
    );
    if (state !== XENBUS_STATE_CONNECTED)
      throw new Error(`backend refused: ${await this.read(wire.KEY_ERROR)}`);
    await this.store.write(`${this.front}/state`, String(XENBUS_STATE_CONNECTED));
    this.connected = true;
  }

  /** Ring indices and where request() waits, for the heartbeat. */
  progress(): string {
    const ring = this.ring;
    const used = ring ? new DataView(ring.bytes.buffer, ring.bytes.byteOffset + 8192, 4096) : undefined;
    return `avail ${this.availIdx} used ${used?.getUint16(splitRing.USED_IDX, true) ?? '-'} waiting ${this.waiting}`;
  }

  /** What request() awaits now (for the heartbeat). */
  waiting = 'nothing';

  /** The device status the backend publishes on the config page (NEEDS_RESET is how it tells a fault). */
  deviceStatus(): number {
    const page = this.config;
    if (!page?.mapped) return 0;
    return new DataView(page.bytes.buffer, page.bytes.byteOffset).getUint32(wire.CONFIG_PAGE_STATUS, true);
  }

  private release(): void {
    this.connected = false;
    this.control?.close();
    this.queue?.close();
    this.control = undefined;
    this.queue = undefined;
    if (this.config?.mapped) this.config.unmap();
    this.config = undefined;
    this.ring?.unshare();
    this.ring = undefined;
  }

  /**
   * Posts `count` writable buffers of `length` bytes, notifies, and waits for all of them.
   * Returns the bytes the device wrote, or 'restarted' when the backend went back to InitWait
   * (spec: backend restart; the requests in flight are lost), or 'needs-reset'.
   */
  async request(
    count: number,
    length: number,
    timeoutMs = 60_000,
  ): Promise<Uint8Array[] | 'restarted' | 'needs-reset'> {
    const ring = this.ring;
    const buffers = this.buffers;
    if (!ring || !buffers) throw new Error('not connected');
    const desc = new DataView(ring.bytes.buffer, ring.bytes.byteOffset, 4096);
    const avail = new DataView(ring.bytes.buffer, ring.bytes.byteOffset + 4096, 4096);
    const used = new DataView(ring.bytes.buffer, ring.bytes.byteOffset + 8192, 4096);
    for (let i = 0; i < count; i++) {
      const d = i * splitRing.DESC_SIZE;
      desc.setBigUint64(d + splitRing.DESC_ADDR, encodeGrantAddress(buffers.refs[i] as number, 0), true);
      desc.setUint32(d + splitRing.DESC_LEN, length, true);
      desc.setUint16(d + splitRing.DESC_FLAGS, splitRing.VIRTQ_DESC_F_WRITE, true);
      desc.setUint16(d + splitRing.DESC_NEXT, 0, true);
      avail.setUint16(splitRing.AVAIL_RING + 2 * ((this.availIdx + i) % QUEUE_SIZE), i, true);
    }
    this.availIdx = (this.availIdx + count) & 0xffff;
    // x86 keeps stores in order: the ring entries are visible before the index that covers them.
    avail.setUint16(splitRing.AVAIL_IDX, this.availIdx, true);
    (this.queue ?? this.control)?.notify();
    this.waiting = 'used';
    const deadline = Date.now() + timeoutMs;
    let lastStateCheck = Date.now();
    while (used.getUint16(splitRing.USED_IDX, true) !== this.availIdx) {
      if (Date.now() > deadline)
        throw new Error(`timeout: used.idx ${used.getUint16(splitRing.USED_IDX, true)} != ${this.availIdx}`);
      if (Date.now() - lastStateCheck > 200) {
        lastStateCheck = Date.now();
        if (this.deviceStatus() & STATUS_DEVICE_NEEDS_RESET) return 'needs-reset';
        this.waiting = 'xenstore';
        const backendState = await this.backendState();
        this.waiting = 'used';
        if (backendState === XENBUS_STATE_INIT_WAIT) {
          this.connected = false;
          return 'restarted';
        }
      }
      await new Promise<void>((resolve) => {
        this.wakeup = resolve;
        setTimeout(resolve, 50);
      });
      this.wakeup = undefined;
    }
    this.waiting = 'nothing';
    const out: Uint8Array[] = [];
    for (; this.lastUsed !== this.availIdx; this.lastUsed = (this.lastUsed + 1) & 0xffff) {
      const element = splitRing.USED_RING + splitRing.USED_ELEM_SIZE * (this.lastUsed % QUEUE_SIZE);
      const id = used.getUint32(element, true);
      const written = Math.min(used.getUint32(element + 4, true), length);
      if (id >= count) throw new Error(`used id ${id} was never posted`);
      out.push(buffers.bytes.slice(id * BUFFER_BYTES, id * BUFFER_BYTES + written));
    }
    return out;
  }

  /** A driver bug the backend must survive: avail.idx jumps far beyond the queue size (spec 2.7.13.3). */
  async writeGarbage(): Promise<void> {
    const ring = this.ring;
    if (!ring) throw new Error('not connected');
    const avail = new DataView(ring.bytes.buffer, ring.bytes.byteOffset + 4096, 4096);
    avail.setUint16(splitRing.AVAIL_IDX, (this.availIdx + 0x4000) & 0xffff, true);
    (this.queue ?? this.control)?.notify();
  }

  /** Closing handshake, then Initialising (a driver reset) or Closed (the driver goes away). */
  async disconnect(final: XenbusState): Promise<void> {
    const state = await this.backendState();
    if (state === XENBUS_STATE_CONNECTED || state === XENBUS_STATE_CLOSING) {
      await this.store.write(`${this.front}/state`, String(XENBUS_STATE_CLOSING));
      await this.waitBackend(
        (s) => s === XENBUS_STATE_CLOSED || s === XENBUS_STATE_INIT_WAIT,
        30_000,
        'Closed',
      );
    }
    this.release();
    await this.store.write(`${this.front}/state`, String(final));
  }

  close(): void {
    this.release();
    this.buffers?.unshare();
    this.buffers = undefined;
  }
}

function pass(name: string, detail: string): void {
  console.log(`DOMU-PASS ${name} ${detail}`);
}

function measure(name: string, value: number, unit: string): void {
  console.log(`DOMU-MEASURE ${name} ${value.toFixed(3)} ${unit}`);
}

function distinct(chunks: Uint8Array[]): { bytes: number; values: number } {
  const seen = new Set<number>();
  let bytes = 0;
  for (const chunk of chunks) {
    bytes += chunk.length;
    for (const b of chunk) seen.add(b);
  }
  return { bytes, values: seen.size };
}

async function transfer(
  frontend: Frontend,
  total: number,
): Promise<{ bytes: number; values: number; seconds: number }> {
  const chunks: Uint8Array[] = [];
  let bytes = 0;
  const start = performance.now();
  while (bytes < total) {
    const got = await frontend.request(QUEUE_SIZE, BUFFER_BYTES);
    if (typeof got === 'string') throw new Error(`transfer interrupted: ${got}`);
    for (const chunk of got) bytes += chunk.length;
    chunks.push(...got);
  }
  return { ...distinct(chunks), seconds: (performance.now() - start) / 1000 };
}

const mode = /xvio\.mode=(\S+)/.exec(readFileSync('/proc/cmdline', 'utf8'))?.[1] ?? 'basic';
const store = await openNativeXenStore();
const grants = openNativeGrantTables();
const events = openNativeEventChannels();
const domid = Number(await store.read('domid'));
const frontend = new Frontend(
  store,
  grants,
  events,
  `/local/domain/${domid}/device/${wire.XENBUS_VIRTIO_KIND}/0`,
);
console.log(`DOMU-XENBUS domid ${domid} mode ${mode}`);
// Where the driver is, every 15 s: a run that stalls shows whether its event loop still turns
// (heartbeats go on) and in which phase it stopped.
let phase = 'connect';
const heartbeat = setInterval(
  () => console.log(`DOMU-NOTE heartbeat phase ${phase}: ${frontend.progress()}`),
  15_000,
);
heartbeat.unref();

try {
  const connectStart = performance.now();
  await frontend.connect();
  const handshake = (performance.now() - connectStart) / 1000;
  pass(
    'xenbus-connect',
    `Connected to ${frontend.backend} in ${handshake.toFixed(2)} s (device status ${frontend.deviceStatus()})`,
  );
  measure('xenbus-handshake', handshake * 1000, 'ms');

  if (mode === 'basic') {
    // Round trip: one 64-byte request, notify, wait for the used element.
    const rounds = 40;
    phase = 'round-trips';
    const rtStart = performance.now();
    for (let i = 0; i < rounds; i++) {
      const got = await frontend.request(1, 64);
      if (typeof got === 'string' || got[0]?.length !== 64)
        throw new Error(`round trip ${i}: ${typeof got === 'string' ? got : got[0]?.length}`);
    }
    measure('xenbus-rng-round-trip', ((performance.now() - rtStart) * 1000) / rounds, 'us');
    phase = 'transfer';
    const result = await transfer(frontend, 1024 * 1024);
    if (result.values < 250)
      throw new Error(`only ${result.values} distinct byte values in ${result.bytes} bytes`);
    measure('xenbus-rng-throughput', result.bytes / 1e6 / result.seconds, 'MB/s');
    pass(
      'xenbus-data',
      `${result.bytes} bytes from virtio-rng over grants and event channels, ${result.values} distinct byte values, ${(result.bytes / 1e6 / result.seconds).toFixed(2)} MB/s`,
    );
    phase = 'close';
    await frontend.disconnect(XENBUS_STATE_CLOSED);
    pass('xenbus-close', 'Closing -> backend Closed -> Closed');
  } else {
    await transfer(frontend, 64 * 1024);
    // dom0 kills its backend and starts a new one (a crashed, restarted process); we keep
    // asking until the backend is back in InitWait, then set up again (spec: backend restart).
    const restartDeadline = Date.now() + 300_000;
    for (;;) {
      if (Date.now() > restartDeadline) throw new Error('the backend never restarted');
      const got = await frontend.request(4, BUFFER_BYTES, 300_000);
      if (got === 'restarted') break;
      if (got === 'needs-reset') throw new Error('device reported NEEDS_RESET before the restart');
      await sleep(100);
    }
    const reconnectStart = performance.now();
    await frontend.connect();
    const after = await transfer(frontend, 64 * 1024);
    pass(
      'backend-restart',
      `backend went back to InitWait, frontend set up again in ${((performance.now() - reconnectStart) / 1000).toFixed(2)} s and read ${after.bytes} more bytes`,
    );
    // A driver writing garbage: the device must report NEEDS_RESET, not crash or hang.
    await frontend.writeGarbage();
    const garbageDeadline = Date.now() + 30_000;
    while (!(frontend.deviceStatus() & STATUS_DEVICE_NEEDS_RESET)) {
      if (Date.now() > garbageDeadline)
        throw new Error(`no NEEDS_RESET after garbage (status ${frontend.deviceStatus()})`);
      await sleep(50);
    }
    pass(
      'garbage-needs-reset',
      `avail.idx jumped by 0x4000: device status ${frontend.deviceStatus()} (NEEDS_RESET set)`,
    );
    // The driver resets the device (Closing handshake, Initialising) and connects again.
    await frontend.disconnect(XENBUS_STATE_INITIALISING);
    await frontend.connect();
    const recovered = await transfer(frontend, 16 * 1024);
    pass('reset-recovered', `after the reset the device serves again: ${recovered.bytes} bytes`);
    // Now stream until dom0 destroys this domain mid-transfer.
    console.log('DOMU-STREAMING');
    for (;;) {
      const got = await frontend.request(QUEUE_SIZE, BUFFER_BYTES, 600_000);
      if (typeof got === 'string') throw new Error(`streaming interrupted: ${got}`);
    }
  }
} catch (error) {
  console.log(
    `DOMU-FAIL xenbus ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`,
  );
} finally {
  // Unbind and unshare; the xenstore connection is left to the process's end.
  try {
    frontend.close();
    events.close();
    grants.close();
  } catch (error) {
    console.log(`DOMU-NOTE cleanup ${String(error)}`);
  }
  console.log('DOMU-DONE');
  // process.exit would hang: libuv's thread-pool destructor joins the thread blocked in the
  // xenbus device read. The results are printed; init powers off after us.
  process.kill(process.pid, 'SIGKILL');
}
