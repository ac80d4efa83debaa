import { existsSync } from 'node:fs';
import { connect, type Socket } from 'node:net';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** QEMU's answer to one command: `return` on success, `error` otherwise. */
export interface QmpReply {
  return?: unknown;
  error?: { class: string; desc: string };
}

/**
 * A QEMU Machine Protocol client on a unix socket (`-qmp unix:PATH,server=on,wait=off`):
 * one command at a time, events ignored. Enough for the tests that plug a device in after
 * QEMU has started.
 */
export class QmpClient {
  private buffered = '';
  private readonly waiting: ((reply: QmpReply) => void)[] = [];

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffered += chunk;
      let newline = this.buffered.indexOf('\n');
      while (newline >= 0) {
        const line = this.buffered.slice(0, newline).trim();
        this.buffered = this.buffered.slice(newline + 1);
        newline = this.buffered.indexOf('\n');
        if (line.length === 0) continue;
        const message = JSON.parse(line) as QmpReply & { QMP?: unknown; event?: string };
        if ('return' in message || 'error' in message) this.waiting.shift()?.(message);
      }
    });
  }

  /** Connects once QEMU has created the socket, and leaves capabilities negotiation mode. */
  static async open(path: string, timeoutMs = 30_000): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    while (!existsSync(path)) {
      if (Date.now() > deadline) throw new Error(`QMP socket ${path} did not appear`);
      await sleep(20);
    }
    const socket = connect(path);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const client = new QmpClient(socket);
    await client.execute('qmp_capabilities');
    return client;
  }

  /** Runs one command; throws when QEMU answers with an error. */
  async execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    const reply = await new Promise<QmpReply>((resolve) => {
      this.waiting.push(resolve);
      this.socket.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}) })}\n`);
    });
    if (reply.error) throw new Error(`QMP ${command}: ${reply.error.class}: ${reply.error.desc}`);
    return reply.return;
  }

  /**
   * Waits until a socket chardev is connected to its peer. QEMU names a socket chardev that
   * has no peer `disconnected:<address>` in `query-chardev`.
   */
  async waitForChardev(label: string, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const chardevs = (await this.execute('query-chardev')) as { label: string; filename: string }[];
      const chardev = chardevs.find((each) => each.label === label);
      if (chardev && !chardev.filename.startsWith('disconnected:')) return;
      if (Date.now() > deadline) throw new Error(`chardev ${label} did not connect (${chardev?.filename})`);
      await sleep(50);
    }
  }

  close(): void {
    this.socket.destroy();
  }
}
