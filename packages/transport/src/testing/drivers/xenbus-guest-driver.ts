import { encodePoolTable, PAGE_SIZE, POOL_TABLE_XENSTORE_KEY } from '@xvio/grant-pool';
import type {
  EventChannel,
  GrantMapping,
  InterruptEvent,
  XenServices,
  XenSimulator,
  XenStoreWatch,
} from '@xvio/xen';
import { STATUS_DEVICE_NEEDS_RESET, STATUS_DRIVER_OK, STATUS_FEATURES_OK } from '../../virtio-status.js';
import {
  parseXenbusState,
  XENBUS_STATE_CLOSED,
  XENBUS_STATE_CLOSING,
  XENBUS_STATE_CONNECTED,
  XENBUS_STATE_INIT_WAIT,
  XENBUS_STATE_INITIALISED,
  XENBUS_STATE_INITIALISING,
  type XenbusState,
} from '../../xenbus/xenbus-state.js';
import {
  CONFIG_PAGE_DATA,
  CONFIG_PAGE_GENERATION,
  CONFIG_PAGE_STATUS,
  KEY_CONFIG_REF,
  KEY_CONFIG_SIZE,
  KEY_CONFIG_WRITE,
  KEY_DEVICE_FEATURES,
  KEY_DRIVER_FEATURES,
  KEY_ERROR,
  KEY_EVENT_CHANNEL,
  KEY_FEATURE_PER_QUEUE_EVENTS,
  KEY_FEATURE_PERSISTENT_POOL,
  KEY_NUM_QUEUES,
  KEY_QUEUE_DESC,
  KEY_QUEUE_DEVICE,
  KEY_QUEUE_DRIVER,
  KEY_QUEUE_MAX_SIZE,
  KEY_QUEUE_SIZE,
  parseBoundedInt,
  parseFeatures,
  queueKey,
  XENBUS_VIRTIO_KIND,
} from '../../xenbus/xenbus-wire.js';
import { GuestDriverError, type GuestDriverOptions, GuestVirtioDriver } from './guest-driver.js';
import type { GuestSplitQueue } from './guest-split-queue.js';

export interface XenbusGuestOptions extends GuestDriverOptions {
  readonly domid: number;
  readonly devid: number;
  /** One event channel per queue when the backend offers it (default true). */
  readonly perQueueEvents?: boolean;
  /** Grant references of a persistent pool to publish (grant-pool's table), when the backend offers it. */
  readonly poolRefs?: readonly number[];
  /** Reconnect by itself when the backend restarts (default true). */
  readonly autoReconnect?: boolean;
}

/**
 * The frontend of a virtio-xenbus device in a simulated guest (docs/spec/virtio-xenbus.md):
 * what a Linux `virtio_xenbus` driver would do. Reads the backend's offer from xenstore, keeps
 * ACKNOWLEDGE/DRIVER/FEATURES_OK locally, publishes features, rings and event channels in one
 * transaction, switches to Initialised and waits for the backend's Connected (= DRIVER_OK).
 */
export class XenbusGuestDriver extends GuestVirtioDriver {
  readonly services: XenServices;
  readonly frontendPath: string;
  backendPath = '';
  backendDomid = 0;
  private localStatus = 0;
  private driverFeatures = 0n;
  private offer = 0n;
  private numQueues = 0;
  private configSize = 0;
  private configMapping: GrantMapping | undefined;
  private control: EventChannel | undefined;
  private channels: EventChannel[] = [];
  private readonly queueSetups = new Map<number, GuestSplitQueue>();
  private backendWatch: XenStoreWatch | undefined;
  private poolTable: { ref: number; frame: number } | undefined;
  private configWriteSequence = 0;
  private lastGeneration = 0;
  reconnects = 0;
  /** This driver completed the handshake and has not released the connection since. */
  private connected = false;
  /** The backend closed the device (toolstack removal). */
  removedByBackend = false;
  /** Resolves after each automatic reconnection. */
  private reconnectWaiters: (() => void)[] = [];
  private reconnecting = false;

  private constructor(
    sim: XenSimulator,
    private readonly xenbus: XenbusGuestOptions,
  ) {
    super(sim, xenbus.domid, xenbus);
    this.services = sim.domain(xenbus.domid).services();
    this.frontendPath = `/local/domain/${xenbus.domid}/device/${XENBUS_VIRTIO_KIND}/${xenbus.devid}`;
  }

