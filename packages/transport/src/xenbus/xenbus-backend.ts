import type { GuestMemory } from '@xvio/grant-pool';
import type { EventChannel, SharedGrantPages, XenServices, XenStoreWatch } from '@xvio/xen';
import { DeviceController } from '../device-controller.js';
import type { VirtioDevice } from '../virtio-device.js';
import { hasFeature, VIRTIO_F_ACCESS_PLATFORM, VIRTIO_F_RING_PACKED } from '../virtio-features.js';
import { STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK } from '../virtio-status.js';
import {
  parseXenbusState,
  XENBUS_STATE_CLOSED,
  XENBUS_STATE_CLOSING,
  XENBUS_STATE_CONNECTED,
  XENBUS_STATE_INIT_WAIT,
  XENBUS_STATE_INITIALISED,
  XENBUS_STATE_INITIALISING,
  XENBUS_STATE_UNKNOWN,
  type XenbusState,
} from './xenbus-state.js';
import {
  CONFIG_PAGE_DATA,
  CONFIG_PAGE_GENERATION,
  CONFIG_PAGE_MAX_CONFIG,
  CONFIG_PAGE_SIZE_FIELD,
  CONFIG_PAGE_STATUS,
  formatFeatures,
  KEY_CONFIG_REF,
  KEY_CONFIG_SIZE,
  KEY_CONFIG_WRITE,
  KEY_DEVICE_FEATURES,
  KEY_DEVICE_ID,
  KEY_DRIVER_FEATURES,
  KEY_ERROR,
  KEY_EVENT_CHANNEL,
  KEY_FEATURE_PER_QUEUE_EVENTS,
  KEY_FEATURE_PERSISTENT_POOL,
  KEY_NUM_QUEUES,
  KEY_PERSISTENT_POOL_TABLE,
  KEY_QUEUE_DESC,
  KEY_QUEUE_DEVICE,
  KEY_QUEUE_DRIVER,
  KEY_QUEUE_MAX_SIZE,
  KEY_QUEUE_SIZE,
  parseAddress,
  parseBoundedInt,
  parseFeatures,
  queueKey,
  XENBUS_VIRTIO_KIND,
} from './xenbus-wire.js';

/** A strategy that can load grant-pool's persistent pool table (PersistentPoolMemory). */
export interface PoolLoader {
  loadPoolTable(tableRef: number): number;
}

export interface XenbusBackendOptions {
  /** The backend domain's services (xenstore, event channels, grant tables). */
  readonly services: Pick<XenServices, 'store' | 'events' | 'grants'>;
  readonly backendDomid: number;
  readonly frontendDomid: number;
  readonly devid: number;
  readonly device: VirtioDevice;
  /** How the backend reaches the frontend's memory (grant map/copy/pool, or foreign mapping). */
  readonly memory: GuestMemory;
  readonly platformFeatures?: bigint;
  readonly packed?: boolean;
  /** Offers `feature-persistent-pool` and loads the frontend's table into this strategy. */
  readonly pool?: PoolLoader;
  readonly onError?: (error: unknown) => void;
  /**
   * The frontend died or vanished (X.10.1) and the backend has cleaned up by itself: device
   * reset, every grant unmapped, event channels unbound, its xenstore directory removed.
   */
  readonly onFrontendGone?: (reason: XenbusGoneReason) => void;
}

/**
 * How the backend learnt that its frontend is gone (X.10.1):
 * - `frontend-domain-gone`: `@releaseDomain` fired and the frontend domain's xenstore home
 *   no longer exists (a destroyed or dead domain);
 * - `frontend-removed`: the frontend's `state` node disappeared (the toolstack removed the
 *   frontend directory, as libxl does when it destroys a domain);
 * - `frontend-unknown`: the frontend's `state` became 0 (Unknown), which Linux backends
 *   also take as the frontend being gone.
 */
export type XenbusGoneReason = 'frontend-domain-gone' | 'frontend-removed' | 'frontend-unknown';

