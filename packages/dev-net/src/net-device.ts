import { GuestMemoryError, type MappedRanges, type MemoryRange } from '@xvio/grant-pool';
import {
  type ChainIo,
  type DescriptorChain,
  type DeviceContext,
  openChain,
  serviceQueue,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  type VirtioDevice,
  type Virtqueue,
} from '@xvio/transport';
import { type NetConfig, type NetConfigInput, type NetHostConfig, parseNetConfig } from './net-config.js';
import {
  type NetEndpoint,
  type NetFrame,
  type NetHost,
  type NetOffloads,
  NullNetHost,
  type ReceiveResult,
  type SendResult,
} from './net-host.js';
import { flattenNetMetrics, type NetMetrics, newNetMetrics } from './net-metrics.js';
import {
  completeChecksum,
  ETHERTYPE_IPV4,
  ETHERTYPE_IPV6,
  ETHERTYPE_VLAN,
  gather,
  IPPROTO_TCP,
  IPPROTO_UDP,
  MIN_GSO_SIZE,
  parseFrame,
  segmentFrame,
  writeUint16Scattered,
} from './net-offload.js';
import { PcapWriter } from './net-pcap.js';
import { DatagramNetHost, StreamNetHost } from './net-socket.js';
import { getNetSwitch } from './net-switch.js';
import { TapNetHost } from './net-tap.js';
import {
  BROADCAST_MAC_KEY,
  brokenFeatureDependency,
  CONFIG_DUPLEX,
  CONFIG_MAC,
  CONFIG_MAX_VIRTQUEUE_PAIRS,
  CONFIG_MTU,
  CONFIG_SIZE,
  CONFIG_SPEED,
  CONFIG_STATUS,
  CTRL_MAC_ENTRIES_SIZE,
  DEFAULT_MTU,
  DUPLEX_FULL,
  decodeNetHeader,
  ETH_HEADER_SIZE,
  emptyNetHeader,
  encodeNetHeader,
  HDR_SIZE_HASH,
  isMulticastMac,
  MAC_SIZE,
  MAX_GSO_FRAME_SIZE,
  MAX_VLAN_ID,
  MIN_FRAME_SIZE,
  macKey,
  type NetHeader,
  netHeaderLength,
  parseMac,
  SPEED_UNKNOWN,
  VIRTIO_ID_NET,
  VIRTIO_NET_CTRL_ANNOUNCE,
  VIRTIO_NET_CTRL_ANNOUNCE_ACK,
  VIRTIO_NET_CTRL_MAC,
  VIRTIO_NET_CTRL_MAC_ADDR_SET,
  VIRTIO_NET_CTRL_MAC_TABLE_SET,
  VIRTIO_NET_CTRL_MQ,
  VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN,
  VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET,
  VIRTIO_NET_CTRL_RX,
  VIRTIO_NET_CTRL_RX_ALLMULTI,
  VIRTIO_NET_CTRL_RX_PROMISC,
  VIRTIO_NET_CTRL_VLAN,
  VIRTIO_NET_CTRL_VLAN_ADD,
  VIRTIO_NET_CTRL_VLAN_DEL,
  VIRTIO_NET_ERR,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_CTRL_MAC_ADDR,
  VIRTIO_NET_F_CTRL_RX,
  VIRTIO_NET_F_CTRL_VLAN,
  VIRTIO_NET_F_CTRL_VQ,
  VIRTIO_NET_F_GUEST_ANNOUNCE,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_GUEST_UFO,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_F_HOST_UFO,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_MTU,
  VIRTIO_NET_F_STATUS,
  VIRTIO_NET_HDR_F_DATA_VALID,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VIRTIO_NET_HDR_GSO_UDP,
  VIRTIO_NET_OK,
  VIRTIO_NET_S_ANNOUNCE,
  VIRTIO_NET_S_LINK_UP,
  VLAN_TAG_SIZE,
} from './net-wire.js';

export interface NetDeviceOptions {
  name?: string;
  /** 6 bytes. */
  mac: Uint8Array;
  host: NetHost;
  /** Offered through VIRTIO_NET_F_MTU when set; frames above it (non-GSO) are dropped. Default 1500. */
  mtu?: number;
  /** Whether to offer VIRTIO_NET_F_MTU (default: when `mtu` was given). */
  offerMtu?: boolean;
  /** Queue pairs offered (VIRTIO_NET_F_MQ when more than one). Default 1. */
  queuePairs?: number;
  /** Maximum size of every queue. Default 256. */
  queueSize?: number;
  /** Link state at start (VIRTIO_NET_F_STATUS). Default up. */
  linkUp?: boolean;
  /** Feature bits not to offer (e.g. to test a guest without offloads). */
  withoutFeatures?: bigint;
  /** `frontend`: the frontend (QEMU behind vhost-user) serves the control queue. Default `device`. */
  controlQueue?: 'device' | 'frontend';
  /** Records every frame the port carries. */
  capture?: PcapWriter;
  /** Transmit chains served per turn before yielding to the event loop. Default 256. */
  txBudget?: number;
  /**
   * Whether `close()` closes `host` and `capture` too. Default true; false when they outlive
   * the device (a `NetPort` lends them to one device after another).
   */
  ownsHost?: boolean;
}

/** Every feature the device can offer; the host side never limits these (software fills in). */
export const NET_DEVICE_FEATURES =
  VIRTIO_NET_F_CSUM |
  VIRTIO_NET_F_GUEST_CSUM |
  VIRTIO_NET_F_MAC |
  VIRTIO_NET_F_GUEST_TSO4 |
  VIRTIO_NET_F_GUEST_TSO6 |
  VIRTIO_NET_F_GUEST_UFO |
  VIRTIO_NET_F_HOST_TSO4 |
  VIRTIO_NET_F_HOST_TSO6 |
  VIRTIO_NET_F_HOST_UFO |
  VIRTIO_NET_F_MRG_RXBUF |
  VIRTIO_NET_F_STATUS |
  VIRTIO_NET_F_CTRL_VQ |
  VIRTIO_NET_F_CTRL_RX |
  VIRTIO_NET_F_CTRL_VLAN |
  VIRTIO_NET_F_GUEST_ANNOUNCE |
  VIRTIO_NET_F_CTRL_MAC_ADDR |
  VIRTIO_F_EVENT_IDX |
  VIRTIO_F_INDIRECT_DESC |
  VIRTIO_F_RING_PACKED;

