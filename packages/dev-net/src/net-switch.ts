import { ALL_OFFLOADS, type NetEndpoint, type NetFrame, type NetHost, type SendResult } from './net-host.js';
import { macKey } from './net-wire.js';

export interface NetSwitchOptions {
  name?: string;
  /** Learned MAC addresses are forgotten after this long without traffic (IEEE 802.1D default 300 s). */
  ageingMs?: number;
  /** Bound on the MAC table; when full, the oldest entry goes. */
  maxAddresses?: number;
  /** Milliseconds clock for MAC ageing (tests pass their own). Default: a 100 ms coarse clock. */
  now?: () => number;
}

export interface SwitchPortOptions {
  name?: string;
  /** Ingress rate limit of the port (what its guest may send), bits per second. */
  rateLimitBitsPerSecond?: number;
  /** Bucket depth of the rate limit in bytes. Default: 64 KiB or 10 ms at the rate, whichever is larger. */
  burstBytes?: number;
}

/** Counters of one switch port, seen from the switch. */
export interface SwitchPortCounters {
  /** Frames the port's guest sent into the switch, and their bytes. */
  inFrames: number;
  inBytes: number;
  /** Frames the switch delivered to the port's guest, and their bytes. */
  outFrames: number;
  outBytes: number;
  /** Frames for this port lost because its guest had no buffers (floods) or refused them. */
  outDropped: number;
  /** Frames the port sent that went nowhere (to itself, or every other port refused). */
  inDropped: number;
  floods: number;
  /** Times the port's guest had to wait: destination without buffers, or rate limit. */
  deferred: number;
  rateLimited: number;
}

interface MacEntry {
  readonly key: number;
  port: SwitchPort;
  seen: number;
  /** False once removed from the table (a port's cached entry is then looked up again). */
  live: boolean;
}

/**
 * An L2 learning switch joining the guests one xvio process serves (IEEE 802.1D bridging,
 * without spanning tree: it has no loops). A frame crosses with one copy, straight from the
 * sender's transmit buffer into the receiver's receive buffer. Unicast to a port whose guest
 * has no receive buffers makes the sender wait (its chain stays in its ring), so traffic
 * between two guests is lossless and nothing queues inside the switch; floods drop instead.
 */
export class NetSwitch {
  readonly name: string;
  private readonly ports = new Set<SwitchPort>();
  private readonly table = new Map<number, MacEntry>();
  private readonly ageingMs: number;
  private readonly maxAddresses: number;
  readonly now: () => number;

  constructor(options: NetSwitchOptions = {}) {
    this.name = options.name ?? 'switch0';
    this.ageingMs = options.ageingMs ?? 300_000;
    this.maxAddresses = options.maxAddresses ?? 4096;
    this.now = options.now ?? coarseNow;
  }

  /** A new port; give it to a device as its host. */
  createPort(options: SwitchPortOptions = {}): SwitchPort {
    const port = new SwitchPort(this, options.name ?? `${this.name}.${this.ports.size}`, options);
    this.ports.add(port);
    return port;
  }

  get portCount(): number {
    return this.ports.size;
  }

  /** The port a MAC address was learned on, if the entry has not aged out. */
  lookup(mac: Uint8Array): SwitchPort | undefined {
    const entry = this.table.get(macKey(mac));
    if (!entry || this.now() - entry.seen > this.ageingMs) return undefined;
    return entry.port;
  }

  get learnedAddresses(): number {
    return this.table.size;
  }

  /** @internal */
  removePort(port: SwitchPort): void {
    this.ports.delete(port);
    this.dropEntries(port);
  }

  /** @internal */
  forgetPort(port: SwitchPort): void {
    this.dropEntries(port);
  }

  private dropEntries(port: SwitchPort): void {
    for (const [key, entry] of this.table) {
      if (entry.port !== port) continue;
      entry.live = false;
      this.table.delete(key);
    }
  }

  /** @internal Forwards a frame a port's guest sent. */
  forward(source: SwitchPort, frame: NetFrame): SendResult {
    const first = frame.segments[0]!;
    const now = this.now();
    if (!source.admit(frame.length)) return 'defer';
    this.learn(first, source, now);
    source.counters.inFrames++;
    source.counters.inBytes += frame.length;
    // Group bit set: broadcast or multicast (IEEE 802), flooded.
    if ((first[0]! & 1) === 0) {
      // Each port remembers the entry its last unicast frame went to: a flow between two
      // guests then costs no table lookup (the entry is re-read, so ageing and moves still count).
      const key = macKey(first);
      let entry = source.lastTarget;
      if (entry === undefined || !entry.live || entry.key !== key) {
        entry = this.table.get(key);
        source.lastTarget = entry;
      }
      if (entry && now - entry.seen <= this.ageingMs) {
        const target = entry.port;
        if (target === source) {
          source.counters.inDropped++;
          return 'sent';
        }
        const endpoint = target.endpoint;
        if (endpoint) {
          const result = endpoint.receive(frame);
          if (result === 'delivered') {
            target.counters.outFrames++;
            target.counters.outBytes += frame.length;
            return 'sent';
          }
          if (result === 'no-buffers') {
            // Undo the ingress accounting: the frame comes back when the receiver has room.
            source.counters.inFrames--;
            source.counters.inBytes -= frame.length;
            source.refund(frame.length);
            source.counters.deferred++;
            target.waiters.add(source);
            return 'defer';
          }
          target.counters.outDropped++;
          return 'sent';
        }
      }
    }
    this.flood(source, frame);
    return 'sent';
  }