export interface XenbusBackendCounters {
  connects: number;
  disconnects: number;
  /** Setups refused: malformed nodes, features the device does not accept, unbindable channels. */
  refused: number;
  kicks: number;
  notifications: number;
  configUpdates: number;
  configWrites: number;
  ignoredConfigWrites: number;
  poolPages: number;
  /** Times the backend found its frontend gone and cleaned up by itself (0 or 1). */
  frontendGone: number;
}

/** Paths a toolstack creates for a virtio-xenbus device (what libxl does for vif/vbd). */
export function xenbusPaths(backendDomid: number, frontendDomid: number, devid: number) {
  return {
    backend: `/local/domain/${backendDomid}/backend/${XENBUS_VIRTIO_KIND}/${frontendDomid}/${devid}`,
    frontend: `/local/domain/${frontendDomid}/device/${XENBUS_VIRTIO_KIND}/${devid}`,
  };
}

/**
 * The toolstack's part (libxl__device_add for a split device): both directories with their
 * permissions, the cross links and the initial states. Run with a privileged connection.
 */
export async function addXenbusDevice(
  store: XenServices['store'],
  backendDomid: number,
  frontendDomid: number,
  devid: number,
): Promise<{ backend: string; frontend: string }> {
  const paths = xenbusPaths(backendDomid, frontendDomid, devid);
  await store.transaction(async (tx) => {
    await tx.mkdir(paths.backend);
    await tx.setPermissions(paths.backend, [
      { domid: backendDomid, access: 'none' },
      { domid: frontendDomid, access: 'read' },
    ]);
    await tx.write(`${paths.backend}/frontend`, paths.frontend);
    await tx.write(`${paths.backend}/frontend-id`, String(frontendDomid));
    await tx.write(`${paths.backend}/online`, '1');
    await tx.write(`${paths.backend}/state`, String(XENBUS_STATE_INITIALISING));
    await tx.mkdir(paths.frontend);
    await tx.setPermissions(paths.frontend, [
      { domid: frontendDomid, access: 'none' },
      { domid: backendDomid, access: 'read' },
    ]);
    await tx.write(`${paths.frontend}/backend`, paths.backend);
    await tx.write(`${paths.frontend}/backend-id`, String(backendDomid));
    await tx.write(`${paths.frontend}/state`, String(XENBUS_STATE_INITIALISING));
  });
  return paths;
}

/**
 * The backend end of a virtio-xenbus device (docs/spec/virtio-xenbus.md): publishes the
 * device in xenstore, follows the frontend's XenbusState, maps its rings through `memory`,
 * and exchanges notifications over event channels. No register traps: the driver's
 * configuration travels through xenstore once per connection.
 */
export class XenbusBackend {
  readonly controller: DeviceController;
  readonly paths: { backend: string; frontend: string };
  readonly counters: XenbusBackendCounters = {
    connects: 0,
    disconnects: 0,
    refused: 0,
    kicks: 0,
    notifications: 0,
    configUpdates: 0,
    configWrites: 0,
    ignoredConfigWrites: 0,
    poolPages: 0,
    frontendGone: 0,
  };
  private state: XenbusState = XENBUS_STATE_INITIALISING;
  private configPage: SharedGrantPages | undefined;
  private configView: DataView | undefined;
  private generation = 0;
  private control: EventChannel | undefined;
  private queueChannels: (EventChannel | undefined)[] = [];
  private watches: XenStoreWatch[] = [];
  private lastConfigWrite = '';
  private closed = false;
  /** The frontend's `state` node existed once: its disappearance then means the frontend is gone. */
  private frontendSeen = false;
  private goneReason: XenbusGoneReason | undefined;
  /** Serialises reactions to xenstore events: one state change at a time. */
  private work: Promise<void> = Promise.resolve();

  constructor(private readonly options: XenbusBackendOptions) {
    this.paths = xenbusPaths(options.backendDomid, options.frontendDomid, options.devid);
    this.controller = new DeviceController(options.device, {
      memory: options.memory,
      hooks: {
        interruptQueue: (index) => this.notifyQueue(index),
        interruptConfig: () => this.configChanged(),
      },
      transportMask: options.packed === false ? VIRTIO_F_RING_PACKED : 0n,
      platformFeatures: options.platformFeatures ?? 0n,
      ...(options.onError ? { onFault: options.onError } : {}),
    });
  }

