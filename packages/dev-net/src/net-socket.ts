import dgram from 'node:dgram';
import net from 'node:net';
import { type NetEndpoint, type NetFrame, type NetHost, NO_OFFLOADS, type SendResult } from './net-host.js';
import { gather } from './net-offload.js';
import { emptyNetHeader } from './net-wire.js';

/**
 * QEMU's `-netdev stream` framing (net/stream.c): each frame preceded by its length as a
 * 4-byte big-endian integer; no virtio_net_hdr, so frames carry no offloads. QEMU refuses
 * lengths above NET_BUFSIZE (4096 + 65536), and so do we.
 */
export const STREAM_LENGTH_SIZE = 4;
export const STREAM_MAX_FRAME = 4096 + 65_536;
/** Bytes queued in the socket before the guest is made to wait (backpressure). */
const WRITE_HIGH_WATER = 1 << 20;
const RECONNECT_MS = 1000;

export interface SocketCounters {
  sentFrames: number;
  sentBytes: number;
  receivedFrames: number;
  receivedBytes: number;
  /** Frames lost: not connected, guest refused, datagram queue full. */
  dropped: number;
  /** Connections closed because the peer sent a length beyond STREAM_MAX_FRAME. */
  protocolErrors: number;
  connections: number;
}

function newCounters(): SocketCounters {
  return {
    sentFrames: 0,
    sentBytes: 0,
    receivedFrames: 0,
    receivedBytes: 0,
    dropped: 0,
    protocolErrors: 0,
    connections: 0,
  };
}

function flatten(prefix: string, counters: SocketCounters): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, value] of Object.entries(counters)) {
    out[`${prefix}_${key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}`] = value;
  }
  return out;
}

export interface StreamOptions {
  mode: 'server' | 'client';
  /** Unix socket path; or host and port for TCP. */
  path?: string;
  host?: string;
  port?: number;
}

/**
 * A stream socket carrying frames with a 4-byte big-endian length prefix, compatible with
 * QEMU's `-netdev stream` (server or client). One peer at a time; a server turns away a
 * second connection. When the guest has no receive buffers the socket is paused, so at most
 * one chunk of the stream waits in memory.
 */
export class StreamNetHost implements NetHost {
  readonly kind = 'stream';
  readonly txOffloads = NO_OFFLOADS;
  readonly counters = newCounters();
  private endpoint: NetEndpoint | undefined;
  private server: net.Server | undefined;
  private socket: net.Socket | undefined;
  private closed = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  // Receive state: chunks not yet consumed.
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waitingForGuest = false;
  private readonly listening: Promise<void>;
  private deferred = false;

  constructor(readonly options: StreamOptions) {
    if (options.mode === 'server') {
      const server = net.createServer((socket) => this.adopt(socket));
      this.server = server;
      this.listening = new Promise((resolve, reject) => {
        server.once('error', reject);
        const done = () => {
          server.off('error', reject);
          resolve();
        };
        if (options.path !== undefined) server.listen(options.path, done);
        else server.listen(options.port ?? 0, options.host ?? '127.0.0.1', done);
      });
    } else {
      this.listening = Promise.resolve();
      this.connect();
    }
  }

  /** Resolves once a server listens (its address is then known). */
  ready(): Promise<void> {
    return this.listening;
  }

  /** The TCP port a server listens on (useful with port 0). */
  get port(): number | undefined {
    const address = this.server?.address();
    return address && typeof address === 'object' ? address.port : undefined;
  }

  get connected(): boolean {
    return this.socket !== undefined && !this.socket.destroyed && !this.socket.connecting;
  }

  private connect(): void {
    if (this.closed) return;
    const { path, host, port } = this.options;
    const socket = path !== undefined ? net.connect(path) : net.connect(port ?? 0, host ?? '127.0.0.1');
    socket.once('error', () => undefined);
    socket.once('close', () => {
      if (this.socket === socket) this.socket = undefined;
      if (!this.closed) this.reconnectTimer = setTimeout(() => this.connect(), RECONNECT_MS);
    });
    socket.once('connect', () => this.adopt(socket));
  }

