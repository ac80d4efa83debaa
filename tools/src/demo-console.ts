/** The part of dev-console's `MemoryConsoleHost` the demo uses (loaded through the registry). */
interface MemoryConsoleHostLike {
  takeOutput(): Uint8Array;
  input(bytes: Uint8Array): boolean;
}

/**
 * The host side of a demo guest's console: what the guest writes is drained on every refresh
 * (so nothing accumulates) and its last line kept for display; now and then dom0 types a
 * line back, which the guest's driver reads through its receive queue.
 */
export class DemoConsole {
  lastLine = '';
  private partial = '';
  private typed = 0;
  private readonly decoder = new TextDecoder();
  private readonly encoder = new TextEncoder();

  constructor(
    readonly guest: string,
    readonly host: MemoryConsoleHostLike,
  ) {}

  /** Makes a host from the console package's module, if it has the in-memory host. */
  static create(guest: string, module: Readonly<Record<string, unknown>>): DemoConsole | undefined {
    const Host = module.MemoryConsoleHost;
    if (typeof Host !== 'function') return undefined;
    return new DemoConsole(guest, new (Host as new () => MemoryConsoleHostLike)());
  }

  /** Drains the guest's output and keeps its last complete line. */
  drain(): void {
    const text = this.partial + this.decoder.decode(this.host.takeOutput(), { stream: true });
    const end = text.lastIndexOf('\n');
    if (end < 0) {
      this.partial = text.slice(-512);
      return;
    }
    const lines = text.slice(0, end).split('\n');
    this.lastLine = lines.at(-1) ?? this.lastLine;
    this.partial = text.slice(end + 1).slice(-512);
  }

  /** dom0 types a line into the guest's console. */
  type(): void {
    this.host.input(this.encoder.encode(`dom0 -> ${this.guest}: hello #${this.typed++}\n`));
  }
}