  get xenbusState(): XenbusState {
    return this.state;
  }

  /** The local ports of the event channels bound now (none once disconnected). */
  get eventChannelPorts(): number[] {
    return [this.control, ...this.queueChannels].flatMap((channel) =>
      channel && !channel.closed ? [channel.localPort] : [],
    );
  }

  /** Why the backend cleaned up by itself, once it has (X.10.1). */
  get gone(): XenbusGoneReason | undefined {
    return this.goneReason;
  }

  /** Publishes the device and waits in InitWait for a frontend. */
  async start(): Promise<void> {
    const { store, grants } = this.options.services;
    const device = this.options.device;
    if (device.configSize > CONFIG_PAGE_MAX_CONFIG)
      throw new RangeError(`config space of ${device.configSize} bytes does not fit the page`);
    this.configPage = grants.share(this.options.frontendDomid, 1, { readOnly: true });
    const bytes = this.configPage.bytes;
    this.configView = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.configView.setUint32(CONFIG_PAGE_SIZE_FIELD, device.configSize, true);
    this.refreshConfigPage();
    const base = this.paths.backend;
    await store.transaction(async (tx) => {
      await tx.write(`${base}/${KEY_DEVICE_ID}`, String(device.deviceType));
      await tx.write(`${base}/${KEY_DEVICE_FEATURES}`, formatFeatures(this.controller.offeredFeatures));
      await tx.write(`${base}/${KEY_NUM_QUEUES}`, String(this.controller.queueCount));
      for (let index = 0; index < this.controller.queueCount; index++) {
        await tx.write(
          `${base}/${queueKey(index, KEY_QUEUE_MAX_SIZE)}`,
          String(this.controller.queueMaxSize(index)),
        );
      }
      await tx.write(`${base}/${KEY_CONFIG_SIZE}`, String(device.configSize));
      await tx.write(`${base}/${KEY_CONFIG_REF}`, String(this.configPage?.refs[0]));
      await tx.write(`${base}/${KEY_FEATURE_PER_QUEUE_EVENTS}`, '1');
      await tx.write(`${base}/${KEY_FEATURE_PERSISTENT_POOL}`, this.options.pool ? '1' : '0');
    });
    await this.setState(XENBUS_STATE_INIT_WAIT);
    this.watches.push(
      await store.watch(`${this.paths.frontend}/state`, {
        onEvent: () => this.schedule(() => this.frontendChanged()),
      }),
      await store.watch(`${this.paths.frontend}/${KEY_CONFIG_WRITE}`, {
        onEvent: () => this.schedule(() => this.configWrite()),
      }),
      await store.watch(`${this.paths.backend}/online`, {
        onEvent: () => this.schedule(() => this.onlineChanged()),
      }),
      // Fires when any domain is released (dies, or is shut down and then destroyed).
      await store.watch('@releaseDomain', {
        onEvent: () => this.schedule(() => this.domainReleased()),
      }),
    );
  }

  private schedule(body: () => Promise<void>): void {
    this.work = this.work.then(body).catch((error: unknown) => this.options.onError?.(error));
  }

  /** Waits until every xenstore reaction queued so far has run. */
  settled(): Promise<void> {
    return this.work;
  }

  private async setState(state: XenbusState): Promise<void> {
    this.state = state;
    await this.options.services.store.write(`${this.paths.backend}/state`, String(state));
  }

  /** The toolstack removes the device with `online` = 0: ask the frontend to close (X.10). */
  private async onlineChanged(): Promise<void> {
    if (this.closed) return;
    const online = await this.options.services.store.tryRead(`${this.paths.backend}/online`);
    if (online !== '0') return;
    if (this.state === XENBUS_STATE_CONNECTED) {
      await this.setState(XENBUS_STATE_CLOSING);
    } else if (this.state !== XENBUS_STATE_CLOSED) {
      this.disconnect();
      await this.setState(XENBUS_STATE_CLOSED);
    }
  }

