import { createRegionsMemory, type MemoryRegion, type RegionsMemory } from '@xvio/grant-pool';
import { availRingSize, MAX_QUEUE_SIZE, USED_IDX, usedRingSize } from '../split-ring-wire.js';
import type { DeviceContext, VirtioDevice } from '../virtio-device.js';
import {
  CORE_FEATURES,
  hasFeature,
  RESERVED_FEATURE_MASK,
  VIRTIO_F_ACCESS_PLATFORM,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
} from '../virtio-features.js';
import type { Virtqueue } from '../virtqueue.js';
import { createVirtqueue } from '../virtqueue-factory.js';
import { VhostUserError } from './vhost-user-errors.js';
import { createInflightArea, type InflightArea, mapInflightArea } from './vhost-user-inflight.js';
import { closeFd, libc } from './vhost-user-libc.js';
import { checkRegion, mapFdRegion, type XenRegionMapper } from './vhost-user-memory.js';
import { type EventFdWatch, watchEventFd } from './vhost-user-poller.js';
import {
  CONFIG_FLAG_MIGRATION,
  CONFIG_HEADER_SIZE,
  CONFIG_PAYLOAD,
  decodeInflight,
  decodeRegion,
  decodeVringAddress,
  encodeConfig,
  encodeInflight,
  encodeU64,
  encodeVringState,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  FLAG_VERSION,
  FLAG_VERSION_MASK,
  INFLIGHT_MIN_SIZE,
  MAX_CONFIG_SIZE,
  MAX_FDS,
  MEM_TABLE_REGIONS,
  ProtocolFeature,
  payloadView,
  REGION_SIZE,
  REGION_SIZE_XEN,
  type RegionDescription,
  Request,
  requestName,
  SINGLE_REGION_OFFSET,
  U64_SIZE,
  VHOST_USER_F_PROTOCOL_FEATURES,
  type VhostUserMessage,
  VRING_ADDR_SIZE,
  VRING_FD_INDEX_MASK,
  VRING_FD_NOFD,
  VRING_STATE_SIZE,
  XEN_MMAP_FOREIGN,
  XEN_MMAP_GRANT,
  XEN_MMAP_KNOWN_FLAGS,
} from './vhost-user-wire.js';

