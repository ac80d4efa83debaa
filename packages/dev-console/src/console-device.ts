import {
  CORE_FEATURES,
  type DescriptorChain,
  type DeviceContext,
  hasFeature,
  openChain,
  serviceQueue,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  type VirtioDevice,
} from '@xvio/transport';
import {
  type ConsoleConfig,
  ConsoleConfigError,
  type ConsoleConfigInput,
  type ConsoleHostConfig,
  type ConsolePortConfig,
  type ConsolePortInput,
  parseConsoleConfig,
  parseConsolePort,
} from './console-config.js';
import {
  type ConsoleHost,
  ConsoleHostError,
  FileConsoleHost,
  MemoryConsoleHost,
  NullConsoleHost,
  StdioConsoleHost,
  TcpConsoleHost,
  TeeConsoleHost,
  UnixSocketConsoleHost,
} from './console-host.js';
import { ConsoleMetrics, ConsolePortMetrics } from './console-metrics.js';
import { PtyConsoleHost } from './console-pty.js';
import {
  CONFIG_EMERG_WR,
  CONSOLE_CONFIG_SIZE,
  CONTROL_RECEIVE_QUEUE,
  CONTROL_SIZE,
  CONTROL_TRANSMIT_QUEUE,
  type ConsoleSize,
  type ControlMessage,
  decodeControl,
  encodeConsoleConfig,
  encodeControl,
  encodeResize,
  portQueues,
  queueCount,
  queueRole,
  VIRTIO_CONSOLE_CONSOLE_PORT,
  VIRTIO_CONSOLE_DEVICE_ADD,
  VIRTIO_CONSOLE_DEVICE_READY,
  VIRTIO_CONSOLE_DEVICE_REMOVE,
  VIRTIO_CONSOLE_F_EMERG_WRITE,
  VIRTIO_CONSOLE_F_MULTIPORT,
  VIRTIO_CONSOLE_F_SIZE,
  VIRTIO_CONSOLE_PORT_NAME,
  VIRTIO_CONSOLE_PORT_OPEN,
  VIRTIO_CONSOLE_PORT_READY,
  VIRTIO_CONSOLE_RESIZE,
  VIRTIO_ID_CONSOLE,
} from './console-wire.js';

/** Ring features the core implements; packed rings only once the core offers them. */
const RING_FEATURES =
  VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX | VIRTIO_F_INDIRECT_DESC | (CORE_FEATURES & VIRTIO_F_RING_PACKED);

/** Size reported before any host says otherwise (a VT100's). */
const DEFAULT_SIZE: ConsoleSize = { cols: 80, rows: 24 };

/** One port: its host (lives across driver resets) and what the driver knows of it (does not). */
class Port {
  readonly metrics = new ConsolePortMetrics();
  /** Host input not yet delivered to the guest, oldest first; `inboundOffset` into the first. */
  inbound: Uint8Array[] = [];
  inboundOffset = 0;
  inboundBytes = 0;
  hostPaused = false;
  /** The host said "full": transmit chains wait for its drain. */
  txBlocked = false;
  hostGone = false;
  hostError: ConsoleHostError | undefined;
  size: ConsoleSize | undefined;
  /** Reentrancy guard: host input arriving while the receive queue is being served. */
  servingReceive = false;
  receiveAgain = false;
  // Driver state (spec 5.3.6.2), forgotten on reset.
  announced = false;
  ready = false;
  guestOpen = false;

  constructor(
    readonly config: ConsolePortConfig,
    readonly host: ConsoleHost,
  ) {}

  get id(): number {
    return this.config.id;
  }
}

interface Outgoing {
  id: number;
  event: number;
  bytes: Uint8Array;
}

export interface ConsoleDeviceOptions {
  /** Hosts by port id, used instead of the ones the config names (e.g. a `MemoryConsoleHost`). */
  hosts?: ReadonlyMap<number, ConsoleHost> | Readonly<Record<number, ConsoleHost>>;
}

/** Builds the host a validated port config names, fanned out to its log when it has one. */
export function createConsoleHost(host: ConsoleHostConfig, log?: string): ConsoleHost {
  const primary = ((): ConsoleHost => {
    switch (host.kind) {
      case 'null':
        return new NullConsoleHost();
      case 'memory':
        return new MemoryConsoleHost();
      case 'stdio':
        return new StdioConsoleHost({ raw: host.raw });
      case 'pty':
        return new PtyConsoleHost({
          raw: host.raw,
          holdSlave: host.holdSlave,
          sizePollMs: host.sizePollMs,
          ...(host.size ? { size: host.size } : {}),
        });
      case 'unix':
        return new UnixSocketConsoleHost({ path: host.path });
      case 'tcp':
        return new TcpConsoleHost({ host: host.host, port: host.port });
      case 'file':
        return new FileConsoleHost({ path: host.path });
    }
  })();
  return log ? new TeeConsoleHost(primary, new FileConsoleHost({ path: log })) : primary;
}