/** Largest control command we read: a MAC table of 2 x 1024 entries; more is answered ERR. */
const MAX_CONTROL_DATA = 2 * (CTRL_MAC_ENTRIES_SIZE + 1024 * MAC_SIZE);
const FRAME_PREFIX = 256;

interface RunState {
  readonly context: DeviceContext;
  readonly endpoint: NetEndpoint;
  readonly headerLength: number;
  readonly mergeable: boolean;
  readonly controlIndex: number;
  readonly txOffloads: NetOffloads;
  activePairs: number;
  flushScheduled: boolean;
  readonly txBlocked: boolean[];
  readonly txScheduled: boolean[];
  /** Per queue pair: receive chains popped but not used yet (bounded by the queue size). */
  readonly heldRx: DescriptorChain[][];
  /** Scratch for transmit headers: hosts use a frame only during `send`, so one is enough. */
  readonly txHeaderBytes: Uint8Array;
  readonly txHeader: NetHeader;
  readonly txSegments: Uint8Array[];
  readonly txFrame: { header: NetHeader; segments: Uint8Array[]; length: number };
  /**
   * Per transmit descriptor head (of every pair): the buffer view last seen there, the header
   * length skipped and the frame view made from it. A strategy that hands out the same view
   * for a reused buffer (the persistent pool does) then costs no new view per frame.
   */
  readonly txPayloadSource: (Uint8Array | undefined)[];
  readonly txPayloadView: (Uint8Array | undefined)[];
  readonly txPayloadSkip: number[];
  /** `written` for a one-buffer receive (strategies read it during `release` only). */
  readonly writtenOne: number[];
  rxWaiting: boolean;
}

/**
 * A virtio-net device (spec 5.1). Transmit chains become frames handed to the host side
 * (views into guest memory, no copy); frames from the host are copied once into receive
 * buffers. Offloads the other side lacks are completed in software (net-offload.ts).
 */
export class NetDevice implements VirtioDevice {
  readonly deviceType = VIRTIO_ID_NET;
  readonly name: string;
  readonly queueMaxSizes: readonly number[];
  readonly features: bigint;
  readonly configSize = CONFIG_SIZE;
  readonly metricsValues: NetMetrics = newNetMetrics();
  readonly host: NetHost;
  readonly queuePairs: number;
  readonly mtu: number;
  private readonly macBytes: Uint8Array;
  /** The configured MAC: a reset forgets what CTRL_MAC_ADDR_SET changed (as QEMU does). */
  private readonly configuredMac: Uint8Array;
  private status: number;
  private readonly capture: PcapWriter | undefined;
  private readonly txBudget: number;
  private readonly controlQueue: 'device' | 'frontend';
  private readonly ownsHost: boolean;
  /** Descriptor heads per transmit queue (its maximum size): a head is always below it. */
  private readonly txSlots: number;
  private closing: Promise<void> | undefined;
  private run: RunState | undefined;
  // Receive filter state (spec 5.1.6.5.1, 5.1.6.5.2, 5.1.6.5.3): open until the driver sets it.
  private promisc = true;
  private allMulti = true;
  private readonly unicastTable = new Set<number>();
  private readonly multicastTable = new Set<number>();
  private readonly vlans = new Set<number>();
  private readonly headerScratch = new Uint8Array(HDR_SIZE_HASH);
  private readonly prefixScratch = new Uint8Array(FRAME_PREFIX);
  private readonly rxHeader: NetHeader = emptyNetHeader();

  constructor(options: NetDeviceOptions) {
    if (options.mac.length !== MAC_SIZE) throw new RangeError('mac must be 6 bytes');
    this.name = options.name ?? 'net0';
    this.host = options.host;
    this.macBytes = Uint8Array.from(options.mac);
    this.configuredMac = Uint8Array.from(options.mac);
    this.mtu = options.mtu ?? DEFAULT_MTU;
    this.queuePairs = options.queuePairs ?? 1;
    const queueSize = options.queueSize ?? 256;
    this.queueMaxSizes = new Array<number>(this.queuePairs * 2 + 1).fill(queueSize);
    let features = NET_DEVICE_FEATURES;
    if (this.queuePairs > 1) features |= VIRTIO_NET_F_MQ;
    if (options.offerMtu ?? options.mtu !== undefined) features |= VIRTIO_NET_F_MTU;
    this.features = features & ~(options.withoutFeatures ?? 0n);
    this.controlQueue = options.controlQueue ?? 'device';
    this.status = (options.linkUp ?? true) ? VIRTIO_NET_S_LINK_UP : 0;
    this.capture = options.capture;
    this.txBudget = options.txBudget ?? 256;
    this.ownsHost = options.ownsHost ?? true;
    this.txSlots = queueSize;
  }

  /** Whether `close()` was called: the device cannot be activated again. */
  get closed(): boolean {
    return this.closing !== undefined;
  }

  /**
   * Stops the device (as a reset does) and releases its host side when it owns it: the TAP fd
   * closed, the switch port taken out of its switch, sockets closed, the capture flushed and
   * closed. Idempotent; resolves once everything is closed.
   */
  close(): Promise<void> {
    if (this.closing === undefined) this.closing = this.release();
    return this.closing;
  }

  private async release(): Promise<void> {
    this.reset();
    if (!this.ownsHost) return;
    try {
      this.capture?.close();
    } finally {
      await this.host.close();
    }
  }

  get mac(): Uint8Array {
    return this.macBytes;
  }

  get linkUp(): boolean {
    return (this.status & VIRTIO_NET_S_LINK_UP) !== 0;
  }

