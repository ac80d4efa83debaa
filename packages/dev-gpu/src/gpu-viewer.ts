import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { type WebSocket, WebSocketServer } from 'ws';
import type { GpuCursor, GpuFrame, GpuHost } from './gpu-host.js';
import { encodePng } from './gpu-png.js';
import {
  VIEWER_HEADER_SIZE,
  VIEWER_MESSAGE_CURSOR,
  VIEWER_MESSAGE_CURSOR_MOVE,
  VIEWER_MESSAGE_MODE,
  VIEWER_MESSAGE_RECT,
  viewerPage,
} from './gpu-viewer-page.js';
import type { GpuRect } from './gpu-wire.js';

export interface GpuViewerOptions {
  /** Address to listen on. Loopback only unless you mean it. Default 127.0.0.1. */
  host?: string;
  /** Port; 0 picks a free one. Default 0. */
  port?: number;
  /**
   * A client with more than this many bytes not yet sent is skipped; its damage is merged
   * and sent once it drains, so a slow browser costs memory bounded by one frame per
   * scanout. Default 8 MiB.
   */
  maxBufferedBytes?: number;
}

interface Client {
  socket: WebSocket;
  /** Damage not yet sent, merged into one bounding rectangle per scanout. */
  pending: Map<number, GpuRect>;
}

function union(a: GpuRect | undefined, b: GpuRect): GpuRect {
  if (!a) return { ...b };
  const x = Math.min(a.x, b.x);
  const y = Math.min(a.y, b.y);
  return {
    x,
    y,
    width: Math.max(a.x + a.width, b.x + b.width) - x,
    height: Math.max(a.y + a.height, b.y + b.height) - y,
  };
}

function message(
  kind: number,
  scanoutId: number,
  x: number,
  y: number,
  w: number,
  h: number,
  payload?: Uint8Array,
  last = false,
): Buffer {
  const out = Buffer.alloc(VIEWER_HEADER_SIZE + (payload?.length ?? 0));
  out.writeUInt8(kind, 0);
  out.writeUInt8(scanoutId, 1);
  out.writeUInt8(last ? 1 : 0, 2);
  out.writeUInt32LE(x, 4);
  out.writeUInt32LE(y, 8);
  out.writeUInt32LE(w, 12);
  out.writeUInt32LE(h, 16);
  if (payload) out.set(payload, VIEWER_HEADER_SIZE);
  return out;
}

/**
 * A gpu host that serves the scanouts to browsers: GET / is the page, /ws streams damage
 * rectangles (not whole frames), /snapshot/<scanout>.png is a PNG of a scanout now.
 */
export class GpuViewer implements GpuHost {
  private readonly server: Server;
  private readonly sockets: WebSocketServer;
  private readonly clients = new Set<Client>();
  private readonly frames = new Map<number, GpuFrame>();
  private readonly cursors = new Map<number, { cursor: GpuCursor | undefined; x: number; y: number }>();
  private readonly maxBuffered: number;
  private sendScheduled = false;
  /** Damage rectangles sent, all clients together. */
  rectsSent = 0;
  /** Rectangles merged into a pending one because a client was behind. */
  rectsMerged = 0;

  private constructor(
    options: GpuViewerOptions,
    readonly url: string,
    server: Server,
  ) {
    this.server = server;
    this.maxBuffered = options.maxBufferedBytes ?? 8 * 1024 * 1024;
    this.sockets = new WebSocketServer({ noServer: true, maxPayload: 1024 });
  }