/**
 * virtio-console (spec 5.3): one port, or with MULTIPORT up to `maxPorts` ports announced over
 * the control queues, each backed by a host. Flow control both ways and everything bounded:
 * guest output waits (transmit buffers stay uncompleted) while a host is full, host input is
 * paused while the guest supplies no receive buffers, control messages coalesce in a bounded
 * outbox. A guest that breaks the rules is counted and ignored; a broken ring is NEEDS_RESET.
 */
export class ConsoleDevice implements VirtioDevice {
  readonly deviceType = VIRTIO_ID_CONSOLE;
  readonly name: string;
  readonly queueMaxSizes: readonly number[];
  readonly features: bigint;
  readonly configSize = CONSOLE_CONFIG_SIZE;
  readonly config: ConsoleConfig;
  readonly counters = new ConsoleMetrics();
  private readonly ports = new Map<number, Port>();
  private readonly outboxLimit: number;
  private outbox: Outgoing[] = [];
  private context: DeviceContext | undefined;
  private multiport = false;
  private sizeNegotiated = false;
  private driverReady = false;
  private opened = false;
  private openPromise: Promise<void> | undefined;

  constructor(config: ConsoleConfig, options: ConsoleDeviceOptions = {}) {
    this.config = config;
    this.name = config.name;
    this.queueMaxSizes = Array.from(
      { length: queueCount(config.maxPorts, config.multiport) },
      () => config.queueSize,
    );
    this.features =
      RING_FEATURES |
      (config.size === 'off' ? 0n : VIRTIO_CONSOLE_F_SIZE) |
      (config.multiport ? VIRTIO_CONSOLE_F_MULTIPORT : 0n) |
      (config.emergencyWrite ? VIRTIO_CONSOLE_F_EMERG_WRITE : 0n);
    // Per port at most one of each event is pending (coalesced), plus slack for add/remove churn.
    this.outboxLimit = 8 * config.maxPorts + 16;
    const hosts = options.hosts;
    const given = (id: number): ConsoleHost | undefined =>
      hosts instanceof Map ? hosts.get(id) : (hosts as Record<number, ConsoleHost> | undefined)?.[id];
    for (const portConfig of config.ports) {
      const host = given(portConfig.id) ?? createConsoleHost(portConfig.host, portConfig.log);
      this.ports.set(portConfig.id, new Port(portConfig, host));
    }
  }

  /**
   * Starts every port's host (listens, opens the pty, opens logs). Idempotent. A host that
   * cannot start counts as gone (its port drops output, `hostErrors` counts it) and the
   * first such error rejects the returned promise. `activate` calls it when nobody did, so a
   * device built by the bare factory still reaches its hosts.
   */
  open(): Promise<void> {
    this.openPromise ??= (async () => {
      this.opened = true;
      let first: unknown;
      for (const port of [...this.ports.values()]) {
        try {
          await this.startHost(port);
        } catch (error) {
          this.hostClosed(port, ConsoleHostError.isInstance(error) ? error : undefined);
          if (!ConsoleHostError.isInstance(error)) port.metrics.hostErrors++;
          first ??= error;
        }
      }
      if (first !== undefined) throw first;
    })();
    return this.openPromise;
  }

  /** Stops the device for good and closes every host. */
  async close(): Promise<void> {
    this.reset();
    this.opened = false;
    this.openPromise = undefined;
    await Promise.all([...this.ports.values()].map((port) => port.host.close()));
  }

  /** The host of a port, for its address (`/dev/pts/N`, socket) or to drive a memory host. */
  host(id: number): ConsoleHost | undefined {
    return this.ports.get(id)?.host;
  }

  portIds(): number[] {
    return [...this.ports.keys()].sort((a, b) => a - b);
  }

  /** What the driver knows of a port (for diagnostics and tests). */
  portState(
    id: number,
  ): { announced: boolean; ready: boolean; guestOpen: boolean; hostGone: boolean } | undefined {
    const port = this.ports.get(id);
    if (!port) return undefined;
    return {
      announced: port.announced,
      ready: port.ready,
      guestOpen: port.guestOpen,
      hostGone: port.hostGone,
    };
  }