  private flood(source: SwitchPort, frame: NetFrame): void {
    source.counters.floods++;
    let delivered = 0;
    for (const port of this.ports) {
      if (port === source || !port.endpoint) continue;
      if (port.endpoint.receive(frame) === 'delivered') {
        port.counters.outFrames++;
        port.counters.outBytes += frame.length;
        delivered++;
      } else {
        port.counters.outDropped++;
      }
    }
    if (delivered === 0) source.counters.inDropped++;
  }

  private learn(frame: Uint8Array, port: SwitchPort, now: number): void {
    if (frame[6]! & 1) return; // a group address is never a source (IEEE 802.1D 7.8)
    const key = macKey(frame, 6);
    // The port's last source entry first: a guest mostly sends from one address.
    const last = port.lastSource;
    const entry = last !== undefined && last.live && last.key === key ? last : this.table.get(key);
    if (entry) {
      entry.port = port;
      entry.seen = now;
      port.lastSource = entry;
      return;
    }
    if (this.table.size >= this.maxAddresses) {
      const oldest = this.table.values().next();
      if (!oldest.done) {
        oldest.value.live = false;
        this.table.delete(oldest.value.key);
      }
    }
    const added: MacEntry = { key, port, seen: now, live: true };
    this.table.set(key, added);
    port.lastSource = added;
  }
}

/** One port of a `NetSwitch`: the host side of one device. */
export class SwitchPort implements NetHost {
  readonly kind = 'switch';
  readonly txOffloads = ALL_OFFLOADS;
  readonly counters: SwitchPortCounters = {
    inFrames: 0,
    inBytes: 0,
    outFrames: 0,
    outBytes: 0,
    outDropped: 0,
    inDropped: 0,
    floods: 0,
    deferred: 0,
    rateLimited: 0,
  };
  /** @internal Ports whose guests wait for this port's guest to post receive buffers. */
  readonly waiters = new Set<SwitchPort>();
  /** @internal The MAC entry this port last learned from, and the one it last sent to. */
  lastSource: MacEntry | undefined = undefined;
  /** @internal */
  lastTarget: MacEntry | undefined = undefined;
  endpoint: NetEndpoint | undefined;
  private readonly bytesPerMs: number;
  private readonly burst: number;
  private tokens: number;
  private refilled = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    readonly owner: NetSwitch,
    readonly name: string,
    options: SwitchPortOptions,
  ) {
    const rate = options.rateLimitBitsPerSecond;
    this.bytesPerMs = rate === undefined ? 0 : rate / 8 / 1000;
    this.burst = options.burstBytes ?? Math.max(65_536 + 256, this.bytesPerMs * 10);
    this.tokens = this.burst;
  }

  attach(endpoint: NetEndpoint): void {
    this.endpoint = endpoint;
  }

  detach(): void {
    this.endpoint = undefined;
    this.owner.forgetPort(this);
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  send(frame: NetFrame): SendResult {
    return this.owner.forward(this, frame);
  }

  rxReady(): void {
    if (this.waiters.size === 0) return;
    const waiting = [...this.waiters];
    this.waiters.clear();
    for (const port of waiting) port.endpoint?.resume();
  }

  /** @internal Token bucket: whether `bytes` may enter now; schedules a resume when not. */
  admit(bytes: number): boolean {
    if (this.bytesPerMs === 0) return true;
    const now = Date.now();
    this.tokens = Math.min(this.burst, this.tokens + (now - this.refilled) * this.bytesPerMs);
    this.refilled = now;
    if (this.tokens >= bytes) {
      this.tokens -= bytes;
      return true;
    }
    this.counters.rateLimited++;
    this.counters.deferred++;
    if (!this.timer) {
      const wait = Math.max(1, Math.ceil((bytes - this.tokens) / this.bytesPerMs));
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.endpoint?.resume();
      }, wait);
    }
    return false;
  }

  /** @internal Gives back tokens of a frame that was not forwarded after all. */
  refund(bytes: number): void {
    if (this.bytesPerMs !== 0) this.tokens = Math.min(this.burst, this.tokens + bytes);
  }

  metrics(): Readonly<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const [key, value] of Object.entries(this.counters)) {
      out[`switch_port_${key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}`] = value;
    }
    return out;
  }

  async close(): Promise<void> {
    this.detach();
    this.owner.removePort(this);
  }
}

let coarseMs = Date.now();
let coarseTimer: NodeJS.Timeout | undefined;

/**
 * Milliseconds, refreshed every 100 ms by a timer: MAC ageing counts in hundreds of seconds,
 * and reading the system clock per frame costs more than the rest of a forwarding decision.
 */
function coarseNow(): number {
  if (coarseTimer === undefined) {
    coarseTimer = setInterval(() => {
      coarseMs = Date.now();
    }, 100);
    coarseTimer.unref();
    coarseMs = Date.now();
  }
  return coarseMs;
}

const switches = new Map<string, NetSwitch>();

/** The process-wide switch of that name, created on first use: devices naming it share it. */
export function getNetSwitch(name = 'default', options: Omit<NetSwitchOptions, 'name'> = {}): NetSwitch {
  let found = switches.get(name);
  if (!found) {
    found = new NetSwitch({ ...options, name });
    switches.set(name, found);
  }
  return found;
}