  /** The negotiated header length while running (10, 12 or 20). */
  get headerLength(): number | undefined {
    return this.run?.headerLength;
  }

  get activePairs(): number {
    return this.run?.activePairs ?? 0;
  }

  readConfig(offset: number, target: Uint8Array): void {
    const bytes = new Uint8Array(CONFIG_SIZE);
    const view = new DataView(bytes.buffer);
    bytes.set(this.macBytes, CONFIG_MAC);
    view.setUint16(CONFIG_STATUS, this.status, true);
    view.setUint16(CONFIG_MAX_VIRTQUEUE_PAIRS, this.queuePairs, true);
    view.setUint16(CONFIG_MTU, Math.min(this.mtu, 0xffff), true);
    view.setUint32(CONFIG_SPEED, SPEED_UNKNOWN, true);
    bytes[CONFIG_DUPLEX] = DUPLEX_FULL;
    target.set(bytes.subarray(offset, offset + target.length));
  }

  /** Spec 5.1.4: every field is read-only for a VERSION_1 driver (mac is set through CTRL_MAC_ADDR). */
  writeConfig(): void {}

  /** Spec 5.1.3.1: refuse feature sets that break a dependency. */
  acceptFeatures(features: bigint): boolean {
    // A frontend that keeps the control queue (vhost-user) negotiated CTRL_VQ with the
    // driver itself and passes on only the bits the data path needs.
    const negotiated = this.controlQueue === 'frontend' ? features | VIRTIO_NET_F_CTRL_VQ : features;
    return brokenFeatureDependency(negotiated) === undefined;
  }

  activate(context: DeviceContext): void {
    // Activation failing marks the device NEEDS_RESET: its host side is gone.
    if (this.closing !== undefined) throw new Error(`${this.name} is closed`);
    const features = context.features;
    const has = (bit: bigint) => (features & bit) === bit;
    const controlIndex = has(VIRTIO_NET_F_CTRL_VQ) ? (has(VIRTIO_NET_F_MQ) ? this.queuePairs * 2 : 2) : -1;
    const endpoint: NetEndpoint = {
      mac: this.macBytes,
      rxOffloads: {
        csum: has(VIRTIO_NET_F_GUEST_CSUM),
        tso4: has(VIRTIO_NET_F_GUEST_TSO4),
        tso6: has(VIRTIO_NET_F_GUEST_TSO6),
        ufo: has(VIRTIO_NET_F_GUEST_UFO),
      },
      receive: (frame) => (this.run?.endpoint === endpoint ? this.receive(frame) : 'dropped'),
      resume: () => {
        if (this.run?.endpoint === endpoint) this.resumeTx();
      },
    };
    const pairs = this.queuePairs;
    const txSegments: Uint8Array[] = [];
    this.run = {
      context,
      endpoint,
      headerLength: netHeaderLength(features),
      mergeable: has(VIRTIO_NET_F_MRG_RXBUF),
      controlIndex,
      txOffloads: this.host.txOffloads,
      activePairs: 1,
      flushScheduled: false,
      txBlocked: new Array<boolean>(pairs).fill(false),
      txScheduled: new Array<boolean>(pairs).fill(false),
      heldRx: Array.from({ length: pairs }, () => []),
      txHeaderBytes: new Uint8Array(netHeaderLength(features)),
      txHeader: emptyNetHeader(),
      writtenOne: [0],
      txPayloadSource: new Array<Uint8Array | undefined>(pairs * this.txSlots).fill(undefined),
      txPayloadView: new Array<Uint8Array | undefined>(pairs * this.txSlots).fill(undefined),
      txPayloadSkip: new Array<number>(pairs * this.txSlots).fill(0),
      txSegments,
      txFrame: { header: emptyNetHeader(), segments: txSegments, length: 0 },
      rxWaiting: false,
    };
    this.host.attach(endpoint);
    // Chains made available before DRIVER_OK are served now.
    for (let pair = 0; pair < pairs; pair++) if (context.queues[pair * 2 + 1]) this.scheduleTx(pair);
  }

  notify(queueIndex: number): void {
    const run = this.run;
    if (!run || run.context.signal.aborted) return;
    if (queueIndex === run.controlIndex) {
      this.serviceControl(run);
    } else if (queueIndex % 2 === 1) {
      this.serviceTx(run, (queueIndex - 1) / 2);
    } else if (run.rxWaiting) {
      run.rxWaiting = false;
      this.host.rxReady();
    }
  }

  reset(): void {
    if (this.run) this.host.detach();
    this.run = undefined;
    // A driver that resets may be about to go away: what was captured so far reaches the file.
    this.capture?.flush();
    this.macBytes.set(this.configuredMac);
    this.promisc = true;
    this.allMulti = true;
    this.unicastTable.clear();
    this.multicastTable.clear();
    this.vlans.clear();
    this.status &= ~VIRTIO_NET_S_ANNOUNCE;
  }

  metrics(): Readonly<Record<string, number>> {
    return { ...flattenNetMetrics(this.metricsValues), ...(this.host.metrics?.() ?? {}) };
  }

  /** Sets the link state and tells the driver (VIRTIO_NET_F_STATUS, spec 5.1.4.2). */
  setLinkUp(up: boolean): void {
    const before = this.status;
    this.status = up ? this.status | VIRTIO_NET_S_LINK_UP : this.status & ~VIRTIO_NET_S_LINK_UP;
    const run = this.run;
    if (run && before !== this.status && run.context.features & VIRTIO_NET_F_STATUS)
      run.context.configChanged();
  }

  /** Asks the guest to announce itself (after migration): VIRTIO_NET_S_ANNOUNCE (spec 5.1.6.5.4). */
  announce(): boolean {
    const run = this.run;
    if (!run || !(run.context.features & VIRTIO_NET_F_GUEST_ANNOUNCE)) return false;
    this.status |= VIRTIO_NET_S_ANNOUNCE;
    run.context.configChanged();
    return true;
  }

  // ---- transmit ----