  // ---- VirtioDevice ----

  readConfig(offset: number, target: Uint8Array): void {
    const size = this.config.size === 'off' ? { cols: 0, rows: 0 } : this.portSize(0);
    const bytes = encodeConsoleConfig({ size, maxPorts: this.config.maxPorts, emergWrite: 0 });
    target.set(bytes.subarray(offset, offset + target.length));
  }

  /**
   * Only emerg_wr is writable (5.3.4). The driver writes a 32-bit value whose low byte is the
   * character; the spec exempts it from the initialization order, so it may come before
   * FEATURES_OK or DRIVER_OK, when nothing else works yet (early boot, panics).
   */
  writeConfig(offset: number, source: Uint8Array): void {
    if (!this.config.emergencyWrite) return;
    const at = CONFIG_EMERG_WR - offset;
    if (at < 0 || at >= source.length) return;
    const port = this.ports.get(0) ?? [...this.ports.values()].find((candidate) => candidate.config.console);
    if (!port) return;
    this.counters.emergencyBytes++;
    if (port.hostGone) {
      port.metrics.droppedBytes++;
      return;
    }
    // One byte, past flow control: an emergency write must not wait for a slow host.
    port.host.write(Uint8Array.of(source[at]!));
  }

  activate(context: DeviceContext): void {
    // Errors are on the ports' counters (and returned by open() to whoever awaits it).
    if (!this.openPromise) this.open().catch(() => {});
    this.context = context;
    this.multiport = this.config.multiport && hasFeature(context.features, VIRTIO_CONSOLE_F_MULTIPORT);
    this.sizeNegotiated = this.config.size !== 'off' && hasFeature(context.features, VIRTIO_CONSOLE_F_SIZE);
    this.driverReady = false;
    this.outbox = [];
    for (const port of this.ports.values()) this.forgetDriver(port);
    if (!this.multiport) {
      // Without MULTIPORT, port 0 exists implicitly and is a console (5.3.6).
      const port = this.ports.get(0);
      if (port) {
        port.announced = true;
        port.ready = true;
        port.guestOpen = true;
      }
    }
    for (const port of this.ports.values()) {
      this.serveTransmit(port.id);
      this.serveReceive(port);
    }
    // Without MULTIPORT, Linux reads cols/rows only when a configuration change arrives
    // (drivers/char/virtio_console.c, config_work_handler), never at probe: signal one now so
    // the console starts at the host's size instead of 0x0. The driver's core holds it until
    // its probe has finished.
    if (this.sizeNegotiated && !this.multiport) context.configChanged();
  }

  notify(queueIndex: number): void {
    if (queueIndex < 0 || queueIndex >= this.queueMaxSizes.length) return;
    const role = queueRole(queueIndex);
    if (role.kind === 'control') {
      if (role.direction === 'transmit') this.serveControlTransmit();
      else this.serveControlReceive();
      return;
    }
    if (role.direction === 'transmit') {
      this.serveTransmit(role.port);
      return;
    }
    const port = this.ports.get(role.port);
    if (port) this.serveReceive(port);
  }

  /** Forgets the driver. Hosts, their buffered input and their sizes survive. */
  reset(): void {
    this.context = undefined;
    this.driverReady = false;
    this.outbox = [];
    for (const port of this.ports.values()) this.forgetDriver(port);
  }

  metrics(): Readonly<Record<string, number>> {
    const out: Record<string, number> = this.counters.snapshot();
    for (const port of this.ports.values()) {
      Object.assign(out, port.metrics.snapshot(`port${port.id}`));
      out[`port${port.id}.hostDroppedBytes`] = port.host.stats.droppedBytes;
    }
    out.controlPending = this.outbox.length;
    return out;
  }

  // ---- host-facing API ----

  /**
   * Hot-adds a port (needs MULTIPORT). Validates the port config, starts its host and, when
   * the driver is up, announces it with DEVICE_ADD. Returns the port id.
   */
  async addPort(input: ConsolePortInput, host?: ConsoleHost): Promise<number> {
    if (!this.config.multiport)
      throw new ConsoleConfigError('invalid console config: hot-add needs multiport');
    let next = 0;
    while (this.ports.has(next)) next++;
    const config = parseConsolePort(input, next);
    if (this.ports.has(config.id) || config.id >= this.config.maxPorts) {
      throw new ConsoleConfigError(
        `invalid console config: port id ${config.id} is taken or not below maxPorts`,
      );
    }
    const port = new Port(config, host ?? createConsoleHost(config.host, config.log));
    this.ports.set(config.id, port);
    if (this.opened) {
      try {
        await this.startHost(port);
      } catch (error) {
        this.ports.delete(config.id);
        throw error;
      }
    }
    if (this.running && this.multiport && this.driverReady) this.announce(port);
    return config.id;
  }