  private get removed(): Promise<boolean> {
    return this.options.services.store
      .tryRead(`${this.paths.backend}/online`)
      .then((online) => online === '0');
  }

  /** `@releaseDomain`: is it our frontend? Its xenstore home goes with the domain (libxl removes it). */
  private async domainReleased(): Promise<void> {
    if (this.closed) return;
    const { store } = this.options.services;
    const home = await store.getDomainPath(this.options.frontendDomid);
    if (!(await store.exists(home))) await this.frontendGone('frontend-domain-gone');
  }

  private async frontendChanged(): Promise<void> {
    if (this.closed) return;
    const raw = await this.options.services.store.tryRead(`${this.paths.frontend}/state`);
    // X.10.1: a `state` node that disappeared, or Unknown (0), means the frontend is gone
    // (Linux's backends unregister the device on XenbusStateUnknown). A malformed value is
    // only ignored (X.3.3), and a node never seen yet may still be on its way.
    if (raw === undefined) {
      if (this.frontendSeen) await this.frontendGone('frontend-removed');
      return;
    }
    this.frontendSeen = true;
    if (raw.trim() === String(XENBUS_STATE_UNKNOWN)) {
      await this.frontendGone('frontend-unknown');
      return;
    }
    const frontend = parseXenbusState(raw);
    switch (frontend) {
      case XENBUS_STATE_INITIALISED:
        if (this.state === XENBUS_STATE_INIT_WAIT) await this.connect();
        return;
      case XENBUS_STATE_CONNECTED:
        // X.10: a frontend already Connected while we wait in InitWait belongs to a previous
        // backend instance; its rings and channels are stale. It sets up again when it sees us.
        return;
      case XENBUS_STATE_CLOSING:
        if (this.state === XENBUS_STATE_CONNECTED || this.state === XENBUS_STATE_CLOSING) {
          this.disconnect();
          await this.setState(XENBUS_STATE_CLOSED);
        } else if (this.state === XENBUS_STATE_INIT_WAIT) {
          await this.setState(XENBUS_STATE_CLOSED);
        }
        return;
      case XENBUS_STATE_CLOSED:
      case XENBUS_STATE_INITIALISING:
        // The frontend is gone or starts over: be ready for it again (spec: reconnect), unless
        // the toolstack is removing the device.
        if (this.state === XENBUS_STATE_CONNECTED) this.disconnect();
        if (await this.removed) {
          if (this.state !== XENBUS_STATE_CLOSED) await this.setState(XENBUS_STATE_CLOSED);
        } else if (this.state !== XENBUS_STATE_INIT_WAIT) {
          await this.setState(XENBUS_STATE_INIT_WAIT);
        }
        return;
      default:
        return;
    }
  }

