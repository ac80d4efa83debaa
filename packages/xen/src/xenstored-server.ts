// The simulated xenstored on a unix socket, so that any libxenstore client (Debian's
// xenstore-utils, xl, a QEMU) can use it through XENSTORED_PATH=<socket>.
import { lstatSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { XenError } from './xen-errors.js';
import { SimXenstored, type XenstoredOptions } from './xenstored.js';

export interface XenstoredServerOptions extends XenstoredOptions {
  readonly socketPath: string;
  /** Serve this store instead of a new one (e.g. a simulator's). */
  readonly xenstored?: SimXenstored;
  /** Domain id that socket clients act as (default 0, privileged, as xenstored treats its socket). */
  readonly domid?: number;
}

export interface XenstoredServer {
  readonly socketPath: string;
  readonly xenstored: SimXenstored;
  /** Connections currently open. */
  connections(): number;
  /** Stops listening, closes every connection and removes the socket file. */
  close(): Promise<void>;
}

/** Starts the simulated xenstored listening on `socketPath` (a stale socket file there is replaced). */
export async function startXenstoredServer(options: XenstoredServerOptions): Promise<XenstoredServer> {
  const xenstored = options.xenstored ?? new SimXenstored(options);
  if (!options.xenstored) xenstored.introduceDomain(0, 'Domain-0');
  const domid = options.domid ?? 0;
  const sockets = new Set<net.Socket>();
  try {
    if (lstatSync(options.socketPath).isSocket()) unlinkSync(options.socketPath);
    else
      throw new XenError('EEXIST', 'xenstore', 'listen', `${options.socketPath} exists and is not a socket`);
  } catch (error) {
    if (XenError.isInstance(error)) throw error;
    // ENOENT: nothing to replace.
  }
  const server = net.createServer((socket) => {
    sockets.add(socket);
    const connection = xenstored.openConnection(
      domid,
      (bytes) => {
        if (!socket.destroyed) socket.write(bytes);
      },
      () => socket.destroy(),
    );
    socket.on('data', (data: Buffer) => connection.receive(data));
    socket.on('error', () => connection.close());
    socket.on('close', () => {
      sockets.delete(socket);
      connection.close();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(new XenError('EACCES', 'xenstore', 'listen', options.socketPath, { cause: error })),
    );
    server.listen(options.socketPath, () => resolve());
  });
  options.log?.(`xenstored listening on ${options.socketPath}`);
  return {
    socketPath: options.socketPath,
    xenstored,
    connections: () => sockets.size,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      try {
        unlinkSync(options.socketPath);
      } catch {
        // already gone
      }
    },
  };
}