  /** Starts the HTTP server and returns the viewer (a `GpuHost` to give the device). */
  static async start(options: GpuViewerOptions = {}): Promise<GpuViewer> {
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => resolve());
    });
    const address = server.address() as AddressInfo;
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    const viewer = new GpuViewer(options, `http://${host}:${address.port}/`, server);
    server.on('request', (request, response) => {
      const url = request.url ?? '/';
      if (url === '/' || url === '/index.html') {
        response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        response.end(viewerPage);
        return;
      }
      const snapshot = /^\/snapshot\/(\d+)\.png$/.exec(url);
      if (snapshot) {
        const png = viewer.snapshotPng(Number(snapshot[1]));
        if (!png) {
          response.writeHead(404, { 'content-type': 'text/plain' });
          response.end('scanout is disabled\n');
          return;
        }
        response.writeHead(200, { 'content-type': 'image/png' });
        response.end(png);
        return;
      }
      response.writeHead(404, { 'content-type': 'text/plain' });
      response.end('not found\n');
    });
    server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
      if (request.url !== '/ws') {
        socket.destroy();
        return;
      }
      viewer.sockets.handleUpgrade(request, socket, head, (ws) => viewer.accept(ws));
    });
    return viewer;
  }

  private accept(socket: WebSocket): void {
    const client: Client = { socket, pending: new Map() };
    this.clients.add(client);
    socket.on('close', () => this.clients.delete(client));
    socket.on('error', () => this.clients.delete(client));
    // A new page gets every scanout whole, then the cursor.
    for (const [id, frame] of this.frames) {
      socket.send(message(VIEWER_MESSAGE_MODE, id, frame.width, frame.height, 0, 0));
      client.pending.set(id, { x: 0, y: 0, width: frame.width, height: frame.height });
    }
    for (const [id, state] of this.cursors) this.sendCursor(client, id, state.cursor, state.x, state.y);
    this.scheduleSend();
  }

  scanoutChanged(scanoutId: number, frame: GpuFrame | undefined): void {
    if (!frame) {
      this.frames.delete(scanoutId);
      for (const client of this.clients) {
        client.pending.delete(scanoutId);
        client.socket.send(message(VIEWER_MESSAGE_MODE, scanoutId, 0, 0, 0, 0));
      }
      return;
    }
    this.frames.set(scanoutId, frame);
    for (const client of this.clients) {
      client.socket.send(message(VIEWER_MESSAGE_MODE, scanoutId, frame.width, frame.height, 0, 0));
      client.pending.set(scanoutId, { x: 0, y: 0, width: frame.width, height: frame.height });
    }
    this.scheduleSend();
  }

  flush(scanoutId: number, frame: GpuFrame, damage: GpuRect): void {
    this.frames.set(scanoutId, frame);
    for (const client of this.clients) {
      const before = client.pending.get(scanoutId);
      if (before) this.rectsMerged++;
      client.pending.set(scanoutId, union(before, damage));
    }
    this.scheduleSend();
  }

  cursorChanged(scanoutId: number, cursor: GpuCursor | undefined, x: number, y: number): void {
    this.cursors.set(scanoutId, { cursor, x, y });
    for (const client of this.clients) this.sendCursor(client, scanoutId, cursor, x, y);
  }

  cursorMoved(scanoutId: number, x: number, y: number): void {
    const state = this.cursors.get(scanoutId);
    if (state) {
      state.x = x;
      state.y = y;
    }
    for (const client of this.clients)
      client.socket.send(message(VIEWER_MESSAGE_CURSOR_MOVE, scanoutId, x, y, 0, 0));
  }

  private sendCursor(
    client: Client,
    scanoutId: number,
    cursor: GpuCursor | undefined,
    x: number,
    y: number,
  ): void {
    if (!cursor) {
      client.socket.send(message(VIEWER_MESSAGE_CURSOR, scanoutId, 0, 0, 0, 0));
      return;
    }
    client.socket.send(
      message(VIEWER_MESSAGE_CURSOR, scanoutId, cursor.hotX, cursor.hotY, 64, 64, cursor.rgba),
    );
    client.socket.send(message(VIEWER_MESSAGE_CURSOR_MOVE, scanoutId, x, y, 0, 0));
  }

  /** Sends pending damage once per event-loop turn, to clients that are not behind. */
  private scheduleSend(): void {
    if (this.sendScheduled) return;
    this.sendScheduled = true;
    setImmediate(() => {
      this.sendScheduled = false;
      let behind = false;
      for (const client of this.clients) {
        if (client.pending.size === 0) continue;
        if (client.socket.bufferedAmount > this.maxBuffered) {
          behind = true;
          continue;
        }
        for (const [id, rect] of client.pending) {
          const frame = this.frames.get(id);
          if (!frame || rect.width === 0 || rect.height === 0) continue;
          client.socket.send(
            message(
              VIEWER_MESSAGE_RECT,
              id,
              rect.x,
              rect.y,
              rect.width,
              rect.height,
              frame.readRgba(rect),
              true,
            ),
          );
          this.rectsSent++;
        }
        client.pending.clear();
      }
      if (behind) setTimeout(() => this.scheduleSend(), 5);
    });
  }

  /** Browsers connected now. */
  get clientCount(): number {
    return this.clients.size;
  }

  /** A PNG of what a scanout shows now. */
  snapshotPng(scanoutId: number): Uint8Array | undefined {
    const frame = this.frames.get(scanoutId);
    if (!frame) return undefined;
    return encodePng(
      frame.width,
      frame.height,
      frame.readRgba({ x: 0, y: 0, width: frame.width, height: frame.height }),
    );
  }

  async close(): Promise<void> {
    for (const client of this.clients) client.socket.terminate();
    this.clients.clear();
    this.sockets.close();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