  /**
   * Hot-removes a port: transmit buffers still in its queue are completed (their data
   * dropped and counted, as QEMU does before unplugging) so the driver can reclaim them, then
   * DEVICE_REMOVE goes to the driver and the host is closed. Unknown ids are ignored.
   */
  async removePort(id: number): Promise<void> {
    const port = this.ports.get(id);
    if (!port) return;
    port.hostGone = true;
    port.txBlocked = false;
    this.serveTransmit(id);
    this.ports.delete(id);
    if (this.running && this.multiport && port.announced) this.send(id, VIRTIO_CONSOLE_DEVICE_REMOVE, 1);
    this.outbox = this.outbox.filter(
      (message) => message.id !== id || message.event === VIRTIO_CONSOLE_DEVICE_REMOVE,
    );
    await port.host.close();
  }

  /**
   * The host's terminal for a port changed size. With MULTIPORT a console port gets a RESIZE
   * message (5.3.6.2); without it port 0's size is in config space and a configuration change
   * notification tells the driver (5.3.4).
   */
  resize(id: number, size: ConsoleSize): void {
    const port = this.ports.get(id);
    if (!port || this.config.size === 'off') return;
    if (typeof this.config.size === 'object') return; // a fixed size does not follow the host
    port.size = size;
    if (!this.running || !this.sizeNegotiated) return;
    if (this.multiport) {
      if (port.ready && port.config.console) this.sendResize(port);
    } else if (id === 0) {
      this.context?.configChanged();
    }
  }

  // ---- internals ----

  private get running(): boolean {
    return this.context !== undefined && !this.context.signal.aborted;
  }

  private portSize(id: number): ConsoleSize {
    if (typeof this.config.size === 'object') return this.config.size;
    return this.ports.get(id)?.size ?? DEFAULT_SIZE;
  }

  private forgetDriver(port: Port): void {
    port.announced = false;
    port.ready = false;
    port.guestOpen = false;
  }

  private async startHost(port: Port): Promise<void> {
    const host = port.host;
    await host.start({
      data: (bytes) => this.hostInput(port, bytes),
      drain: () => {
        port.txBlocked = false;
        this.serveTransmit(port.id);
      },
      connection: (connected) => {
        if (this.running && this.multiport && port.ready)
          this.send(port.id, VIRTIO_CONSOLE_PORT_OPEN, connected ? 1 : 0);
      },
      resize: (size) => this.resize(port.id, size),
      closed: (error) => this.hostClosed(port, error),
    });
    if (this.config.size === 'host' && host.size) port.size = host.size;
  }

  /** The host side disappeared: tell the driver the port is closed and stop holding guest output. */
  private hostClosed(port: Port, error: ConsoleHostError | undefined): void {
    if (port.hostGone) return;
    port.hostGone = true;
    port.hostError = error;
    if (error) port.metrics.hostErrors++;
    port.txBlocked = false;
    if (this.running && this.multiport && port.ready) this.send(port.id, VIRTIO_CONSOLE_PORT_OPEN, 0);
    this.serveTransmit(port.id);
  }

  private hostInput(port: Port, bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    // Hosts stop reading on pause(); a chunk already in flight may still arrive, so a chunk is
    // taken whole while the buffer is below twice the limit (the buffer stays under twice the
    // limit plus one chunk). Input beyond that comes from a host that ignores pause: dropped.
    if (port.inboundBytes >= 2 * this.config.bufferBytes) {
      port.metrics.droppedBytes += bytes.length;
      return;
    }
    port.inbound.push(bytes);
    port.inboundBytes += bytes.length;
    port.metrics.hostInputBytes += bytes.length;
    port.metrics.inboundBuffered = port.inboundBytes;
    if (port.inboundBytes >= this.config.bufferBytes && !port.hostPaused) {
      port.hostPaused = true;
      port.metrics.hostPauses++;
      port.host.pause();
    }
    if (this.ports.get(port.id) === port) this.serveReceive(port);
  }

  /** Whether the driver takes input on this port now (Linux discards input on closed generic ports). */
  private deliverable(port: Port): boolean {
    if (!this.running || !port.ready) return false;
    return !this.multiport || port.config.console || port.guestOpen;
  }

