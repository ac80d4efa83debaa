import { type NetConfig, type NetConfigInput, parseNetConfig } from './net-config.js';
import { createNetHost, NetDevice, netDeviceOptions } from './net-device.js';
import type { NetEndpoint, NetFrame, NetHost, SendResult } from './net-host.js';
import { PcapWriter } from './net-pcap.js';

/**
 * The host side of one configured network port (its TAP, switch port or socket, and its
 * capture), opened once and lent to the devices that serve the port one after another: a
 * vhost-user backend makes a device per frontend connection, and a frontend that reconnects
 * must find the same TAP (not a second one, not a name still held by the first) and the
 * same capture file (not a truncated one). Closing the port closes the host side.
 */
export class NetPort {
  readonly config: NetConfig;
  readonly host: NetHost;
  readonly capture: PcapWriter | undefined;
  /** @internal The lease whose device is attached now. */
  lessee: HostLease | undefined = undefined;
  private current: NetDevice | undefined;
  private closing: Promise<void> | undefined;
  private created = 0;

  constructor(config: NetConfig, host: NetHost, capture: PcapWriter | undefined) {
    this.config = config;
    this.host = host;
    this.capture = capture;
  }

  /** Devices made so far. */
  get devicesCreated(): number {
    return this.created;
  }

  get closed(): boolean {
    return this.closing !== undefined;
  }

  /**
   * A new device over this port's host side. The previous device (a connection that ended)
   * is closed first: it stops and lets go of the host, which stays open.
   */
  createDevice(): NetDevice {
    if (this.closing !== undefined) throw new Error(`port ${this.config.name} is closed`);
    void this.current?.close();
    const device = new NetDevice(
      netDeviceOptions(this.config, new HostLease(this, this.host), this.capture, false),
    );
    this.current = device;
    this.created++;
    return device;
  }

  /** Closes the current device, then the host side (TAP fd, switch port, sockets) and the capture. Idempotent. */
  close(): Promise<void> {
    if (this.closing === undefined) this.closing = this.release();
    return this.closing;
  }

  private async release(): Promise<void> {
    await this.current?.close();
    this.current = undefined;
    try {
      this.capture?.close();
    } finally {
      await this.host.close();
    }
  }
}

/**
 * One device's use of a port's host. Only the lease attached last reaches the host: a device
 * whose connection ended cannot detach its successor or send through it.
 * @internal
 */
class HostLease implements NetHost {
  readonly kind: string;
  readonly txOffloads: NetHost['txOffloads'];

  constructor(
    private readonly port: NetPort,
    private readonly host: NetHost,
  ) {
    this.kind = host.kind;
    this.txOffloads = host.txOffloads;
  }

  attach(endpoint: NetEndpoint): void {
    this.port.lessee = this;
    this.host.attach(endpoint);
  }

  detach(): void {
    if (this.port.lessee !== this) return;
    this.port.lessee = undefined;
    this.host.detach();
  }

  send(frame: NetFrame): SendResult {
    return this.port.lessee === this ? this.host.send(frame) : 'dropped';
  }

  rxReady(): void {
    if (this.port.lessee === this) this.host.rxReady();
  }

  metrics(): Readonly<Record<string, number>> {
    return this.host.metrics?.() ?? {};
  }

  /** The port owns the host: a lease only lets go of it. */
  async close(): Promise<void> {
    this.detach();
  }
}

/**
 * Opens the host side a configuration names (validated here, once, with zod): throws a
 * ZodError for a bad configuration, a TapError when a TAP cannot be opened.
 */
export function openNetPort(config: NetConfigInput | unknown = {}): NetPort {
  const parsed = parseNetConfig(config);
  const host = createNetHost(parsed.host);
  let capture: PcapWriter | undefined;
  try {
    capture = parsed.capture === undefined ? undefined : new PcapWriter(parsed.capture);
  } catch (error) {
    void host.close();
    throw error;
  }
  return new NetPort(parsed, host, capture);
}