  private scheduleTx(pair: number): void {
    const run = this.run;
    if (!run || run.txScheduled[pair]) return;
    run.txScheduled[pair] = true;
    setImmediate(() => {
      run.txScheduled[pair] = false;
      if (this.run === run && !run.context.signal.aborted) this.serviceTx(run, pair);
    });
  }

  private resumeTx(): void {
    const run = this.run!;
    for (let pair = 0; pair < run.txBlocked.length; pair++) {
      if (!run.txBlocked[pair]) continue;
      run.txBlocked[pair] = false;
      this.scheduleTx(pair);
    }
  }

  private serviceTx(run: RunState, pair: number): void {
    const result = serviceQueue(
      run.context,
      pair * 2 + 1,
      (chain) => this.transmit(run, chain, pair),
      this.txBudget,
    );
    if (result.deferred) {
      run.txBlocked[pair] = true;
      this.metricsValues.txDeferred++;
    } else if (result.completed >= this.txBudget) {
      this.scheduleTx(pair);
    }
  }

  private transmit(run: RunState, chain: DescriptorChain, pair: number): number | 'defer' {
    const metrics = this.metricsValues;
    const headerLength = run.headerLength;
    // The whole chain is mapped in one batch (a GuestMemoryError here is handled by
    // serviceQueue: a guest fault completes the chain with 0, a bad address is ring corruption).
    // GuestMemory.map directly rather than openChain: a transmit chain is only read, and the
    // reader objects cost more than the rest of the transmit path at 64 B.
    const ranges = chain.descriptorRanges();
    const mapped = run.context.memory.map(ranges);
    try {
      if (chain.readableLength < headerLength) {
        metrics.txDroppedBadHeader++;
        return 0;
      }
      const length = chain.readableLength - headerLength;
      // Reused per frame: a host uses a frame only during `send` (NetFrame's contract).
      const segments = run.txSegments;
      // Filled by index and trimmed once at the end: frames of one segment, the usual case,
      // then never change the array's length (a runtime call per frame otherwise).
      let count = 0;
      let header: NetHeader | undefined;
      let skip = headerLength;
      for (let i = 0; i < ranges.length; i++) {
        if (ranges[i]!.access !== 'read') break; // readable buffers come first (spec 2.7.4.2)
        for (const segment of mapped.segments[i]!) {
          if (header === undefined) {
            // Each header field is read from guest memory once (no double fetch).
            if (segment.length >= headerLength) {
              header = decodeNetHeader(segment, run.txHeader);
            } else {
              header = decodeNetHeader(
                this.readHeader(ranges, mapped, headerLength, run.txHeaderBytes),
                run.txHeader,
              );
            }
          }
          if (skip >= segment.length) {
            skip -= segment.length;
            continue;
          }
          segments[count++] =
            skip === 0
              ? segment
              : count === 0
                ? this.payloadView(run, pair * this.txSlots + chain.head, segment, skip)
                : segment.subarray(skip);
          skip = 0;
        }
      }
      if (segments.length !== count) segments.length = count;
      const frame = run.txFrame;
      frame.header = header!;
      frame.length = length;
      if (!this.checkTxFrame(run, frame)) return 0;
      frame.header.flags &= VIRTIO_NET_HDR_F_NEEDS_CSUM; // DATA_VALID and RSC_INFO are device-to-driver only
      const result = this.sendToHost(run, frame);
      if (result === 'defer') return 'defer';
      this.capture?.record(segments, length);
      if (result === 'dropped') metrics.txDroppedHost++;
      else {
        metrics.txFrames++;
        metrics.txBytes += length;
      }
      return 0;
    } finally {
      // Nothing is written into a transmit chain: a copying strategy copies nothing back.
      mapped.release(chain.writableLength === 0 ? undefined : new Array<number>(ranges.length).fill(0));
    }
  }

  /**
   * `segment` past its first `skip` bytes, remembered per descriptor head: the same view object
   * with the same skip gives the same bytes, so the view made last time is reused.
   */
  private payloadView(run: RunState, slot: number, segment: Uint8Array, skip: number): Uint8Array {
    if (run.txPayloadSource[slot] === segment && run.txPayloadSkip[slot] === skip) {
      const view = run.txPayloadView[slot];
      if (view !== undefined) return view;
    }
    const view = segment.subarray(skip);
    if (slot < run.txPayloadView.length) {
      run.txPayloadSource[slot] = segment;
      run.txPayloadSkip[slot] = skip;
      run.txPayloadView[slot] = view;
    }
    return view;
  }

  /** Gathers a header that straddles buffers into `target`. */
  private readHeader(
    ranges: readonly MemoryRange[],
    mapped: MappedRanges,
    headerLength: number,
    target: Uint8Array,
  ): Uint8Array {
    const views: Uint8Array[] = [];
    for (let i = 0; i < ranges.length && ranges[i]!.access === 'read'; i++)
      views.push(...mapped.segments[i]!);
    return gather(views, headerLength, target);
  }