  /** Reads the frontend's setup, negotiates, maps and starts the device. */
  private async connect(): Promise<void> {
    const { store, events } = this.options.services;
    const front = this.paths.frontend;
    const read = (key: string) => store.tryRead(`${front}/${key}`);
    const refuse = async (reason: string) => {
      this.counters.refused++;
      this.controller.reset();
      this.unbind();
      await store.write(`${this.paths.backend}/${KEY_ERROR}`, reason);
      await this.setState(XENBUS_STATE_CLOSING);
    };
    const features = parseFeatures(await read(KEY_DRIVER_FEATURES));
    if (features === undefined) return refuse('driver-features is missing or malformed');
    // X.4.1: a backend that only reaches granted memory needs VIRTIO_F_ACCESS_PLATFORM.
    const platform = this.options.platformFeatures ?? 0n;
    if (hasFeature(platform, VIRTIO_F_ACCESS_PLATFORM) && !hasFeature(features, VIRTIO_F_ACCESS_PLATFORM)) {
      return refuse(`features-rejected: ${formatFeatures(features)} lacks VIRTIO_F_ACCESS_PLATFORM`);
    }
    const controller = this.controller;
    controller.reset();
    controller.setStatus(STATUS_ACKNOWLEDGE);
    controller.setStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    controller.setDriverFeatures(features);
    if (!controller.setStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK)) {
      return refuse(`features-rejected: ${formatFeatures(features)}`);
    }
    const controlPort = parseBoundedInt(await read(KEY_EVENT_CHANNEL), 0xffff_ff);
    if (controlPort === undefined) return refuse('event-channel is missing or malformed');
    try {
      this.control = events.bindInterdomain(this.options.frontendDomid, controlPort);
    } catch (error) {
      this.options.onError?.(error);
      return refuse(`event-channel ${controlPort} cannot be bound`);
    }
    this.control.onEvent(() => this.kickAll());
    for (let index = 0; index < controller.queueCount; index++) {
      const size = await read(queueKey(index, KEY_QUEUE_SIZE));
      if (size === undefined) continue; // the driver left this queue disabled
      const setup = controller.queue(index);
      const parsedSize = parseBoundedInt(size, 32768);
      const desc = parseAddress(await read(queueKey(index, KEY_QUEUE_DESC)));
      const driver = parseAddress(await read(queueKey(index, KEY_QUEUE_DRIVER)));
      const device = parseAddress(await read(queueKey(index, KEY_QUEUE_DEVICE)));
      if (
        !setup ||
        parsedSize === undefined ||
        desc === undefined ||
        driver === undefined ||
        device === undefined
      ) {
        return refuse(`queue-${index} is malformed`);
      }
      setup.size = parsedSize;
      setup.desc = desc;
      setup.driver = driver;
      setup.device = device;
      setup.ready = true;
      const portText = await read(queueKey(index, KEY_EVENT_CHANNEL));
      if (portText !== undefined) {
        const port = parseBoundedInt(portText, 0xffff_ff);
        if (port === undefined) return refuse(`queue-${index}/event-channel is malformed`);
        try {
          const channel = events.bindInterdomain(this.options.frontendDomid, port);
          channel.onEvent(() => this.kick(index));
          this.queueChannels[index] = channel;
        } catch (error) {
          this.options.onError?.(error);
          return refuse(`queue-${index}/event-channel ${port} cannot be bound`);
        }
      }
    }
    const poolRef = await read(KEY_PERSISTENT_POOL_TABLE);
    if (poolRef !== undefined && this.options.pool) {
      const ref = parseBoundedInt(poolRef, 0xffff_ffff);
      try {
        if (ref === undefined) throw new RangeError('persistent-pool-table is malformed');
        this.counters.poolPages = this.options.pool.loadPoolTable(ref);
      } catch (error) {
        // A bad table only costs the pool: buffers are then mapped per request.
        this.options.onError?.(error);
      }
    }
    controller.setStatus(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    this.counters.connects++;
    this.refreshConfigPage();
    await this.setState(XENBUS_STATE_CONNECTED);
  }

  private kick(index: number): void {
    this.counters.kicks++;
    this.controller.kick(index);
  }

  /** The control channel: every queue without its own channel may have new buffers. */
  private kickAll(): void {
    for (let index = 0; index < this.controller.queueCount; index++) {
      if (!this.queueChannels[index] && this.controller.runningQueue(index)) this.kick(index);
    }
  }

  private notifyQueue(index: number): void {
    const channel = this.queueChannels[index] ?? this.control;
    if (!channel || channel.closed) return;
    this.counters.notifications++;
    channel.notify();
  }

  private configChanged(): void {
    this.refreshConfigPage();
    if (this.control && !this.control.closed) {
      this.counters.notifications++;
      this.control.notify();
    }
  }

  /** Rewrites the config page under the seqlock: generation odd, contents, generation even. */
  private refreshConfigPage(): void {
    const view = this.configView;
    if (!view) return;
    this.counters.configUpdates++;
    view.setUint32(CONFIG_PAGE_GENERATION, (this.generation + 1) >>> 0, true);
    view.setUint32(CONFIG_PAGE_STATUS, this.controller.status, true);
    const size = this.options.device.configSize;
    const bytes = this.controller.readConfig(0, size);
    new Uint8Array(view.buffer, view.byteOffset + CONFIG_PAGE_DATA, size).set(bytes);
    this.generation = (this.generation + 2) >>> 0;
    view.setUint32(CONFIG_PAGE_GENERATION, this.generation, true);
  }