/** Where log lines go; pino's methods fit. */
export interface VhostUserLogger {
  debug?(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

/** How a backend answers its frontend: one message, with fds attached. */
export type SendMessage = (
  request: number,
  flags: number,
  payload?: Uint8Array,
  fds?: readonly number[],
) => void;

export interface VhostUserBackendOptions {
  device: VirtioDevice;
  send: SendMessage;
  /** Maps regions flagged for Xen (XEN_MMAP); without it such regions are refused. */
  xenMapper?: XenRegionMapper;
  /** Answer to GET_MAX_MEM_SLOTS. Default 32. */
  maxMemSlots?: number;
  /**
   * Offer CONFIGURE_MEM_SLOTS (ADD/REM_MEM_REG instead of SET_MEM_TABLE). Default false:
   * QEMU 7.2 keeps its record of the regions it added across a reconnect and sends the
   * next backend none of them, so a restarted backend would see an empty memory table.
   * The messages are served either way.
   */
  offerMemorySlots?: boolean;
  /**
   * Offer XEN_MMAP (regions with Xen mmap flags and a domid). Default: when `xenMapper` is
   * set. QEMU 10 acks the bit without sending the longer region layout, so it must not be
   * offered to QEMU.
   */
  offerXenMmap?: boolean;
  /**
   * Receives the display socket of QEMU's `vhost-user-gpu` (GPU_SET_SOCKET, sent when the
   * driver sets DRIVER_OK, again after every reset). The callback owns `fd` from the call
   * on. Without it the request is refused and the fd closed.
   */
  gpuSocket?: (fd: number, device: VirtioDevice) => void;
  /**
   * Adaptive polling, off by default (0): after a ring has had work, keep looking at its
   * avail ring for this many microseconds (renewed whenever more work is found) before
   * going back to waiting for kicks, with kicks suppressed meanwhile, as QEMU's iothreads
   * do with `poll-max-ns` and KVM with `halt_poll_ns`. It trades CPU time, spent only while
   * a guest is using the device, for the wake-up a kick costs, which dominates when the
   * guest keeps one request in flight. The loop never blocks the event loop (each look is
   * one turn of it) and yields the CPU to other runnable threads between looks; a ring whose
   * device leaves work where it is (a deferring device) stops polling at once.
   * An integer from 0 to 10000.
   */
  pollUs?: number;
  log?: VhostUserLogger;
}

/** Largest `pollUs`. */
export const MAX_POLL_US = 10_000;

/** `pollUs` checked (default 0); a bad value throws a RangeError naming the option. */
export function checkPollUs(pollUs: number | undefined): number {
  const value = pollUs ?? 0;
  if (!Number.isInteger(value) || value < 0 || value > MAX_POLL_US) {
    throw new RangeError(`pollUs: expected an integer from 0 to ${MAX_POLL_US} microseconds, got ${value}`);
  }
  return value;
}

/** Protocol features xvio implements (CONFIG, CONFIGURE_MEM_SLOTS and XEN_MMAP are offered only where they fit). */
export const OFFERED_PROTOCOL_FEATURES =
  ProtocolFeature.MQ |
  ProtocolFeature.REPLY_ACK |
  ProtocolFeature.CONFIG |
  ProtocolFeature.INFLIGHT_SHMFD |
  ProtocolFeature.RESET_DEVICE |
  ProtocolFeature.CONFIGURE_MEM_SLOTS |
  ProtocolFeature.XEN_MMAP;

export interface VhostUserMetrics {
  messages: number;
  /** Refusals answered (or logged when no reply was asked for). */
  refused: number;
  kicks: number;
  calls: number;
  /** Times a polling look found work (with `pollUs`): each is a kick the guest did not need. */
  polled: number;
  /** Poll windows opened (with `pollUs`). */
  pollWindows: number;
  ringStarts: number;
  ringStops: number;
  activations: number;
  deviceFailures: number;
  configChangesDropped: number;
}

interface Vring {
  readonly index: number;
  num: number;
  /** Next avail index (split) or the packed state as GET/SET_VRING_BASE carry it. */
  base: number;
  address: { desc: bigint; used: bigint; avail: bigint } | undefined;
  kickSet: boolean;
  /** Owns the kick eventfd while the ring has one. */
  kickWatch: EventFdWatch | undefined;
  callFd: number;
  errFd: number;
  enabled: boolean;
  queue: Virtqueue | undefined;
  /** While polling: when the poll window ends (performance.now() ms). */
  pollUntil: number;
  polling: boolean;
}

/** Frontend region as it was added, with the host pieces that map it. */
interface FrontendRegion {
  readonly description: RegionDescription;
  readonly pieces: MemoryRegion[];
}

const one = encodeU64(1n);

/**
 * The vhost-user protocol for one connection, driving one device (QEMU's
 * docs/interop/vhost-user.rst). It plays the part `DeviceController` plays for register
 * transports: features are negotiated by message, rings start when they have an address,
 * a kick fd and (with protocol features) are enabled, and stop on GET_VRING_BASE. The
 * device is activated when its first ring starts and reset when its last ring stops.
 *
 * vhost-user starts rings one by one, so `context.queues` is live: a ring's entry appears
 * when it starts and goes when it stops. Devices look their queue up when notified (as
 * `serviceQueue` does).
 */
export class VhostUserBackend {
  readonly device: VirtioDevice;
  readonly memory: RegionsMemory = createRegionsMemory();
  readonly offeredFeatures: bigint;
  /** OFFERED_PROTOCOL_FEATURES, without CONFIG for a device that has no config space. */
  readonly offeredProtocolFeatures: bigint;
  readonly metrics: VhostUserMetrics = {
    messages: 0,
    refused: 0,
    kicks: 0,
    calls: 0,
    polled: 0,
    pollWindows: 0,
    ringStarts: 0,
    ringStops: 0,
    activations: 0,
    deviceFailures: 0,
    configChangesDropped: 0,
  };
  private features = 0n;
  private protocolFeatures = 0n;
  private readonly vrings: Vring[];
  private readonly liveQueues: (Virtqueue | undefined)[];
  private frontendRegions: FrontendRegion[] = [];
  private context: { abort: AbortController; failed: boolean } | undefined;
  private inflight: InflightArea | undefined;
  private closed = false;

  private readonly pollMs: number;

  constructor(private readonly options: VhostUserBackendOptions) {
    this.device = options.device;
    this.pollMs = checkPollUs(options.pollUs) / 1000;
    const deviceBits = this.device.features & (~RESERVED_FEATURE_MASK | CORE_FEATURES);
    // The core implements indirect descriptors and event suppression for every device, and
    // QEMU 7.2's vhost-user-rng acks both even when not offered: offer them. Platform
    // access (IOTLB) is not implemented over vhost-user.
    this.offeredFeatures =
      (deviceBits |
        VIRTIO_F_VERSION_1 |
        VIRTIO_F_INDIRECT_DESC |
        VIRTIO_F_EVENT_IDX |
        VHOST_USER_F_PROTOCOL_FEATURES) &
      ~VIRTIO_F_ACCESS_PLATFORM;
    // QEMU warns when a backend offers CONFIG to a device model that has no config space.
    this.offeredProtocolFeatures =
      OFFERED_PROTOCOL_FEATURES &
      ~(this.device.configSize > 0 ? 0n : ProtocolFeature.CONFIG) &
      ~(options.offerMemorySlots ? 0n : ProtocolFeature.CONFIGURE_MEM_SLOTS) &
      ~((options.offerXenMmap ?? options.xenMapper !== undefined) ? 0n : ProtocolFeature.XEN_MMAP);
    this.vrings = this.device.queueMaxSizes.map((max, index) => ({
      index,
      num: Math.min(max, MAX_QUEUE_SIZE),
      base: 0,
      address: undefined,
      kickSet: false,
      kickWatch: undefined,
      callFd: -1,
      errFd: -1,
      enabled: false,
      queue: undefined,
      pollUntil: 0,
      polling: false,
    }));
    this.liveQueues = this.vrings.map(() => undefined);
  }

  /** Features the frontend acked with SET_FEATURES. */
  get negotiatedFeatures(): bigint {
    return this.features;
  }

  get negotiatedProtocolFeatures(): bigint {
    return this.protocolFeatures;
  }

  /** Whether the device is activated (some ring runs). */
  get active(): boolean {
    return this.context !== undefined;
  }

  /** The queue of a running ring. */
  runningQueue(index: number): Virtqueue | undefined {
    return this.vrings[index]?.queue;
  }

  private log(level: 'debug' | 'info' | 'warn' | 'error', message: string): void {
    const log = this.options.log;
    if (!log) return;
    if (level === 'debug') log.debug?.(message);
    else log[level](message);
  }

  /**
   * Handles one message; its fds are taken or closed. Throws a fatal `VhostUserError` when
   * the connection must end; refusals are answered (or logged) here.
   */
  handle(message: VhostUserMessage): void {
    const fds = new FdList(message.fds);
    this.metrics.messages++;
    try {
      if (this.closed) return;
      if ((message.flags & FLAG_VERSION_MASK) !== FLAG_VERSION) {
        throw new VhostUserError(
          'invalid-version',
          `header version ${message.flags & FLAG_VERSION_MASK}, expected 1`,
        );
      }
      if (message.fds.length > MAX_FDS)
        throw new VhostUserError('invalid-fds', `${message.fds.length} fds on one message`);
      this.log(
        'debug',
        `${requestName(message.request)} size=${message.payload.length} fds=${message.fds.length}`,
      );
      const reply = this.dispatch(message, fds);
      fds.expectConsumed(message.request);
      if (reply !== undefined) {
        this.options.send(message.request, FLAG_VERSION | FLAG_REPLY, reply.payload, reply.fds);
      } else if (message.flags & FLAG_NEED_REPLY) {
        this.ack(message.request, 0n);
      }
    } catch (error) {
      const failure = VhostUserError.isInstance(error)
        ? error
        : new VhostUserError('handler-failed', `${requestName(message.request)} failed`, { cause: error });
      if (failure.isFatal || hasMandatoryReply(message.request)) {
        // A request whose reply is its answer cannot be refused in band: end the connection.
        throw failure.isFatal
          ? failure
          : new VhostUserError(failure.code, failure.message, { cause: failure, fatal: true });
      }
      this.metrics.refused++;
      this.log('warn', `${requestName(message.request)} refused: ${failure.message}`);
      if (message.flags & FLAG_NEED_REPLY) this.ack(message.request, 1n);
    } finally {
      fds.closeRest();
    }
  }

  private ack(request: number, status: bigint): void {
    this.options.send(request, FLAG_VERSION | FLAG_REPLY, encodeU64(status));
  }

  private dispatch(
    message: VhostUserMessage,
    fds: FdList,
  ): { payload: Uint8Array; fds?: number[] } | undefined {
    const { payload } = message;
    switch (message.request) {
      case Request.GET_FEATURES:
        expectSize(message, 0);
        return { payload: encodeU64(this.offeredFeatures) };
      case Request.SET_FEATURES:
        expectSize(message, U64_SIZE);
        this.setFeatures(payloadView(payload).getBigUint64(0, true));
        return undefined;
      case Request.GET_PROTOCOL_FEATURES:
        expectSize(message, 0);
        return { payload: encodeU64(this.offeredProtocolFeatures) };
      case Request.SET_PROTOCOL_FEATURES: {
        expectSize(message, U64_SIZE);
        const wanted = payloadView(payload).getBigUint64(0, true);
        if (wanted & ~this.offeredProtocolFeatures) {
          throw new VhostUserError(
            'invalid-features',
            `protocol features 0x${wanted.toString(16)} were not offered`,
          );
        }
        this.protocolFeatures = wanted;
        return undefined;
      }
      case Request.SET_OWNER:
        expectSize(message, 0);
        return undefined;
      case Request.RESET_OWNER:
        // Deprecated; the spec recommends treating it as "disable all rings".
        this.stopAllRings();
        return undefined;
      case Request.RESET_DEVICE:
        expectSize(message, 0);
        this.resetDevice();
        return undefined;
      case Request.GET_QUEUE_NUM:
        expectSize(message, 0);
        return { payload: encodeU64(BigInt(this.vrings.length)) };
      case Request.GET_MAX_MEM_SLOTS:
        expectSize(message, 0);
        return { payload: encodeU64(BigInt(this.options.maxMemSlots ?? 32)) };
      case Request.SET_MEM_TABLE:
        this.setMemTable(message, fds);
        return undefined;
      case Request.ADD_MEM_REG:
        this.addMemRegion(message, fds);
        return undefined;
      case Request.REM_MEM_REG:
        this.removeMemRegion(message, fds);
        return undefined;
      case Request.SET_VRING_NUM: {
        const { ring, num } = this.vringState(message);
        if (num < 1 || num > this.device.queueMaxSizes[ring.index]!) {
          throw new VhostUserError('invalid-vring-config', `vring ${ring.index} size ${num} out of range`);
        }
        ring.num = num;
        return undefined;
      }
      case Request.SET_VRING_BASE: {
        const { ring, num } = this.vringState(message);
        if (num > 0xffff_ffff) throw new VhostUserError('invalid-vring-config', `vring base ${num}`);
        ring.base = num;
        return undefined;
      }
      case Request.GET_VRING_BASE: {
        const { ring } = this.vringState(message);
        this.stopRing(ring);
        return { payload: encodeVringState(ring.index, ring.base) };
      }
      case Request.SET_VRING_ADDR:
        this.setVringAddress(message);
        return undefined;
      case Request.SET_VRING_KICK:
        this.setVringKick(message, fds);
        return undefined;
      case Request.SET_VRING_CALL: {
        const { ring, fd } = this.vringFd(message, fds);
        closeFd(ring.callFd);
        ring.callFd = fd;
        // libvhost-user does the same: a call lost while the fd was being replaced (a
        // reconnect) would leave the driver waiting forever; a spurious one is harmless.
        if (fd >= 0 && ring.queue) this.signal(fd);
        return undefined;
      }
      case Request.SET_VRING_ERR: {
        const { ring, fd } = this.vringFd(message, fds);
        closeFd(ring.errFd);
        ring.errFd = fd;
        return undefined;
      }
      case Request.SET_VRING_ENABLE: {
        const { ring, num } = this.vringState(message);
        if (num > 1) throw new VhostUserError('invalid-vring-config', `enable value ${num}`);
        ring.enabled = num === 1;
        if (ring.enabled) this.maybeStart(ring);
        else this.pauseRing(ring);
        return undefined;
      }
      case Request.GET_CONFIG:
        return { payload: this.getConfig(message) };
      case Request.SET_CONFIG:
        this.setConfig(message);
        return undefined;
      case Request.GET_INFLIGHT_FD:
        return this.getInflight(message);
      case Request.SET_INFLIGHT_FD:
        this.setInflight(message, fds);
        return undefined;
      case Request.GPU_SET_SOCKET: {
        const take = this.options.gpuSocket;
        if (!take)
          throw new VhostUserError('unsupported-request', 'GPU_SET_SOCKET without a gpu socket handler');
        expectSize(message, 0);
        fds.expect(1, message.request);
        take(fds.take(), this.device);
        return undefined;
      }
      default:
        throw new VhostUserError('unsupported-request', `${requestName(message.request)} is not supported`);
    }
  }

  private setFeatures(features: bigint): void {
    const unknown = features & ~this.offeredFeatures;
    if (unknown)
      throw new VhostUserError('invalid-features', `features 0x${unknown.toString(16)} were not offered`);
    const deviceFeatures = features & ~VHOST_USER_F_PROTOCOL_FEATURES;
    if (this.device.acceptFeatures && !this.device.acceptFeatures(deviceFeatures)) {
      throw new VhostUserError(
        'invalid-features',
        `${this.device.name} refuses features 0x${deviceFeatures.toString(16)}`,
      );
    }
    this.features = features;
  }

  private get packed(): boolean {
    return hasFeature(this.features, VIRTIO_F_RING_PACKED);
  }

  private vring(index: number): Vring {
    const ring = this.vrings[index];
    if (ring === undefined) {
      throw new VhostUserError('invalid-vring', `vring ${index} (the device has ${this.vrings.length})`);
    }
    return ring;
  }

  private vringState(message: VhostUserMessage): { ring: Vring; num: number } {
    expectSize(message, VRING_STATE_SIZE);
    const view = payloadView(message.payload);
    return { ring: this.vring(view.getUint32(0, true)), num: view.getUint32(4, true) };
  }

  /** Kick/call/err: the index in bits 0-7, NOFD in bit 8, and exactly one fd unless NOFD. */
  private vringFd(message: VhostUserMessage, fds: FdList): { ring: Vring; fd: number } {
    expectSize(message, U64_SIZE);
    const value = payloadView(message.payload).getBigUint64(0, true);
    if (value & ~(VRING_FD_INDEX_MASK | VRING_FD_NOFD)) {
      throw new VhostUserError('invalid-size', `vring fd payload 0x${value.toString(16)} has unknown bits`);
    }
    const noFd = (value & VRING_FD_NOFD) !== 0n;
    fds.expect(noFd ? 0 : 1, message.request);
    const ring = this.vring(Number(value & VRING_FD_INDEX_MASK));
    return { ring, fd: noFd ? -1 : fds.take() };
  }

  private setVringAddress(message: VhostUserMessage): void {
    expectSize(message, VRING_ADDR_SIZE);
    const address = decodeVringAddress(message.payload);
    const ring = this.vring(address.index);
    ring.address = { desc: address.desc, used: address.used, avail: address.avail };
    if (ring.queue) {
      // New addresses for a running ring (QEMU does this when dirty logging toggles).
      this.pauseRing(ring);
      this.maybeStart(ring);
    }
  }

  private setVringKick(message: VhostUserMessage, fds: FdList): void {
    const { ring, fd } = this.vringFd(message, fds);
    ring.kickWatch?.close();
    ring.kickWatch = undefined;
    ring.kickSet = true;
    if (fd >= 0) {
      ring.kickWatch = watchEventFd(
        fd,
        () => this.kicked(ring),
        (error) => this.log('warn', `vring ${ring.index} kick fd failed: ${error.message}`),
      );
    }
    this.maybeStart(ring);
  }

  /** The eventfd's counter was read (and reset) already: one kick covers everything queued. */
  private kicked(ring: Vring): void {
    this.metrics.kicks++;
    this.serve(ring);
  }

  /** The ring has work: the device serves it; with `pollUs`, a poll window opens. */
  private serve(ring: Vring): void {
    if (!ring.queue || !this.context || this.context.failed) return;
    this.notifyDevice(ring.index);
    if (this.pollMs > 0 && !ring.polling) this.startPolling(ring);
  }

  /**
   * Opens a poll window on a ring that just had work (see `pollUs`): kicks are suppressed
   * and every turn of the event loop looks at the avail ring until the window passes with
   * nothing new. Ends at once when the ring stops, the device fails or the backend closes.
   */
  private startPolling(ring: Vring): void {
    const queue = ring.queue;
    if (!queue) return;
    ring.polling = true;
    ring.pollUntil = performance.now() + this.pollMs;
    this.metrics.pollWindows++;
    queue.disableNotification();
    const c = libc();
    const look = (): void => {
      try {
        if (lookOnce()) {
          c.schedYield();
          setImmediate(look);
        }
      } catch (error) {
        // The driver corrupted the ring (avail.idx out of range, spec 2.7.13.3): NEEDS_RESET,
        // as when a kick finds it; never an exception out of the event loop.
        ring.polling = false;
        this.deviceFailed(error);
      }
    };
    /** One look; true while the window stays open. */
    const lookOnce = (): boolean => {
      if (ring.queue !== queue || this.closed || !this.context || this.context.failed || queue.broken) {
        ring.polling = false;
        return false;
      }
      if (queue.hasAvailable()) {
        const before = queue.getState().nextAvail;
        this.notifyDevice(ring.index);
        if (ring.queue !== queue || !this.context || this.context.failed) {
          ring.polling = false;
          return false;
        }
        if (queue.getState().nextAvail === before) {
          // The device left the work where it is (deferring): it notifies itself when it can
          // serve; new chains kick again.
          ring.polling = false;
          queue.enableNotification();
          return false;
        }
        this.metrics.polled++;
        queue.disableNotification();
        ring.pollUntil = performance.now() + this.pollMs;
      } else if (performance.now() >= ring.pollUntil) {
        ring.polling = false;
        // Ask for kicks again; what arrived meanwhile is served (and polled for) now.
        if (queue.enableNotification()) this.serve(ring);
        return false;
      }
      return true;
    };
    setImmediate(look);
  }

  private notifyDevice(index: number): void {
    try {
      this.device.notify(index);
    } catch (error) {
      this.deviceFailed(error);
    }
  }

  private signal(fd: number): void {
    libc().write(fd, one, 8);
    this.metrics.calls++;
  }

  /**
   * Starts a ring that has everything it needs: a size, addresses that translate through
   * the memory table, a kick (fd or NOFD) and, with protocol features, the enable.
   */
  private maybeStart(ring: Vring): void {
    if (ring.queue || !ring.kickSet || ring.address === undefined) return;
    const needsEnable = hasFeature(this.features, VHOST_USER_F_PROTOCOL_FEATURES);
    if (needsEnable && !ring.enabled) return;
    if (this.context?.failed) return;
    let queue: Virtqueue;
    try {
      queue = this.createQueue(ring);
    } catch (error) {
      this.log('warn', `vring ${ring.index} cannot start: ${(error as Error).message}`);
      if (ring.errFd >= 0) this.signal(ring.errFd);
      return;
    }
    ring.queue = queue;
    this.liveQueues[ring.index] = this.inflight ? this.inflight.track(ring.index, queue) : queue;
    this.metrics.ringStarts++;
    this.ensureActive();
    // A kick may have come before the ring could start (QEMU kicks before the enable).
    if (this.context && !this.context.failed) this.notifyDevice(ring.index);
  }

  private createQueue(ring: Vring): Virtqueue {
    const address = ring.address!;
    const num = ring.num;
    const translate = (user: bigint, length: number, what: string) => {
      const guest = this.memory.translateUserAddress(user, length);
      if (guest === undefined) {
        throw new VhostUserError(
          'invalid-vring-config',
          `${what} at 0x${user.toString(16)} is outside the memory table`,
        );
      }
      return guest;
    };
    const packed = this.packed;
    // Packed rings: descriptor ring 16 bytes per entry, event suppression areas 4 bytes.
    const desc = translate(address.desc, 16 * num, 'descriptor table');
    const driver = translate(address.avail, packed ? 4 : availRingSize(num), 'avail ring');
    const device = translate(address.used, packed ? 4 : usedRingSize(num), 'used ring');
    const config = {
      size: num,
      maxSize: this.device.queueMaxSizes[ring.index]!,
      desc,
      driver,
      device,
      eventIdx: hasFeature(this.features, VIRTIO_F_EVENT_IDX),
      indirect: hasFeature(this.features, VIRTIO_F_INDIRECT_DESC),
      packed,
    };
    if (packed) {
      const base = ring.base;
      return createVirtqueue(this.memory, config, {
        nextAvail: base & 0x7fff,
        availWrap: (base & 0x8000) !== 0,
        nextUsed: (base >>> 16) & 0x7fff,
        usedWrap: ((base >>> 16) & 0x8000) !== 0,
      });
    }
    // The used index is the device's: after a reconnect it is what the guest last saw,
    // which may be behind the avail base when requests were in flight.
    const used = new Uint8Array(2);
    this.memory.read(device + BigInt(USED_IDX), used);
    const nextUsed = used[0]! | (used[1]! << 8);
    const resumed = this.inflight?.resumeBase(ring.index, this.memory, device, num);
    return createVirtqueue(this.memory, config, { nextAvail: (resumed ?? ring.base) & 0xffff, nextUsed });
  }

  private ensureActive(): void {
    if (this.context) return;
    const abort = new AbortController();
    const state = { abort, failed: false };
    this.context = state;
    const context: DeviceContext = {
      memory: this.memory,
      features: this.features & ~VHOST_USER_F_PROTOCOL_FEATURES,
      queues: this.liveQueues,
      signal: abort.signal,
      interrupt: (queueIndex) => {
        if (abort.signal.aborted) return;
        const fd = this.vrings[queueIndex]?.callFd ?? -1;
        if (fd >= 0) this.signal(fd);
      },
      configChanged: () => {
        // Config change notifications need the backend request channel, which xvio does
        // not offer: counted so a device that relies on them shows up in metrics.
        this.metrics.configChangesDropped++;
      },
      fail: (error) => {
        if (!abort.signal.aborted) this.deviceFailed(error);
      },
    };
    this.metrics.activations++;
    try {
      this.device.activate(context);
    } catch (error) {
      this.deviceFailed(error);
    }
  }

  /** The driver broke the device (spec 2.1.2 NEEDS_RESET): stop and tell the frontend through the err fds. */
  private deviceFailed(error: unknown): void {
    const context = this.context;
    if (!context || context.failed) return;
    context.failed = true;
    context.abort.abort();
    this.metrics.deviceFailures++;
    this.log('warn', `${this.device.name} needs reset: ${(error as Error)?.message ?? String(error)}`);
    for (const ring of this.vrings) if (ring.queue && ring.errFd >= 0) this.signal(ring.errFd);
  }

  /** Takes a ring out of service, keeping its position in `base`. */
  private pauseRing(ring: Vring): void {
    const queue = ring.queue;
    if (!queue) return;
    ring.base = this.ringBase(queue);
    ring.queue = undefined;
    this.liveQueues[ring.index] = undefined;
    this.metrics.ringStops++;
    if (this.vrings.every((r) => r.queue === undefined)) this.deactivate();
  }

  /** GET_VRING_BASE: the ring stops; its kick and call fds are dropped (new ones come with the next start). */
  private stopRing(ring: Vring): void {
    this.pauseRing(ring);
    ring.kickWatch?.close();
    ring.kickWatch = undefined;
    ring.kickSet = false;
    closeFd(ring.callFd);
    ring.callFd = -1;
    ring.enabled = false;
  }

  private stopAllRings(): void {
    for (const ring of this.vrings) this.stopRing(ring);
    this.deactivate();
  }

  /** The device's last ring stopped: reset it (spec 2.1.2) and drop ring views. */
  private deactivate(): void {
    const context = this.context;
    if (!context) return;
    this.context = undefined;
    context.abort.abort();
    try {
      this.device.reset();
    } catch (error) {
      this.log('error', `${this.device.name} reset failed: ${(error as Error)?.message ?? String(error)}`);
    }
    this.memory.unmapAll();
  }

  private resetDevice(): void {
    this.stopAllRings();
    for (const ring of this.vrings) {
      closeFd(ring.errFd);
      ring.errFd = -1;
      ring.address = undefined;
      ring.base = 0;
      ring.num = Math.min(this.device.queueMaxSizes[ring.index]!, MAX_QUEUE_SIZE);
    }
    this.features = 0n;
  }

  private get regionStride(): number {
    return this.protocolFeatures & ProtocolFeature.XEN_MMAP ? REGION_SIZE_XEN : REGION_SIZE;
  }

  /** Maps one frontend region (fd or Xen mapper); the fd is consumed either way. */
  private mapRegion(description: RegionDescription, fd: number): MemoryRegion[] {
    try {
      checkRegion(description);
      if (description.xenFlags !== 0) {
        if (
          description.xenFlags & ~XEN_MMAP_KNOWN_FLAGS ||
          !(description.xenFlags & (XEN_MMAP_FOREIGN | XEN_MMAP_GRANT))
        ) {
          throw new VhostUserError('invalid-region', `xen mmap flags 0x${description.xenFlags.toString(16)}`);
        }
        const mapper = this.options.xenMapper;
        if (!mapper) {
          throw new VhostUserError(
            'xen-mapping-unavailable',
            `region at 0x${description.guestAddress.toString(16)} of domain ${description.domid} needs a Xen mapper`,
          );
        }
        try {
          return mapper.map({ ...description, fd });
        } catch (error) {
          if (VhostUserError.isInstance(error)) throw error;
          throw new VhostUserError('host-failure', `xen mapping of domain ${description.domid} failed`, {
            cause: error,
          });
        }
      }
      return mapFdRegion(fd, description);
    } finally {
      closeFd(fd);
    }
  }

  private setMemTable(message: VhostUserMessage, fds: FdList): void {
    const stride = this.regionStride;
    if (message.payload.length < MEM_TABLE_REGIONS)
      throw new VhostUserError('invalid-size', 'memory table too short');
    const view = payloadView(message.payload);
    const count = view.getUint32(0, true);
    if (count > MAX_FDS || message.payload.length < MEM_TABLE_REGIONS + count * stride) {
      throw new VhostUserError(
        'invalid-size',
        `memory table of ${count} regions in ${message.payload.length} bytes`,
      );
    }
    if (message.payload.length > MEM_TABLE_REGIONS + MAX_FDS * stride) {
      throw new VhostUserError('invalid-size', `memory table of ${message.payload.length} bytes`);
    }
    fds.expect(count, message.request);
    const descriptions = Array.from({ length: count }, (_, i) =>
      decodeRegion(view, MEM_TABLE_REGIONS + i * stride, stride === REGION_SIZE_XEN),
    );
    const taken = descriptions.map(() => fds.take());
    const mapped: FrontendRegion[] = [];
    try {
      descriptions.forEach((description, i) => {
        mapped.push({ description, pieces: this.mapRegion(description, taken[i]!) });
        taken[i] = -1;
      });
      // Validate the whole table before touching the current one.
      try {
        createRegionsMemory(mapped.flatMap((r) => r.pieces));
      } catch (error) {
        throw new VhostUserError('invalid-region', (error as Error).message);
      }
    } catch (error) {
      for (const fd of taken) closeFd(fd);
      for (const region of mapped) for (const piece of region.pieces) piece.unmap?.();
      throw error;
    }
    // Running rings hold views into the old table: pause them, swap, restart them on the
    // new one (their addresses are re-translated).
    const running = this.vrings.filter((ring) => ring.queue !== undefined);
    const context = this.context;
    for (const ring of running) this.pauseRingKeepingDevice(ring);
    this.memory.unmapAll();
    this.memory.clear();
    this.frontendRegions = mapped;
    for (const piece of mapped.flatMap((r) => r.pieces)) this.memory.addRegion(piece);
    for (const ring of running) this.maybeStart(ring);
    if (context && this.context !== context) this.log('warn', 'memory table changed while the device ran');
  }

  /** Like pauseRing, but keeps the device active (for a memory table swap). */
  private pauseRingKeepingDevice(ring: Vring): void {
    const queue = ring.queue;
    if (!queue) return;
    ring.base = this.ringBase(queue);
    ring.queue = undefined;
    this.liveQueues[ring.index] = undefined;
  }

  /**
   * A ring's position as GET/SET_VRING_BASE carry it: split, the next avail index; packed,
   * avail index and wrap counter in bits 0-15, used index and wrap counter in bits 16-31
   * (QEMU's virtio_queue_set_last_avail_idx).
   */
  private ringBase(queue: Virtqueue): number {
    const state = queue.getState();
    if (!this.packed) return state.nextAvail;
    const avail = (state.nextAvail & 0x7fff) | (state.availWrap ? 0x8000 : 0);
    const used = (state.nextUsed & 0x7fff) | (state.usedWrap ? 0x8000 : 0);
    return (avail | (used << 16)) >>> 0;
  }

  private singleRegion(message: VhostUserMessage): RegionDescription {
    const stride = this.regionStride;
    expectSize(message, SINGLE_REGION_OFFSET + stride);
    return decodeRegion(payloadView(message.payload), SINGLE_REGION_OFFSET, stride === REGION_SIZE_XEN);
  }

  private addMemRegion(message: VhostUserMessage, fds: FdList): void {
    const description = this.singleRegion(message);
    fds.expect(1, message.request);
    if (this.frontendRegions.length >= (this.options.maxMemSlots ?? 32)) {
      closeFd(fds.take());
      throw new VhostUserError('invalid-region', 'no free memory slot');
    }
    const pieces = this.mapRegion(description, fds.take());
    const added: MemoryRegion[] = [];
    try {
      for (const piece of pieces) {
        this.memory.addRegion(piece);
        added.push(piece);
      }
    } catch (error) {
      for (const piece of added) this.memory.removeRegion(piece.guestAddress, piece.bytes.length);
      for (const piece of pieces) piece.unmap?.();
      throw new VhostUserError('invalid-region', (error as Error).message);
    }
    this.frontendRegions.push({ description, pieces });
  }

  private removeMemRegion(message: VhostUserMessage, fds: FdList): void {
    const description = this.singleRegion(message);
    // QEMU attaches the region's fd to REM_MEM_REG too; it is not needed.
    if (fds.remaining > 1) throw new VhostUserError('invalid-fds', 'REM_MEM_REG with more than one fd');
    if (fds.remaining === 1) closeFd(fds.take());
    const index = this.frontendRegions.findIndex(
      (r) =>
        r.description.guestAddress === description.guestAddress && r.description.size === description.size,
    );
    if (index < 0) {
      throw new VhostUserError('invalid-region', `no region at 0x${description.guestAddress.toString(16)}`);
    }
    const region = this.frontendRegions[index]!;
    const start = description.guestAddress;
    const end = start + description.size;
    for (const ring of this.vrings) {
      if (!ring.queue || !ring.address) continue;
      for (const user of [ring.address.desc, ring.address.avail, ring.address.used]) {
        const guest = this.memory.translateUserAddress(user, 1);
        if (guest !== undefined && guest >= start && guest < end) {
          throw new VhostUserError('invalid-region', `vring ${ring.index} lives in the region being removed`);
        }
      }
    }
    this.frontendRegions.splice(index, 1);
    for (const piece of region.pieces) {
      if (!this.memory.removeRegion(piece.guestAddress, piece.bytes.length)) piece.unmap?.();
    }
  }

  private getConfig(message: VhostUserMessage): Uint8Array {
    if (message.payload.length < CONFIG_HEADER_SIZE)
      throw new VhostUserError('invalid-size', 'config header too short');
    const view = payloadView(message.payload);
    const offset = view.getUint32(0, true);
    const size = view.getUint32(4, true);
    const flags = view.getUint32(8, true);
    if (size > MAX_CONFIG_SIZE || message.payload.length !== CONFIG_HEADER_SIZE + size) {
      throw new VhostUserError('invalid-size', `config access of ${size} bytes in ${message.payload.length}`);
    }
    if (offset + size > this.device.configSize) {
      // The spec's error answer for GET_CONFIG is an empty payload.
      this.metrics.refused++;
      return new Uint8Array(0);
    }
    const data = new Uint8Array(size);
    if (size > 0) this.device.readConfig(offset, data);
    return encodeConfig({ offset, size, flags }, data);
  }

  private setConfig(message: VhostUserMessage): void {
    if (message.payload.length < CONFIG_HEADER_SIZE)
      throw new VhostUserError('invalid-size', 'config header too short');
    const view = payloadView(message.payload);
    const offset = view.getUint32(0, true);
    const size = view.getUint32(4, true);
    const flags = view.getUint32(8, true);
    if (size > MAX_CONFIG_SIZE || message.payload.length !== CONFIG_HEADER_SIZE + size) {
      throw new VhostUserError('invalid-size', `config access of ${size} bytes in ${message.payload.length}`);
    }
    if (flags & ~CONFIG_FLAG_MIGRATION || offset + size > this.device.configSize) {
      throw new VhostUserError('invalid-config', `config write at ${offset}+${size} (flags ${flags})`);
    }
    if (size > 0) this.device.writeConfig(offset, message.payload.slice(CONFIG_PAYLOAD));
  }

  private getInflight(message: VhostUserMessage): { payload: Uint8Array; fds: number[] } {
    if (message.payload.length < INFLIGHT_MIN_SIZE)
      throw new VhostUserError('invalid-size', 'inflight description too short');
    const request = decodeInflight(message.payload);
    if (request.numQueues === 0 || request.numQueues > this.vrings.length || request.queueSize === 0) {
      throw new VhostUserError(
        'invalid-inflight',
        `inflight area for ${request.numQueues} queues of ${request.queueSize}`,
      );
    }
    this.inflight?.close();
    this.inflight = undefined;
    const area = createInflightArea(request.numQueues, request.queueSize);
    this.inflight = area;
    return {
      payload: encodeInflight({
        mmapSize: BigInt(area.size),
        mmapOffset: 0n,
        numQueues: request.numQueues,
        queueSize: request.queueSize,
      }),
      fds: [area.fd],
    };
  }

  private setInflight(message: VhostUserMessage, fds: FdList): void {
    if (message.payload.length < INFLIGHT_MIN_SIZE)
      throw new VhostUserError('invalid-size', 'inflight description too short');
    fds.expect(1, message.request);
    const description = decodeInflight(message.payload);
    const fd = fds.take();
    try {
      if (description.numQueues > this.vrings.length || description.queueSize > MAX_QUEUE_SIZE) {
        throw new VhostUserError('invalid-inflight', `inflight area for ${description.numQueues} queues`);
      }
      const area = mapInflightArea(fd, description);
      this.inflight?.close();
      this.inflight = area;
    } finally {
      closeFd(fd);
    }
  }

  /** Ends the connection's state: rings stop, the device resets, every fd and mapping goes. */
  close(): void {
    if (this.closed) return;
    this.stopAllRings();
    for (const ring of this.vrings) {
      closeFd(ring.errFd);
      ring.errFd = -1;
    }
    this.memory.unmapAll();
    this.memory.clear();
    this.frontendRegions = [];
    this.inflight?.close();
    this.inflight = undefined;
    this.closed = true;
  }
}

/** Requests whose reply is their answer: a refusal cannot be told, so it ends the connection. */
function hasMandatoryReply(request: number): boolean {
  return (
    request === Request.GET_FEATURES ||
    request === Request.GET_PROTOCOL_FEATURES ||
    request === Request.GET_VRING_BASE ||
    request === Request.GET_QUEUE_NUM ||
    request === Request.GET_MAX_MEM_SLOTS ||
    request === Request.GET_INFLIGHT_FD
  );
}

function expectSize(message: VhostUserMessage, size: number): void {
  if (message.payload.length !== size) {
    throw new VhostUserError(
      'invalid-size',
      `${requestName(message.request)} payload of ${message.payload.length} bytes, expected ${size}`,
    );
  }
}

/** The fds of one message: handlers take what they need; the rest are closed. */
class FdList {
  private next = 0;
  private checked = false;

  constructor(private readonly fds: number[]) {}

  get remaining(): number {
    return this.fds.length - this.next;
  }

  /** Requires exactly `count` fds on this message. */
  expect(count: number, request: number): void {
    this.checked = true;
    if (this.fds.length !== count) {
      throw new VhostUserError(
        'invalid-fds',
        `${requestName(request)} carried ${this.fds.length} fds, expected ${count}`,
      );
    }
  }

  take(): number {
    const fd = this.fds[this.next];
    if (fd === undefined) throw new VhostUserError('invalid-fds', 'a file descriptor is missing');
    this.fds[this.next++] = -1;
    return fd;
  }

  /** A message whose handler never looked at fds must not carry any. */
  expectConsumed(request: number): void {
    if (!this.checked && this.fds.length > 0 && this.next === 0) {
      throw new VhostUserError(
        'invalid-fds',
        `${requestName(request)} carried ${this.fds.length} unexpected fds`,
      );
    }
  }

  closeRest(): void {
    for (let i = this.next; i < this.fds.length; i++) closeFd(this.fds[i]!);
    this.next = this.fds.length;
  }
}