  /** Validates a frame the guest sent (spec 5.1.6.2); counts and returns false to drop it. */
  private checkTxFrame(run: RunState, frame: NetFrame): boolean {
    const metrics = this.metricsValues;
    const header = frame.header as NetHeader;
    const features = run.context.features;
    if (frame.length < MIN_FRAME_SIZE) {
      metrics.txDroppedRunt++;
      return false;
    }
    if (header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
      if (!(features & VIRTIO_NET_F_CSUM) || header.csumStart + header.csumOffset + 2 > frame.length) {
        metrics.txDroppedBadChecksum++;
        return false;
      }
    }
    if (header.gsoType === VIRTIO_NET_HDR_GSO_NONE) {
      if (frame.length > this.mtu + ETH_HEADER_SIZE + VLAN_TAG_SIZE) {
        metrics.txDroppedOversize++;
        return false;
      }
      header.gsoSize = 0;
      return true;
    }
    // Spec 5.1.6.2.1: GSO only with the matching HOST_* feature; ECN was not offered.
    const needed =
      header.gsoType === VIRTIO_NET_HDR_GSO_TCPV4
        ? VIRTIO_NET_F_HOST_TSO4
        : header.gsoType === VIRTIO_NET_HDR_GSO_TCPV6
          ? VIRTIO_NET_F_HOST_TSO6
          : header.gsoType === VIRTIO_NET_HDR_GSO_UDP
            ? VIRTIO_NET_F_HOST_UFO
            : 0n;
    if (needed === 0n || !(features & needed) || header.gsoSize < MIN_GSO_SIZE) {
      metrics.txDroppedBadGso++;
      return false;
    }
    if (frame.length > MAX_GSO_FRAME_SIZE) {
      metrics.txDroppedOversize++;
      return false;
    }
    // hdr_len is only a hint (spec 5.1.6.2.2: the device MUST NOT rely on it): parse the headers
    // ourselves, and give receivers a value that is true.
    const prefix = gather(frame.segments, Math.min(frame.length, FRAME_PREFIX), this.prefixScratch);
    const parsed = parseFrame(prefix.subarray(0, Math.min(frame.length, FRAME_PREFIX)));
    const wantProtocol = header.gsoType === VIRTIO_NET_HDR_GSO_UDP ? IPPROTO_UDP : IPPROTO_TCP;
    const wantVersion =
      header.gsoType === VIRTIO_NET_HDR_GSO_TCPV6 ? 6 : header.gsoType === VIRTIO_NET_HDR_GSO_TCPV4 ? 4 : 0;
    if (
      !parsed ||
      parsed.l4Protocol !== wantProtocol ||
      (wantVersion !== 0 && parsed.ipVersion !== wantVersion) ||
      parsed.l4Offset + parsed.l4HeaderLength >= frame.length
    ) {
      metrics.txDroppedBadGso++;
      return false;
    }
    header.hdrLen = parsed.l4Offset + parsed.l4HeaderLength;
    return true;
  }

  /** Hands a frame to the host, completing in software the offloads the host cannot take. */
  private sendToHost(run: RunState, frame: NetFrame): SendResult {
    const offloads = run.txOffloads;
    const header = frame.header;
    if (header.gsoType !== VIRTIO_NET_HDR_GSO_NONE && !gsoSupported(offloads, header.gsoType)) {
      const segments = this.segment(frame);
      if (!segments) return 'dropped';
      let result: SendResult = 'sent';
      const plain = emptyNetHeader();
      for (const segment of segments) {
        const one = this.host.send({ header: plain, segments: [segment], length: segment.length });
        // A host that cannot take offloads cannot take half a GSO frame back either: drop the rest.
        if (one !== 'sent') result = 'dropped';
      }
      return result;
    }
    if (header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM && !offloads.csum) {
      const copy = gather(frame.segments, frame.length);
      const value = completeChecksum([copy], copy.length, header.csumStart, header.csumOffset)!;
      writeUint16Scattered([copy], header.csumStart + header.csumOffset, value);
      this.metricsValues.checksumsFilled++;
      return this.host.send({ header: emptyNetHeader(), segments: [copy], length: copy.length });
    }
    return this.host.send(frame);
  }

  private segment(frame: NetFrame): Uint8Array[] | undefined {
    const result = segmentFrame(gather(frame.segments, frame.length), frame.header);
    if (typeof result === 'string') return undefined;
    this.metricsValues.framesSegmented++;
    this.metricsValues.segmentsProduced += result.length;
    return result;
  }

  // ---- receive ----

