// Simulated event channels: per-domain port tables with pending and mask bits, delivered
// asynchronously (setImmediate), never from inside `notify`, as an upcall would be.
import { XenError } from './xen-errors.js';
import type { EventChannel, EventChannelBindOptions, EventChannels } from './xen-event-channels.js';

/** Who consumes events on a port: a user handle, or Xen itself (ioreq vCPU ports). */
export interface PortSink {
  deliver(port: number): void;
}

interface PortState {
  readonly domid: number;
  readonly port: number;
  state: 'unbound' | 'interdomain';
  remoteDomid: number;
  remotePort: number | undefined;
  pending: boolean;
  masked: boolean;
  sink: PortSink | undefined;
}

/** Linux allows up to 2^17 ports with FIFO event channels; the 2-level ABI 4096 on 64-bit. */
export const SIM_MAX_PORTS = 4096;

export class SimEventCore {
  private readonly tables = new Map<number, Map<number, PortState>>();
  private readonly alive: (domid: number) => boolean;
  /** Notifications sent, for tests and stats. */
  sent = 0;

  constructor(alive: (domid: number) => boolean) {
    this.alive = alive;
  }

  private table(domid: number): Map<number, PortState> {
    let table = this.tables.get(domid);
    if (!table) {
      table = new Map();
      this.tables.set(domid, table);
    }
    return table;
  }

  private allocate(domid: number, remoteDomid: number, sink: PortSink | undefined): PortState {
    const table = this.table(domid);
    // Port 0 is reserved (never a valid port), as in Xen.
    for (let port = 1; port < SIM_MAX_PORTS; port++) {
      if (!table.has(port)) {
        const state: PortState = {
          domid,
          port,
          state: 'unbound',
          remoteDomid,
          remotePort: undefined,
          pending: false,
          masked: false,
          sink,
        };
        table.set(port, state);
        return state;
      }
    }
    throw new XenError('ENOSPC', 'evtchn', 'alloc_unbound', `domain ${domid} has no free port`);
  }

  port(domid: number, port: number): PortState | undefined {
    return this.tables.get(domid)?.get(port);
  }

  /** EVTCHNOP_alloc_unbound on behalf of `domid`, for `remoteDomid`. */
  allocUnbound(domid: number, remoteDomid: number, sink: PortSink | undefined): number {
    if (!this.alive(domid) || !this.alive(remoteDomid)) {
      throw new XenError(
        'ESRCH',
        'evtchn',
        'alloc_unbound',
        `no domain ${this.alive(domid) ? remoteDomid : domid}`,
      );
    }
    return this.allocate(domid, remoteDomid, sink).port;
  }

  /** EVTCHNOP_bind_interdomain: `domid` binds to `remotePort` of `remoteDomid`, which must be unbound and offered to `domid`. */
  bindInterdomain(
    domid: number,
    remoteDomid: number,
    remotePort: number,
    sink: PortSink | undefined,
  ): number {
    if (!this.alive(remoteDomid))
      throw new XenError('ESRCH', 'evtchn', 'bind_interdomain', `no domain ${remoteDomid}`);
    const remote = this.port(remoteDomid, remotePort);
    if (remote?.state !== 'unbound') {
      throw new XenError(
        'EINVAL',
        'evtchn',
        'bind_interdomain',
        `port ${remotePort} of domain ${remoteDomid} is not unbound`,
      );
    }
    if (remote.remoteDomid !== domid) {
      throw new XenError(
        'EINVAL',
        'evtchn',
        'bind_interdomain',
        `port ${remotePort} is offered to domain ${remote.remoteDomid}`,
      );
    }
    const local = this.allocate(domid, remoteDomid, sink);
    local.state = 'interdomain';
    local.remotePort = remotePort;
    remote.state = 'interdomain';
    remote.remotePort = local.port;
    return local.port;
  }

  /** EVTCHNOP_send from `domid`'s `port`: raises the peer's pending bit and delivers it unless masked. */
  send(domid: number, port: number): void {
    const local = this.port(domid, port);
    if (!local) throw new XenError('EINVAL', 'evtchn', 'notify', `port ${port} is not bound`);
    // Xen silently drops sends on an unbound port (nobody to notify yet).
    if (local.state !== 'interdomain' || local.remotePort === undefined) return;
    const peer = this.port(local.remoteDomid, local.remotePort);
    if (!peer) return;
    this.sent++;
    this.raise(peer);
  }

  private raise(peer: PortState): void {
    if (peer.pending) return; // coalesces with the event already pending
    peer.pending = true;
    if (!peer.masked) this.deliver(peer);
  }

  private deliver(state: PortState): void {
    const sink = state.sink;
    if (!sink) return;
    // Like the Linux evtchn driver: mask on delivery, clear pending; the consumer unmasks.
    state.masked = true;
    state.pending = false;
    sink.deliver(state.port);
  }

  unmask(domid: number, port: number): void {
    const state = this.port(domid, port);
    if (!state) throw new XenError('EINVAL', 'evtchn', 'unmask', `port ${port} is not bound`);
    state.masked = false;
    if (state.pending) this.deliver(state);
  }