  /** `config-write` = "<sequence> <offset> <hex bytes>" (at most 64 bytes per write). */
  private async configWrite(): Promise<void> {
    const value = await this.options.services.store.tryRead(`${this.paths.frontend}/${KEY_CONFIG_WRITE}`);
    if (value === undefined || value === this.lastConfigWrite) return;
    this.lastConfigWrite = value;
    const match = /^(\d{1,10}) (\d{1,4}) ([0-9a-f]{2,128})$/.exec(value.trim());
    if (!match || (match[3] as string).length % 2 !== 0 || this.state !== XENBUS_STATE_CONNECTED) {
      this.counters.ignoredConfigWrites++;
      return;
    }
    const hex = match[3] as string;
    const bytes = new Uint8Array(hex.length / 2);
    for (let i = 0; i < bytes.length; i++) bytes[i] = Number.parseInt(hex.slice(i * 2, i * 2 + 2), 16);
    if (this.controller.writeConfig(Number(match[2]), bytes)) this.counters.configWrites++;
    else this.counters.ignoredConfigWrites++;
    this.refreshConfigPage();
  }

  private unbind(): void {
    const channels = [this.control, ...this.queueChannels];
    this.control = undefined;
    this.queueChannels = [];
    for (const channel of channels) {
      try {
        channel?.close();
      } catch (error) {
        // The port is released with our handle anyway; the others must still be unbound.
        this.options.onError?.(error);
      }
    }
  }

  /** Stops the device and forgets the connection (the memory strategy unmaps everything). */
  private disconnect(): void {
    this.counters.disconnects++;
    this.unbind();
    this.controller.reset();
    this.refreshConfigPage();
  }

  private async closeWatches(): Promise<void> {
    const watches = this.watches.splice(0);
    for (const watch of watches) {
      try {
        await watch.close();
      } catch (error) {
        this.options.onError?.(error);
      }
    }
  }

  private endConfigGrant(): void {
    try {
      this.configPage?.unshare();
    } catch (error) {
      // The frontend still maps the page: the grant stays until it lets go (Linux does the same).
      this.options.onError?.(error);
    }
    this.configPage = undefined;
    this.configView = undefined;
  }

  /**
   * X.10.1: the frontend is gone. Clean up unaided: reset the device and unmap every grant,
   * unbind the event channels, end the config page grant, write Closed, then remove the
   * backend directory (nobody else will: the frontend's toolstack destroyed a domain, not
   * our device) and its per-frontend parent when that is left empty.
   */
  private async frontendGone(reason: XenbusGoneReason): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.goneReason = reason;
    this.counters.frontendGone++;
    await this.closeWatches();
    this.disconnect();
    this.endConfigGrant();
    const { store } = this.options.services;
    const base = this.paths.backend;
    try {
      if (await store.exists(base)) {
        await this.setState(XENBUS_STATE_CLOSED);
        await store.rm(base);
      }
      const parent = base.slice(0, base.lastIndexOf('/'));
      const siblings = await store.directory(parent).catch(() => undefined);
      if (siblings?.length === 0) await store.rm(parent);
    } catch (error) {
      this.options.onError?.(error);
    }
    this.options.onFrontendGone?.(reason);
  }

  /** Device removal or backend shutdown: disconnect, write Closed, end the config page grant. */
  async close(): Promise<void> {
    if (this.closed) {
      // Already closed, or cleaning up after its frontend (X.10.1): wait for that to end.
      await this.work;
      return;
    }
    this.closed = true;
    await this.work;
    await this.closeWatches();
    this.disconnect();
    if (await this.options.services.store.exists(this.paths.backend))
      await this.setState(XENBUS_STATE_CLOSED);
    this.endConfigGrant();
  }

  /**
   * A backend that died without closing (process killed): drops its connection state only.
   * The next backend's `start` writes InitWait and the frontend reconnects (spec: backend restart).
   */
  abandon(): void {
    this.closed = true;
    for (const watch of this.watches) void watch.close();
    this.watches = [];
    this.unbind();
    this.controller.reset();
  }
}