  private receive(frame: NetFrame): ReceiveResult {
    const run = this.run!;
    const metrics = this.metricsValues;
    if (run.context.signal.aborted || !(this.status & VIRTIO_NET_S_LINK_UP)) {
      metrics.rxDroppedStopped++;
      return 'dropped';
    }
    if (frame.length < MIN_FRAME_SIZE || !this.accepts(frame)) {
      metrics.rxDroppedFiltered++;
      return 'dropped';
    }
    const rxIndex = run.activePairs > 1 ? 2 * (flowHash(frame) % run.activePairs) : 0;
    const queue = run.context.queues[rxIndex];
    if (!queue || queue.broken) {
      metrics.rxDroppedStopped++;
      return 'dropped';
    }
    const header = frame.header;
    const offloads = run.endpoint.rxOffloads;
    if (header.gsoType !== VIRTIO_NET_HDR_GSO_NONE && !gsoSupported(offloads, header.gsoType)) {
      // The guest cannot take this GSO frame: segment it and deliver what fits.
      const segments = this.segment(frame);
      if (!segments) {
        metrics.rxDroppedOffload++;
        return 'dropped';
      }
      const plain = this.rxHeader;
      plain.flags = offloads.csum ? VIRTIO_NET_HDR_F_DATA_VALID : 0;
      plain.gsoType = VIRTIO_NET_HDR_GSO_NONE;
      plain.hdrLen = plain.gsoSize = plain.csumStart = plain.csumOffset = 0;
      let delivered = 0;
      for (const segment of segments) {
        if (this.deliver(run, queue, rxIndex, plain, [segment], segment.length, false) !== 'delivered') break;
        delivered++;
      }
      metrics.rxDroppedNoBuffers += segments.length - delivered;
      return delivered > 0 ? 'delivered' : 'no-buffers';
    }
    const fillChecksum = (header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0 && !offloads.csum;
    let rxHeader = header;
    if (fillChecksum || (!offloads.csum && header.flags & VIRTIO_NET_HDR_F_DATA_VALID)) {
      rxHeader = this.rxHeader;
      rxHeader.flags = 0;
      rxHeader.gsoType = VIRTIO_NET_HDR_GSO_NONE;
      rxHeader.hdrLen = rxHeader.gsoSize = rxHeader.csumStart = rxHeader.csumOffset = 0;
    }
    return this.deliver(run, queue, rxIndex, rxHeader, frame.segments, frame.length, fillChecksum, header);
  }

  /** Receive filtering (spec 5.1.6.5.1 promisc/allmulti, 5.1.6.5.2 MAC table, 5.1.6.5.3 VLAN). */
  private accepts(frame: NetFrame): boolean {
    const first = frame.segments[0]!;
    if (first.length < ETH_HEADER_SIZE) return true; // headers split across buffers: no filtering
    if (this.vlans.size > 0 && ((first[12]! << 8) | first[13]!) === ETHERTYPE_VLAN && first.length >= 16) {
      if (!this.vlans.has(((first[14]! << 8) | first[15]!) & MAX_VLAN_ID)) return false;
    }
    if (this.promisc) return true;
    const key = macKey(first);
    if (isMulticastMac(first)) {
      return key === BROADCAST_MAC_KEY || this.allMulti || this.multicastTable.has(key);
    }
    return key === macKey(this.macBytes) || this.unicastTable.has(key);
  }

  /**
   * Copies one frame into receive buffers: the single copy of the data path. With MRG_RXBUF
   * the frame may span several chains (spec 5.1.6.4.2, num_buffers); without it one chain must
   * hold header and frame.
   */
  private deliver(
    run: RunState,
    queue: Virtqueue,
    rxIndex: number,
    header: NetHeader,
    segments: readonly Uint8Array[],
    length: number,
    fillChecksum: boolean,
    checksumHeader: NetHeader = header,
  ): ReceiveResult {
    const metrics = this.metricsValues;
    const headerLength = run.headerLength;
    const total = headerLength + length;
    const held = run.heldRx[rxIndex >> 1]!;
    let chains: DescriptorChain[];
    try {
      // Chains popped for a frame that did not fit wait in `held` for the next one: packed
      // rings cannot give back more than one pop.
      let first = held.length > 0 ? held.shift() : queue.pop();
      if (first === undefined && queue.enableNotification()) first = queue.pop();
      if (first === undefined) {
        run.rxWaiting = true;
        return 'no-buffers';
      }
      if (first.writableLength >= total) {
        if (first.count === 1 && first.isWritable(0)) {
          return this.deliverSingle(
            run,
            queue,
            first,
            header,
            segments,
            length,
            fillChecksum,
            checksumHeader,
          );
        }
        chains = [first];
      } else if (!run.mergeable) {
        // Without MRG_RXBUF the guest posted a buffer too small for this frame: keep the buffer
        // for the next frame, drop this one.
        held.unshift(first);
        metrics.rxDroppedTooBig++;
        return 'dropped';
      } else {
        chains = [first];
        let capacity = first.writableLength;
        while (capacity < total) {
          let chain = held.length > 0 ? held.shift() : queue.pop();
          if (chain === undefined && queue.enableNotification()) chain = queue.pop();
          if (chain === undefined) {
            held.unshift(...chains);
            run.rxWaiting = true;
            return 'no-buffers';
          }
          chains.push(chain);
          capacity += chain.writableLength;
        }
      }
    } catch (error) {
      run.context.fail(error);
      return 'dropped';
    }
    // Every buffer of every chain (several with MRG_RXBUF) is mapped in one batch (one
    // grant-map batch instead of one per chain; GuestMemory.map directly, the reader and writer
    // objects of openChain cost more than the rest of the path at 64 B), filled in order, and
    // each chain completes with what it holds (spec 5.1.6.4.2).
    let ranges: MemoryRange[];
    const rangeCounts: number[] = [];
    if (chains.length === 1) {
      ranges = chains[0]!.descriptorRanges();
      rangeCounts.push(ranges.length);
    } else {
      ranges = [];
      for (const chain of chains) {
        const before = ranges.length;
        for (const range of chain.descriptorRanges()) ranges.push(range);
        rangeCounts.push(ranges.length - before);
      }
    }
    let mapped: MappedRanges;
    try {
      mapped = run.context.memory.map(ranges);
    } catch (error) {
      return this.receiveFault(run, queue, chains, error);
    }
    const written = new Array<number>(ranges.length).fill(0);
    const views: Uint8Array[] = [];
    let remaining = total;
    for (let i = 0; i < ranges.length && remaining > 0; i++) {
      if (ranges[i]!.access !== 'write') continue; // receive buffers are writable; a readable one is skipped
      for (const segment of mapped.segments[i]!) {
        if (remaining === 0) break;
        const n = Math.min(segment.length, remaining);
        views.push(n === segment.length ? segment : segment.subarray(0, n));
        written[i]! += n;
        remaining -= n;
      }
    }
    try {
      this.fillReceive(
        views,
        header,
        headerLength,
        chains.length,
        segments,
        length,
        total,
        fillChecksum,
        checksumHeader,
      );
    } catch (error) {
      mapped.release(written);
      return this.receiveFault(run, queue, chains, error);
    }
    mapped.release(written);
    let range = 0;
    for (let c = 0; c < chains.length; c++) {
      let used = 0;
      for (let k = 0; k < rangeCounts[c]!; k++) used += written[range++]!;
      queue.addUsed(chains[c]!, used);
      queue.recycle?.(chains[c]!);
    }
    this.capture?.record(segments, length);
    metrics.rxFrames++;
    metrics.rxBytes += length;
    this.markDirty(run);
    return 'delivered';
  }

  /** The usual receive: one chain of one writable buffer that holds header and frame. */
  private deliverSingle(
    run: RunState,
    queue: Virtqueue,
    chain: DescriptorChain,
    header: NetHeader,
    segments: readonly Uint8Array[],
    length: number,
    fillChecksum: boolean,
    checksumHeader: NetHeader,
  ): ReceiveResult {
    const total = run.headerLength + length;
    let mapped: MappedRanges;
    try {
      mapped = run.context.memory.map(chain.descriptorRanges());
    } catch (error) {
      return this.receiveFault(run, queue, [chain], error);
    }
    const written = run.writtenOne;
    written[0] = total;
    try {
      this.fillReceive(
        mapped.segments[0]!,
        header,
        run.headerLength,
        1,
        segments,
        length,
        total,
        fillChecksum,
        checksumHeader,
      );
    } catch (error) {
      mapped.release(written);
      return this.receiveFault(run, queue, [chain], error);
    }
    mapped.release(written);
    queue.addUsed(chain, total);
    // Completed: the queue may reuse the chain object for its next pop (no allocation per frame).
    queue.recycle?.(chain);
    this.capture?.record(segments, length);
    this.metricsValues.rxFrames++;
    this.metricsValues.rxBytes += length;
    this.markDirty(run);
    return 'delivered';
  }

  /** Writes header and frame into the receive views: the one copy of the data path. */
  private fillReceive(
    views: readonly Uint8Array[],
    header: NetHeader,
    headerLength: number,
    numBuffers: number,
    segments: readonly Uint8Array[],
    length: number,
    total: number,
    fillChecksum: boolean,
    checksumHeader: NetHeader,
  ): void {
    let offset: number;
    const first = views[0];
    if (first !== undefined && first.length >= headerLength) {
      // Usual layout: the header fits the first buffer; field stores beat a 12-byte copy.
      encodeNetHeader(header, first, headerLength, numBuffers);
      offset = headerLength;
    } else {
      encodeNetHeader(header, this.headerScratch, headerLength, numBuffers);
      offset = scatter(views, 0, this.headerScratch, headerLength);
    }
    for (const segment of segments) {
      if (offset >= total) break;
      offset = scatter(views, offset, segment, Math.min(segment.length, total - offset));
    }
    if (fillChecksum) {
      const value = completeChecksum(segments, length, checksumHeader.csumStart, checksumHeader.csumOffset);
      if (value !== undefined) {
        writeUint16Scattered(
          views,
          headerLength + checksumHeader.csumStart + checksumHeader.csumOffset,
          value,
        );
        this.metricsValues.checksumsFilled++;
      }
    }
  }

  /** A receive buffer that faulted: a guest fault completes its chains empty, anything else is ring corruption. */
  private receiveFault(
    run: RunState,
    queue: Virtqueue,
    chains: readonly DescriptorChain[],
    error: unknown,
  ): ReceiveResult {
    if (
      GuestMemoryError.isInstance(error) &&
      error.isGuestFault &&
      error.code !== 'unmapped' &&
      error.code !== 'invalid-range'
    ) {
      for (const chain of chains) queue.addUsed(chain, 0);
      this.markDirty(run);
      this.metricsValues.rxDroppedStopped++;
      return 'dropped';
    }
    run.context.fail(error);
    return 'dropped';
  }

  /** Used elements of a receive queue are published once per turn, with at most one interrupt. */
  private markDirty(run: RunState): void {
    if (run.flushScheduled) return;
    run.flushScheduled = true;
    queueMicrotask(() => this.flushRx(run));
  }

  /** Publishes staged receive completions now (also done automatically at the end of the turn). */
  flushRx(run: RunState | undefined = this.run): void {
    if (!run) return;
    run.flushScheduled = false;
    if (run.context.signal.aborted) return;
    // Every receive queue (at most 16): one with nothing staged publishes nothing, and no set of
    // dirty queues is kept per frame.
    const queues = run.context.queues;
    for (let rxIndex = 0; rxIndex < this.queuePairs * 2; rxIndex += 2) {
      const queue = queues[rxIndex];
      if (queue && queue.publishUsed() > 0 && queue.needsNotification()) run.context.interrupt(rxIndex);
    }
  }

  // ---- control queue (spec 5.1.6.5) ----

  private serviceControl(run: RunState): void {
    serviceQueue(run.context, run.controlIndex, (chain) => {
      const io = openChain(run.context.memory, chain);
      try {
        if (io.writer.remaining < 1) {
          this.metricsValues.controlBadSize++;
          return 0;
        }
        const ack = this.control(run, io);
        io.writer.write(Uint8Array.of(ack));
        return io.close();
      } finally {
        io.close();
      }
    });
  }

  private control(run: RunState, io: ChainIo): number {
    const metrics = this.metricsValues;
    metrics.controlCommands++;
    const reader = io.reader;
    const command = reader.readExact(2);
    if (!command || reader.remaining > MAX_CONTROL_DATA) {
      metrics.controlBadSize++;
      return VIRTIO_NET_ERR;
    }
    const data = reader.readExact(reader.remaining)!;
    const features = run.context.features;
    const badSize = () => {
      metrics.controlBadSize++;
      return VIRTIO_NET_ERR;
    };
    const error = () => {
      metrics.controlErrors++;
      return VIRTIO_NET_ERR;
    };
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    const [commandClass, code] = [command[0]!, command[1]!];
    switch (commandClass) {
      case VIRTIO_NET_CTRL_RX: {
        if (!(features & VIRTIO_NET_F_CTRL_RX)) return error();
        if (code !== VIRTIO_NET_CTRL_RX_PROMISC && code !== VIRTIO_NET_CTRL_RX_ALLMULTI) return error(); // RX_EXTRA not offered
        if (data.length !== 1) return badSize();
        if (code === VIRTIO_NET_CTRL_RX_PROMISC) this.promisc = data[0] !== 0;
        else this.allMulti = data[0] !== 0;
        return VIRTIO_NET_OK;
      }
      case VIRTIO_NET_CTRL_MAC: {
        if (code === VIRTIO_NET_CTRL_MAC_ADDR_SET) {
          if (!(features & VIRTIO_NET_F_CTRL_MAC_ADDR)) return error();
          if (data.length !== MAC_SIZE) return badSize();
          this.macBytes.set(data);
          return VIRTIO_NET_OK;
        }
        if (code !== VIRTIO_NET_CTRL_MAC_TABLE_SET || !(features & VIRTIO_NET_F_CTRL_RX)) return error();
        // Two struct virtio_net_ctrl_mac back to back: unicast then multicast (spec 5.1.6.5.2).
        const tables: Set<number>[] = [new Set(), new Set()];
        let offset = 0;
        for (const table of tables) {
          if (offset + CTRL_MAC_ENTRIES_SIZE > data.length) return badSize();
          const entries = view.getUint32(offset, true);
          offset += CTRL_MAC_ENTRIES_SIZE;
          if (entries > (data.length - offset) / MAC_SIZE) return badSize();
          for (let i = 0; i < entries; i++, offset += MAC_SIZE) table.add(macKey(data, offset));
        }
        if (offset !== data.length) return badSize();
        this.replace(this.unicastTable, tables[0]!);
        this.replace(this.multicastTable, tables[1]!);
        // A driver that programs a table filters from now on unless it asked for promisc.
        return VIRTIO_NET_OK;
      }
      case VIRTIO_NET_CTRL_VLAN: {
        if (!(features & VIRTIO_NET_F_CTRL_VLAN)) return error();
        if (code !== VIRTIO_NET_CTRL_VLAN_ADD && code !== VIRTIO_NET_CTRL_VLAN_DEL) return error();
        if (data.length !== 2) return badSize();
        const id = view.getUint16(0, true);
        if (id > MAX_VLAN_ID) return error();
        if (code === VIRTIO_NET_CTRL_VLAN_ADD) this.vlans.add(id);
        else this.vlans.delete(id);
        return VIRTIO_NET_OK;
      }
      case VIRTIO_NET_CTRL_ANNOUNCE: {
        if (!(features & VIRTIO_NET_F_GUEST_ANNOUNCE) || code !== VIRTIO_NET_CTRL_ANNOUNCE_ACK)
          return error();
        if (data.length !== 0) return badSize();
        this.status &= ~VIRTIO_NET_S_ANNOUNCE;
        return VIRTIO_NET_OK;
      }
      case VIRTIO_NET_CTRL_MQ: {
        if (!(features & VIRTIO_NET_F_MQ) || code !== VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET) return error();
        if (data.length !== 2) return badSize();
        const pairs = view.getUint16(0, true);
        if (pairs < VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN || pairs > this.queuePairs) return error();
        run.activePairs = pairs;
        return VIRTIO_NET_OK;
      }
      default:
        return error();
    }
  }

  private replace(target: Set<number>, source: Set<number>): void {
    target.clear();
    for (const key of source) target.add(key);
  }
}

function gsoSupported(offloads: NetOffloads, gsoType: number): boolean {
  switch (gsoType) {
    case VIRTIO_NET_HDR_GSO_TCPV4:
      return offloads.tso4;
    case VIRTIO_NET_HDR_GSO_TCPV6:
      return offloads.tso6;
    case VIRTIO_NET_HDR_GSO_UDP:
      return offloads.ufo;
    default:
      return false;
  }
}

/** Copies `length` bytes of `source` into the views starting at byte `offset` of their concatenation. */
function scatter(views: readonly Uint8Array[], offset: number, source: Uint8Array, length: number): number {
  let position = 0;
  let done = 0;
  for (let i = 0; i < views.length && done < length; i++) {
    const view = views[i]!;
    const end = position + view.length;
    if (offset + done < end) {
      const at = offset + done - position;
      const n = Math.min(view.length - at, length - done);
      view.set(n === source.length && done === 0 ? source : source.subarray(done, done + n), at);
      done += n;
    }
    position = end;
  }
  return offset + done;
}

/** A cheap flow hash over IPv4/IPv6 addresses and ports, to steer flows to one queue pair. */
function flowHash(frame: NetFrame): number {
  const first = frame.segments[0]!;
  if (first.length < 38) return 0;
  const etherType = (first[12]! << 8) | first[13]!;
  let start: number;
  let end: number;
  if (etherType === ETHERTYPE_IPV4) {
    start = 26;
    end = 38;
  } else if (etherType === ETHERTYPE_IPV6) {
    start = 22;
    end = 58;
    if (first.length < end) return 0;
  } else {
    return 0;
  }
  let hash = 0x811c9dc5;
  for (let i = start; i < end; i++) hash = Math.imul(hash ^ first[i]!, 0x01000193);
  return hash >>> 0;
}

/** The host side a validated configuration names (opens the TAP, listens or connects sockets). */
export function createNetHost(config: NetHostConfig): NetHost {
  switch (config.type) {
    case 'null':
      return new NullNetHost();
    case 'switch': {
      const found = getNetSwitch(config.switch, { ageingMs: config.ageingSeconds * 1000 });
      return found.createPort(
        config.rateLimitMbps === undefined ? {} : { rateLimitBitsPerSecond: config.rateLimitMbps * 1e6 },
      );
    }
    case 'tap':
      return new TapNetHost({
        ...(config.ifname === undefined ? {} : { ifname: config.ifname }),
        ...(config.netns === undefined ? {} : { netns: config.netns }),
      });
    case 'stream':
      return new StreamNetHost({
        mode: config.mode,
        ...(config.path !== undefined ? { path: config.path } : { host: config.host, port: config.port! }),
      });
    case 'dgram':
      return new DatagramNetHost(config);
  }
}

/**
 * Builds a network device from a configuration as a user wrote it (validated here, once with
 * zod). Throws a ZodError for a bad configuration, a TapError when a TAP cannot be opened.
 */
export function createNetDevice(config: NetConfigInput | unknown = {}): NetDevice {
  const parsed: NetConfig = parseNetConfig(config);
  const host = createNetHost(parsed.host);
  let capture: PcapWriter | undefined;
  try {
    capture = parsed.capture === undefined ? undefined : new PcapWriter(parsed.capture);
  } catch (error) {
    void host.close();
    throw error;
  }
  return new NetDevice(netDeviceOptions(parsed, host, capture, true));
}

/** The device options a validated configuration gives, over a host side made for it. */
export function netDeviceOptions(
  parsed: NetConfig,
  host: NetHost,
  capture: PcapWriter | undefined,
  ownsHost: boolean,
): NetDeviceOptions {
  return {
    name: parsed.name,
    mac: parseMac(parsed.mac)!,
    host,
    ...(parsed.mtu === undefined ? {} : { mtu: parsed.mtu }),
    queuePairs: parsed.queuePairs,
    queueSize: parsed.queueSize,
    linkUp: parsed.linkUp,
    controlQueue: parsed.controlQueue,
    ...(capture === undefined ? {} : { capture }),
    ownsHost,
  };
}