  /** Host input into the port's receive buffers; buffers wait in the ring while there is none. */
  private serveReceive(port: Port): void {
    if (port.servingReceive) {
      port.receiveAgain = true;
      return;
    }
    port.servingReceive = true;
    try {
      do {
        port.receiveAgain = false;
        if (!this.deliverable(port) || port.inboundBytes === 0) break;
        const context = this.context!;
        const result = serviceQueue(context, portQueues(port.id).receive, (chain) =>
          this.receiveChain(context, port, chain),
        );
        this.counters.faults += result.faulted;
        port.metrics.inboundBuffered = port.inboundBytes;
        if (port.hostPaused && port.inboundBytes <= this.config.bufferBytes / 2) {
          port.hostPaused = false;
          port.host.resume(); // may deliver input at once: receiveAgain picks it up
        }
      } while (port.receiveAgain);
    } finally {
      port.servingReceive = false;
    }
  }

  private receiveChain(context: DeviceContext, port: Port, chain: DescriptorChain): number | 'defer' {
    if (port.inboundBytes === 0) return 'defer';
    if (chain.readableLength > 0) {
      // 5.3.6.1: receive buffers are device-writable only.
      port.metrics.badChains++;
      return 0;
    }
    if (chain.writableLength === 0) return 0;
    const io = openChain(context.memory, chain);
    let index = 0;
    let offset = port.inboundOffset;
    while (io.writer.remaining > 0 && index < port.inbound.length) {
      const chunk = port.inbound[index]!;
      offset += io.writer.write(chunk.subarray(offset));
      if (offset === chunk.length) {
        index++;
        offset = 0;
      }
    }
    const written = io.close();
    // Consumed only once the copy succeeded: a faulting buffer loses no host input.
    port.inbound.splice(0, index);
    port.inboundOffset = offset;
    port.inboundBytes -= written;
    port.metrics.rxBytes += written;
    port.metrics.rxChains++;
    return written;
  }

  /** Guest output to the host; while the host is full the chains stay in the ring. */
  private serveTransmit(id: number): void {
    const context = this.context;
    if (!context || context.signal.aborted) return;
    const { transmit } = portQueues(id);
    if (transmit >= this.queueMaxSizes.length) return;
    const result = serviceQueue(context, transmit, (chain) => this.transmitChain(context, id, chain));
    this.counters.faults += result.faulted;
  }

  private transmitChain(context: DeviceContext, id: number, chain: DescriptorChain): number | 'defer' {
    const port = this.ports.get(id);
    if (!port) {
      // Data on the queues of a port that does not exist (never added, or removed): dropped.
      this.counters.unknownPort++;
      return 0;
    }
    if (port.txBlocked && !port.hostGone) return 'defer';
    if (chain.readableLength > this.config.maxChainBytes) {
      port.metrics.badChains++;
      return 0;
    }
    const io = openChain(context.memory, chain);
    const bytes = new Uint8Array(chain.readableLength);
    io.reader.read(bytes);
    io.close();
    port.metrics.txChains++;
    if (port.hostGone) {
      port.metrics.droppedBytes += bytes.length;
      return 0;
    }
    port.metrics.txBytes += bytes.length;
    if (bytes.length > 0 && !port.host.write(bytes)) {
      port.txBlocked = true;
      port.metrics.txWaits++;
    }
    return 0;
  }

  // ---- control queues (MULTIPORT) ----

  private serveControlTransmit(): void {
    const context = this.context;
    if (!context || context.signal.aborted || !this.multiport) return;
    const result = serviceQueue(context, CONTROL_TRANSMIT_QUEUE, (chain) => {
      if (chain.readableLength < CONTROL_SIZE) {
        this.counters.badControl++;
        return 0;
      }
      const io = openChain(context.memory, chain);
      const head = io.reader.readExact(CONTROL_SIZE)!;
      io.close();
      // Copied, then validated: the guest cannot change the message after the checks.
      this.controlFromDriver(decodeControl(head)!);
      return 0;
    });
    this.counters.faults += result.faulted;
  }