  static async probe(sim: XenSimulator, options: XenbusGuestOptions): Promise<XenbusGuestDriver> {
    const driver = new XenbusGuestDriver(sim, options);
    const store = driver.services.store;
    const backend = await store.tryRead(`${driver.frontendPath}/backend`);
    const backendId = parseBoundedInt(await store.tryRead(`${driver.frontendPath}/backend-id`), 0x7fef);
    if (backend === undefined || backendId === undefined) {
      throw new GuestDriverError('no-device', `${driver.frontendPath} has no backend`);
    }
    driver.backendPath = backend;
    driver.backendDomid = backendId;
    driver.backendWatch = await store.watch(`${backend}/state`, {
      onEvent: () => void driver.backendChanged(),
    });
    await driver.initialize();
    return driver;
  }

  private read(key: string): Promise<string | undefined> {
    return this.services.store.tryRead(`${this.backendPath}/${key}`);
  }

  async backendState(): Promise<XenbusState> {
    return parseXenbusState(await this.services.store.tryRead(`${this.backendPath}/state`));
  }

  async frontendState(): Promise<XenbusState> {
    return parseXenbusState(await this.services.store.tryRead(`${this.frontendPath}/state`));
  }

  private async setState(state: XenbusState): Promise<void> {
    await this.services.store.write(`${this.frontendPath}/state`, String(state));
  }