  private adopt(socket: net.Socket): void {
    if (this.closed || (this.socket && !this.socket.destroyed && this.socket !== socket)) {
      socket.destroy();
      return;
    }
    this.socket = socket;
    this.counters.connections++;
    this.chunks = [];
    this.buffered = 0;
    socket.setNoDelay(true);
    socket.on('error', () => undefined);
    socket.on('close', () => {
      if (this.socket === socket) this.socket = undefined;
    });
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      this.parse();
    });
    socket.on('drain', () => this.resumeGuest());
    if (this.waitingForGuest) socket.pause();
  }

  private resumeGuest(): void {
    if (!this.deferred) return;
    this.deferred = false;
    this.endpoint?.resume();
  }

  private take(length: number): Buffer {
    const out = Buffer.allocUnsafe(length);
    let offset = 0;
    while (offset < length) {
      const chunk = this.chunks[0]!;
      const n = Math.min(chunk.length, length - offset);
      chunk.copy(out, offset, 0, n);
      offset += n;
      if (n === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(n);
    }
    this.buffered -= length;
    return out;
  }

  private peekLength(): number {
    const head = this.chunks[0]!.length >= STREAM_LENGTH_SIZE ? this.chunks[0]! : Buffer.concat(this.chunks);
    return head.readUInt32BE(0);
  }

  /** Delivers every complete frame buffered, unless the guest is full. */
  private parse(): void {
    const socket = this.socket;
    while (this.buffered >= STREAM_LENGTH_SIZE) {
      const length = this.peekLength();
      if (length > STREAM_MAX_FRAME) {
        this.counters.protocolErrors++;
        socket?.destroy();
        this.chunks = [];
        this.buffered = 0;
        return;
      }
      if (this.buffered < STREAM_LENGTH_SIZE + length) return;
      if (!this.endpoint) {
        this.take(STREAM_LENGTH_SIZE + length);
        this.counters.dropped++;
        continue;
      }
      // Peek the frame without consuming, so a frame the guest cannot take yet stays queued.
      const whole = this.take(STREAM_LENGTH_SIZE + length);
      const frame = whole.subarray(STREAM_LENGTH_SIZE);
      const result = this.endpoint.receive({ header: emptyNetHeader(), segments: [frame], length });
      if (result === 'no-buffers') {
        this.chunks.unshift(whole);
        this.buffered += whole.length;
        this.waitingForGuest = true;
        socket?.pause();
        return;
      }
      if (result === 'dropped') this.counters.dropped++;
      else {
        this.counters.receivedFrames++;
        this.counters.receivedBytes += length;
      }
    }
  }

  attach(endpoint: NetEndpoint): void {
    this.endpoint = endpoint;
    this.parse();
  }

  detach(): void {
    this.endpoint = undefined;
  }

  send(frame: NetFrame): SendResult {
    const socket = this.socket;
    if (!socket || socket.destroyed || socket.connecting) {
      this.counters.dropped++;
      return 'dropped';
    }
    if (socket.writableLength > WRITE_HIGH_WATER) {
      this.deferred = true;
      return 'defer';
    }
    const out = Buffer.allocUnsafe(STREAM_LENGTH_SIZE + frame.length);
    out.writeUInt32BE(frame.length, 0);
    gather(frame.segments, frame.length, out.subarray(STREAM_LENGTH_SIZE));
    socket.write(out);
    this.counters.sentFrames++;
    this.counters.sentBytes += frame.length;
    return 'sent';
  }

  rxReady(): void {
    if (!this.waitingForGuest) return;
    this.waitingForGuest = false;
    this.parse();
    if (!this.waitingForGuest) this.socket?.resume();
  }

  metrics(): Readonly<Record<string, number>> {
    return flatten('stream', this.counters);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.endpoint = undefined;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.socket?.destroy();
    if (this.server) {
      const server = this.server;
      this.server = undefined;
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  }
}

export interface DatagramOptions {
  localHost?: string;
  localPort: number;
  remoteHost?: string;
  remotePort: number;
}

/**
 * A UDP socket carrying one frame per datagram, compatible with QEMU's `-netdev dgram`
 * (local and remote inet addresses). Datagrams are lost when the guest has no buffers, as on
 * a wire.
 */
export class DatagramNetHost implements NetHost {
  readonly kind = 'dgram';
  readonly txOffloads = NO_OFFLOADS;
  readonly counters = newCounters();
  private endpoint: NetEndpoint | undefined;
  private readonly socket: dgram.Socket;
  private readonly bound: Promise<void>;
  private readonly remoteHost: string;

  constructor(readonly options: DatagramOptions) {
    const localHost = options.localHost ?? '127.0.0.1';
    this.remoteHost = options.remoteHost ?? '127.0.0.1';
    this.socket = dgram.createSocket(net.isIPv6(localHost) ? 'udp6' : 'udp4');
    this.socket.on('error', () => {
      this.counters.dropped++;
    });
    this.socket.on('message', (message) => this.deliver(message));
    this.bound = new Promise((resolve, reject) => {
      this.socket.once('error', reject);
      this.socket.bind(options.localPort, localHost, () => {
        this.socket.off('error', reject);
        resolve();
      });
    });
  }

  ready(): Promise<void> {
    return this.bound;
  }

  get port(): number {
    return this.socket.address().port;
  }

  private deliver(message: Buffer): void {
    const result = this.endpoint
      ? this.endpoint.receive({ header: emptyNetHeader(), segments: [message], length: message.length })
      : 'dropped';
    if (result === 'delivered') {
      this.counters.receivedFrames++;
      this.counters.receivedBytes += message.length;
    } else {
      this.counters.dropped++;
    }
  }

  attach(endpoint: NetEndpoint): void {
    this.endpoint = endpoint;
  }

  detach(): void {
    this.endpoint = undefined;
  }

  send(frame: NetFrame): SendResult {
    if (sendQueueSize(this.socket) > WRITE_HIGH_WATER) {
      this.counters.dropped++;
      return 'dropped';
    }
    const out = gather(frame.segments, frame.length, Buffer.allocUnsafe(frame.length));
    this.socket.send(out, this.options.remotePort, this.remoteHost);
    this.counters.sentFrames++;
    this.counters.sentBytes += frame.length;
    return 'sent';
  }

  rxReady(): void {}

  metrics(): Readonly<Record<string, number>> {
    return flatten('dgram', this.counters);
  }

  async close(): Promise<void> {
    this.endpoint = undefined;
    await new Promise<void>((resolve) => this.socket.close(() => resolve()));
  }
}

function sendQueueSize(socket: dgram.Socket): number {
  try {
    return socket.getSendQueueSize();
  } catch {
    return 0; // not bound yet: nothing queued
  }
}