  private controlFromDriver(message: ControlMessage): void {
    switch (message.event) {
      case VIRTIO_CONSOLE_DEVICE_READY:
        this.counters.controlReceived++;
        if (message.value !== 1) {
          this.counters.driverErrors++;
          return;
        }
        this.driverReady = true;
        for (const id of this.portIds()) {
          const port = this.ports.get(id)!;
          if (!port.announced) this.announce(port);
        }
        return;
      case VIRTIO_CONSOLE_PORT_READY: {
        const port = this.knownPort(message.id);
        if (!port) return;
        this.counters.controlReceived++;
        if (message.value !== 1) {
          this.counters.driverErrors++;
          port.ready = false;
          return;
        }
        if (port.ready) return; // Linux repeats PORT_READY for a port it already has
        port.ready = true;
        // QEMU's order: console flag, size, name, then whether the host side is open.
        if (port.config.console) {
          this.send(port.id, VIRTIO_CONSOLE_CONSOLE_PORT, 1);
          if (this.sizeNegotiated) this.sendResize(port);
        }
        if (port.config.name) {
          this.send(port.id, VIRTIO_CONSOLE_PORT_NAME, 1, new TextEncoder().encode(port.config.name));
        }
        if (port.host.connected && !port.hostGone) this.send(port.id, VIRTIO_CONSOLE_PORT_OPEN, 1);
        this.serveTransmit(port.id);
        this.serveReceive(port);
        return;
      }
      case VIRTIO_CONSOLE_PORT_OPEN: {
        const port = this.knownPort(message.id);
        if (!port) return;
        this.counters.controlReceived++;
        port.guestOpen = message.value !== 0;
        this.serveReceive(port);
        return;
      }
      default:
        // Unknown events and the device's own (DEVICE_ADD, RESIZE, ...) are not the driver's to send.
        this.counters.badControl++;
    }
  }

  /** A port the driver was told about; anything else is counted and ignored. */
  private knownPort(id: number): Port | undefined {
    const port = this.ports.get(id);
    if (!port?.announced) {
      this.counters.unknownPort++;
      return undefined;
    }
    return port;
  }

  private announce(port: Port): void {
    port.announced = true;
    this.send(port.id, VIRTIO_CONSOLE_DEVICE_ADD, 1);
  }

  private sendResize(port: Port): void {
    this.send(
      port.id,
      VIRTIO_CONSOLE_RESIZE,
      0,
      encodeResize(this.portSize(port.id), this.config.resizeOrder),
    );
  }

  /** Queues a control message for the driver; RESIZE and PORT_OPEN replace a pending one of the same port. */
  private send(id: number, event: number, value: number, payload?: Uint8Array): void {
    const bytes = encodeControl({ id, event, value, ...(payload ? { payload } : {}) });
    if (event === VIRTIO_CONSOLE_RESIZE || event === VIRTIO_CONSOLE_PORT_OPEN) {
      const pending = this.outbox.findIndex((message) => message.id === id && message.event === event);
      if (pending >= 0) {
        this.outbox[pending] = { id, event, bytes };
        this.serveControlReceive();
        return;
      }
    }
    if (this.outbox.length >= this.outboxLimit) {
      this.counters.controlDropped++;
      return;
    }
    this.outbox.push({ id, event, bytes });
    this.serveControlReceive();
  }

  private serveControlReceive(): void {
    const context = this.context;
    if (!context || context.signal.aborted || !this.multiport || this.outbox.length === 0) return;
    const result = serviceQueue(context, CONTROL_RECEIVE_QUEUE, (chain) => {
      const next = this.outbox[0];
      if (!next) return 'defer';
      if (chain.writableLength < next.bytes.length) {
        // Linux posts PAGE_SIZE buffers; a smaller one cannot carry the message. It stays queued.
        this.counters.controlBufferTooSmall++;
        return 0;
      }
      const io = openChain(context.memory, chain);
      io.writer.write(next.bytes);
      const written = io.close();
      this.outbox.shift();
      this.counters.controlSent++;
      return written;
    });
    this.counters.faults += result.faulted;
  }
}

/**
 * Builds a console device from a configuration as a user wrote it (validated here, once).
 * Call `open()` to start its hosts. Throws `ConsoleConfigError` for a bad configuration.
 */
export function createConsoleDevice(
  config: ConsoleConfigInput | unknown = {},
  options: ConsoleDeviceOptions = {},
): ConsoleDevice {
  return new ConsoleDevice(parseConsoleConfig(config), options);
}

/** `createConsoleDevice` then `open()`: the device with every host started, or the first host error. */
export async function openConsoleDevice(
  config: ConsoleConfigInput | unknown = {},
  options: ConsoleDeviceOptions = {},
): Promise<ConsoleDevice> {
  const device = createConsoleDevice(config, options);
  try {
    await device.open();
  } catch (error) {
    await device.close();
    throw error;
  }
  return device;
}