  /** Polls the backend's state until `accept` says so (watches wake us; polling bounds the wait). */
  private async waitBackend(accept: (state: XenbusState) => boolean, timeoutMs = 5000): Promise<XenbusState> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const state = await this.backendState();
      if (accept(state)) return state;
      if (performance.now() > deadline)
        throw new GuestDriverError('timeout', `backend stayed in state ${state}`);
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  }

  private async backendChanged(): Promise<void> {
    if (this.reconnecting) return;
    const state = await this.backendState();
    // Device removal (X.10): the backend asks us to close; answer Closing and let it finish.
    if (state === XENBUS_STATE_CLOSING && this.connected) {
      this.connected = false;
      await this.setState(XENBUS_STATE_CLOSING);
      this.removedByBackend = true;
      return;
    }
    if (this.xenbus.autoReconnect === false) return;
    // A backend back in InitWait while we are connected has restarted: set up again
    // (spec: "Backend restart"). Requests in flight are lost and must be resubmitted.
    // Only a connection this driver made counts: a `state` left by someone else is not ours.
    if (state === XENBUS_STATE_INIT_WAIT && this.connected) {
      this.reconnecting = true;
      try {
        this.releaseConnection(true);
        this.localStatus = 0;
        await this.initialize();
        this.reconnects++;
      } finally {
        this.reconnecting = false;
        const waiters = this.reconnectWaiters;
        this.reconnectWaiters = [];
        for (const waiter of waiters) waiter();
      }
    }
  }

  /** Resolves after the next automatic reconnection. */
  reconnected(): Promise<void> {
    return new Promise((resolve) => this.reconnectWaiters.push(resolve));
  }

  protected override listen(): void {
    // Interrupts are event channels, bound when the queues are published.
  }

  protected matches(_event: InterruptEvent): boolean {
    return false;
  }

  protected async acknowledge(): Promise<{ queue: boolean; config: boolean }> {
    return { queue: false, config: false };
  }

  protected async readStatus(): Promise<number> {
    const page = this.configMapping;
    const deviceStatus = page?.mapped
      ? new DataView(page.bytes.buffer, page.bytes.byteOffset).getUint32(CONFIG_PAGE_STATUS, true)
      : 0;
    return this.localStatus | (deviceStatus & STATUS_DEVICE_NEEDS_RESET);
  }

  protected async writeStatus(status: number): Promise<void> {
    if (status === 0) {
      await this.disconnect();
      this.localStatus = 0;
      return;
    }
    if (status & STATUS_DRIVER_OK && !(this.localStatus & STATUS_DRIVER_OK)) {
      await this.publish();
      this.localStatus = status;
      return;
    }
    if (status & STATUS_FEATURES_OK && !(this.localStatus & STATUS_FEATURES_OK)) {
      // The backend checks again at Initialised; locally: only offered bits.
      if ((this.driverFeatures & ~this.offer) !== 0n) {
        this.localStatus = status & ~STATUS_FEATURES_OK;
        return;
      }
    }
    this.localStatus = status;
  }

  protected async readDeviceFeatures(): Promise<bigint> {
    await this.waitBackend((state) => state === XENBUS_STATE_INIT_WAIT);
    const features = parseFeatures(await this.read(KEY_DEVICE_FEATURES));
    this.numQueues = parseBoundedInt(await this.read(KEY_NUM_QUEUES), 1024) ?? 0;
    this.configSize = parseBoundedInt(await this.read(KEY_CONFIG_SIZE), 4032) ?? 0;
    const configRef = parseBoundedInt(await this.read(KEY_CONFIG_REF), 0xffff_ffff);
    if (features === undefined || configRef === undefined)
      throw new GuestDriverError('no-device', 'backend offer is malformed');
    if (this.configMapping?.mapped) this.configMapping.unmap();
    this.configMapping = this.services.grants.map({
      domid: this.backendDomid,
      refs: [configRef],
      writable: false,
    });
    this.offer = features;
    return features;
  }

  protected async writeDriverFeatures(features: bigint): Promise<void> {
    this.driverFeatures = features;
  }

  protected async queueMaxSize(index: number): Promise<number> {
    if (index >= this.numQueues) return 0;
    return parseBoundedInt(await this.read(queueKey(index, KEY_QUEUE_MAX_SIZE)), 32768) ?? 0;
  }

  protected async enableQueue(index: number, queue: GuestSplitQueue): Promise<void> {
    this.queueSetups.set(index, queue);
  }

  /** Allocates event channels, writes the whole setup in one transaction, Initialised, then waits for Connected. */
  private async publish(): Promise<void> {
    const { events, store, grants } = this.services;
    const perQueue =
      (this.xenbus.perQueueEvents ?? true) && (await this.read(KEY_FEATURE_PER_QUEUE_EVENTS)) === '1';
    this.control = events.bindUnboundPort(this.backendDomid);
    this.control.onEvent(() => this.controlEvent());
    const queuePorts = new Map<number, number>();
    if (perQueue) {
      for (const index of this.queueSetups.keys()) {
        const channel = events.bindUnboundPort(this.backendDomid);
        channel.onEvent(() => this.queueEvent());
        this.channels[index] = channel;
        queuePorts.set(index, channel.localPort);
      }
    }
    if (this.xenbus.poolRefs && (await this.read(KEY_FEATURE_PERSISTENT_POOL)) === '1' && !this.poolTable) {
      const domain = this.sim.domain(this.domid);
      const frame = domain.allocatePages(1);
      domain.memory.set(encodePoolTable(this.xenbus.poolRefs), frame * PAGE_SIZE);
      this.poolTable = { ref: grants.grantAccess(this.backendDomid, frame, { readOnly: true }), frame };
    }
    const base = this.frontendPath;
    const control = this.control;
    await store.transaction(async (tx) => {
      await tx.write(`${base}/${KEY_DRIVER_FEATURES}`, this.driverFeatures.toString(16));
      await tx.write(`${base}/${KEY_EVENT_CHANNEL}`, String(control.localPort));
      for (const [index, queue] of this.queueSetups) {
        await tx.write(`${base}/${queueKey(index, KEY_QUEUE_SIZE)}`, String(queue.size));
        await tx.write(`${base}/${queueKey(index, KEY_QUEUE_DESC)}`, `0x${queue.descAddress.toString(16)}`);
        await tx.write(
          `${base}/${queueKey(index, KEY_QUEUE_DRIVER)}`,
          `0x${queue.driverAddress.toString(16)}`,
        );
        await tx.write(
          `${base}/${queueKey(index, KEY_QUEUE_DEVICE)}`,
          `0x${queue.deviceAddress.toString(16)}`,
        );
        const port = queuePorts.get(index);
        if (port !== undefined) await tx.write(`${base}/${queueKey(index, KEY_EVENT_CHANNEL)}`, String(port));
      }
      if (this.poolTable) await tx.write(`${base}/${POOL_TABLE_XENSTORE_KEY}`, String(this.poolTable.ref));
      await tx.write(`${base}/state`, String(XENBUS_STATE_INITIALISED));
    });
    const state = await this.waitBackend((s) => s === XENBUS_STATE_CONNECTED || s === XENBUS_STATE_CLOSING);
    if (state !== XENBUS_STATE_CONNECTED) {
      const reason = (await this.read(KEY_ERROR)) ?? 'backend closed';
      await this.disconnect();
      throw new GuestDriverError('features-rejected', `backend refused the setup: ${reason}`);
    }
    this.lastGeneration = await this.configGeneration();
    await this.setState(XENBUS_STATE_CONNECTED);
    this.connected = true;
  }

  private controlEvent(): void {
    this.lastInterruptAt = performance.now();
    void this.configGeneration().then((generation) => {
      if (generation !== this.lastGeneration) {
        this.lastGeneration = generation;
        this.interrupts.config++;
      } else {
        this.interrupts.queue++;
      }
      this.wake();
    });
  }

  private queueEvent(): void {
    this.lastInterruptAt = performance.now();
    this.interrupts.queue++;
    this.wake();
  }

  /** Closing handshake: Closing, wait for the backend's Closed, release, Initialising. */
  private async disconnect(): Promise<void> {
    // The Closing handshake is for a connection the backend holds (ours, or a stale one) or a
    // setup it refused (X.5.3). A backend in InitWait holds nothing (it may have restarted):
    // Initialising is all it needs, and a Closing it processed late would close it again.
    this.connected = false;
    const backend = await this.backendState();
    if (backend === XENBUS_STATE_CONNECTED || backend === XENBUS_STATE_CLOSING) {
      await this.setState(XENBUS_STATE_CLOSING);
      await this.waitBackend((s) => s === XENBUS_STATE_CLOSED || s === XENBUS_STATE_INIT_WAIT);
    }
    this.releaseConnection(false);
    await this.setState(XENBUS_STATE_INITIALISING);
  }

  /** Unbinds channels and forgets the queues (the base class destroys them, revoking their grants). */
  private releaseConnection(destroyQueues: boolean): void {
    this.connected = false;
    this.control?.close();
    this.control = undefined;
    for (const channel of this.channels) channel?.close();
    this.channels = [];
    if (destroyQueues) {
      for (const queue of this.queueSetups.values()) queue.destroy();
      this.queueList.length = 0;
    }
    this.queueSetups.clear();
  }

  protected async notify(index: number): Promise<void> {
    const channel = this.channels[index] ?? this.control;
    channel?.notify();
  }

  protected async readConfigRaw(offset: number, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    const page = this.configMapping;
    if (!page?.mapped || offset < 0 || offset >= this.configSize) return out;
    const n = Math.min(length, this.configSize - offset);
    out.set(page.bytes.subarray(CONFIG_PAGE_DATA + offset, CONFIG_PAGE_DATA + offset + n));
    return out;
  }

  /** The page's seqlock: an odd generation means an update is in progress (read again). */
  async configGeneration(): Promise<number> {
    const page = this.configMapping;
    if (!page?.mapped) return 0;
    const view = new DataView(page.bytes.buffer, page.bytes.byteOffset, PAGE_SIZE);
    for (let i = 0; i < 1000; i++) {
      const generation = view.getUint32(CONFIG_PAGE_GENERATION, true);
      if ((generation & 1) === 0) return generation;
      await new Promise((resolve) => setImmediate(resolve));
    }
    throw new GuestDriverError('timeout', 'config page generation stayed odd');
  }

  /** A driver write to configuration space, through xenstore. */
  async writeConfig(offset: number, bytes: Uint8Array): Promise<void> {
    this.configWriteSequence++;
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
    await this.services.store.write(
      `${this.frontendPath}/${KEY_CONFIG_WRITE}`,
      `${this.configWriteSequence} ${offset} ${hex}`,
    );
  }

  protected override async teardown(): Promise<void> {
    await this.backendWatch?.close();
    if (this.configMapping?.mapped) this.configMapping.unmap();
    if (this.poolTable) {
      this.services.grants.endAccess(this.poolTable.ref);
      this.sim.domain(this.domid).freePages(this.poolTable.frame, 1);
      this.poolTable = undefined;
    }
    await this.setState(XENBUS_STATE_CLOSED);
    await this.services.close();
  }
}