  mask(domid: number, port: number): void {
    const state = this.port(domid, port);
    if (!state) throw new XenError('EINVAL', 'evtchn', 'mask', `port ${port} is not bound`);
    state.masked = true;
  }

  /** EVTCHNOP_close: the peer's port goes back to unbound (as on Xen) so it can be rebound. */
  close(domid: number, port: number): void {
    const state = this.port(domid, port);
    if (!state) throw new XenError('EINVAL', 'evtchn', 'unbind', `port ${port} is not bound`);
    this.tables.get(domid)?.delete(port);
    if (state.state === 'interdomain' && state.remotePort !== undefined) {
      const peer = this.port(state.remoteDomid, state.remotePort);
      if (peer && peer.remotePort === port && peer.remoteDomid === domid) {
        peer.state = 'unbound';
        peer.remotePort = undefined;
      }
    }
  }

  /** Drops every port of a destroyed domain. */
  destroyDomain(domid: number): void {
    const table = this.tables.get(domid);
    if (!table) return;
    for (const port of [...table.keys()]) this.close(domid, port);
    this.tables.delete(domid);
  }

  /** The pending and mask bits of a port, for tests. */
  bits(domid: number, port: number): { pending: boolean; masked: boolean } | undefined {
    const state = this.port(domid, port);
    return state ? { pending: state.pending, masked: state.masked } : undefined;
  }

  remoteOf(domid: number, port: number): number | undefined {
    return this.port(domid, port)?.remotePort;
  }
}

/** Bound on queued-but-unconsumed deliveries per iterator; beyond it deliveries coalesce (events are edge doorbells). */
const ITERATOR_QUEUE_LIMIT = 1;

class SimEventChannel implements EventChannel {
  private readonly listeners = new Set<(port: number) => void>();
  private readonly waiters: ((result: IteratorResult<number>) => void)[] = [];
  private queued = 0;
  private scheduled = false;
  closed = false;

  constructor(
    private readonly core: SimEventCore,
    private readonly owner: SimEventChannels,
    readonly localPort: number,
    readonly remoteDomid: number,
    private readonly autoUnmask: boolean,
  ) {}

  get remotePort(): number | undefined {
    return this.core.remoteOf(this.owner.domid, this.localPort);
  }

  /** Called by the core (synchronously inside a send): schedule the upcall. */
  deliver(): void {
    if (this.scheduled || this.closed) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      if (this.closed) return;
      if (this.autoUnmask) this.core.unmask(this.owner.domid, this.localPort);
      for (const listener of [...this.listeners]) listener(this.localPort);
      const waiter = this.waiters.shift();
      if (waiter) waiter({ value: this.localPort, done: false });
      else if (this.queued < ITERATOR_QUEUE_LIMIT) this.queued++;
    });
  }

  notify(): void {
    if (this.closed) throw new XenError('EINVAL', 'evtchn', 'notify', `port ${this.localPort} is closed`);
    this.core.send(this.owner.domid, this.localPort);
  }

  unmask(): void {
    if (this.closed) throw new XenError('EINVAL', 'evtchn', 'unmask', `port ${this.localPort} is closed`);
    this.core.unmask(this.owner.domid, this.localPort);
  }

  onEvent(listener: (port: number) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  [Symbol.asyncIterator](): AsyncIterator<number> {
    return {
      next: () => {
        if (this.queued > 0) {
          this.queued--;
          return Promise.resolve({ value: this.localPort, done: false });
        }
        if (this.closed) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => this.waiters.push(resolve));
      },
      return: () => Promise.resolve({ value: undefined, done: true }),
    };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.core.close(this.owner.domid, this.localPort);
    this.owner.forget(this.localPort);
    for (const waiter of this.waiters.splice(0)) waiter({ value: undefined, done: true });
    this.listeners.clear();
  }
}

/** An event channel handle acting as `domid`. */
export class SimEventChannels implements EventChannels {
  private readonly channels = new Map<number, SimEventChannel>();
  private closed = false;

  constructor(
    private readonly core: SimEventCore,
    readonly domid: number,
  ) {}

  private bind(
    bindPort: (sink: PortSink) => number,
    remoteDomid: number,
    options: EventChannelBindOptions | undefined,
  ): EventChannel {
    if (this.closed) throw new XenError('EBADF', 'evtchn', 'bind', 'handle is closed');
    let channel: SimEventChannel | undefined;
    const sink: PortSink = { deliver: () => channel?.deliver() };
    const port = bindPort(sink);
    channel = new SimEventChannel(this.core, this, port, remoteDomid, options?.autoUnmask ?? true);
    this.channels.set(port, channel);
    return channel;
  }

  bindInterdomain(remoteDomid: number, remotePort: number, options?: EventChannelBindOptions): EventChannel {
    return this.bind(
      (sink) => this.core.bindInterdomain(this.domid, remoteDomid, remotePort, sink),
      remoteDomid,
      options,
    );
  }

  bindUnboundPort(remoteDomid: number, options?: EventChannelBindOptions): EventChannel {
    return this.bind((sink) => this.core.allocUnbound(this.domid, remoteDomid, sink), remoteDomid, options);
  }

  forget(port: number): void {
    this.channels.delete(port);
  }

  close(): void {
    for (const channel of [...this.channels.values()]) channel.close();
    this.closed = true;
  }
}
