import { gather } from './net-offload.js';
import { emptyNetHeader, type NetHeader } from './net-wire.js';

/**
 * One Ethernet frame crossing between a device and its host side, with the offload state of
 * a virtio_net_hdr. `segments` are views (often straight into guest memory): they are valid
 * only during the call that hands the frame over, so a receiver copies what it keeps.
 */
export interface NetFrame {
  readonly header: NetHeader;
  readonly segments: readonly Uint8Array[];
  readonly length: number;
}

/** What a side of a link can take without software help (spec 5.1.3 GUEST_* / HOST_* bits). */
export interface NetOffloads {
  /** Frames may carry VIRTIO_NET_HDR_F_NEEDS_CSUM (partial checksums). */
  readonly csum: boolean;
  readonly tso4: boolean;
  readonly tso6: boolean;
  readonly ufo: boolean;
}

export const NO_OFFLOADS: NetOffloads = Object.freeze({ csum: false, tso4: false, tso6: false, ufo: false });
export const ALL_OFFLOADS: NetOffloads = Object.freeze({ csum: true, tso4: true, tso6: true, ufo: true });

/** How delivering a frame into a guest went. */
export type ReceiveResult = 'delivered' | 'no-buffers' | 'dropped';
/** How handing a frame from a guest to the host went; `defer` asks the device to retry after `resume`. */
export type SendResult = 'sent' | 'defer' | 'dropped';

/** The device as its host side sees it, from `attach` until `detach`. */
export interface NetEndpoint {
  /** The guest's MAC address (config space), 6 bytes. */
  readonly mac: Uint8Array;
  /** Offloads the guest accepts on receive (its negotiated GUEST_* features). */
  readonly rxOffloads: NetOffloads;
  /**
   * Delivers one frame to the guest (copies it into receive buffers). `no-buffers` when the
   * guest has not posted enough: the device calls the host's `rxReady` once it has.
   */
  receive(frame: NetFrame): ReceiveResult;
  /** The host can take frames again after a `defer`: the device resumes transmitting. */
  resume(): void;
}

/**
 * The host side of a network device: where frames the guest sends go and where frames for
 * the guest come from. Implementations: TAP, the in-process switch, stream and datagram
 * sockets, and the null/memory hosts here.
 */
export interface NetHost {
  readonly kind: string;
  /** Offloads the host accepts on transmit; the device completes the rest in software. */
  readonly txOffloads: NetOffloads;
  /** Called when the device starts (DRIVER_OK). */
  attach(endpoint: NetEndpoint): void;
  /** Called on device reset; the endpoint must not be used afterwards. */
  detach(): void;
  /** A frame from the guest. Must finish with `frame.segments` before returning. */
  send(frame: NetFrame): SendResult;
  /** The guest posted receive buffers after a `no-buffers`. */
  rxReady(): void;
  /** Host counters for metrics. */
  metrics?(): Readonly<Record<string, number>>;
  /** Releases host resources (fds, sockets). */
  close(): Promise<void>;
}

/** A host that drops what the guest sends and never delivers anything: a cable to nowhere. */
export class NullNetHost implements NetHost {
  readonly kind = 'null';
  readonly txOffloads = ALL_OFFLOADS;
  private dropped = 0;

  attach(): void {}
  detach(): void {}
  send(_frame: NetFrame): SendResult {
    this.dropped++;
    return 'sent';
  }
  rxReady(): void {}
  metrics(): Readonly<Record<string, number>> {
    return { null_dropped_frames: this.dropped };
  }
  async close(): Promise<void> {}
}

/** A frame copied out of its views, with its header. */
export interface CopiedFrame {
  header: NetHeader;
  data: Uint8Array;
}

/**
 * A host kept in memory, for tests and examples: records every frame the guest sends and
 * injects frames into the guest, holding them while the guest has no buffers (bounded).
 */
export class MemoryNetHost implements NetHost {
  readonly kind = 'memory';
  readonly sent: CopiedFrame[] = [];
  private endpoint: NetEndpoint | undefined;
  private readonly pending: CopiedFrame[] = [];
  /** When set, `send` answers `defer` (to test backpressure). */
  blocked = false;

  constructor(
    readonly txOffloads: NetOffloads = ALL_OFFLOADS,
    private readonly maxPending = 256,
  ) {}

  get attached(): NetEndpoint | undefined {
    return this.endpoint;
  }

  attach(endpoint: NetEndpoint): void {
    this.endpoint = endpoint;
  }

  detach(): void {
    this.endpoint = undefined;
    this.pending.length = 0;
  }

  send(frame: NetFrame): SendResult {
    if (this.blocked) return 'defer';
    this.sent.push({ header: { ...frame.header }, data: gather(frame.segments, frame.length) });
    return 'sent';
  }

  /** Lets a blocked host take frames again. */
  unblock(): void {
    this.blocked = false;
    this.endpoint?.resume();
  }

  /** Queues a frame for the guest; returns false when the bound is reached (dropped). */
  inject(data: Uint8Array, header: NetHeader = emptyNetHeader()): boolean {
    if (this.pending.length >= this.maxPending) return false;
    this.pending.push({ header, data });
    this.flush();
    return true;
  }

  get pendingCount(): number {
    return this.pending.length;
  }

  rxReady(): void {
    this.flush();
  }

  private flush(): void {
    const endpoint = this.endpoint;
    if (!endpoint) return;
    while (this.pending.length > 0) {
      const next = this.pending[0]!;
      const result = endpoint.receive({
        header: next.header,
        segments: [next.data],
        length: next.data.length,
      });
      if (result === 'no-buffers') return;
      this.pending.shift();
    }
  }

  async close(): Promise<void> {
    this.detach();
  }
}
