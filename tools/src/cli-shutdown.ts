import type { Logger } from 'pino';

type Cleanup = () => void | Promise<void>;

/** What the shutdown needs from the process (the real one, or a stand-in in tests). */
export interface SignalSource {
  on(signal: 'SIGINT' | 'SIGTERM', listener: (signal: NodeJS.Signals) => void): unknown;
  off(signal: 'SIGINT' | 'SIGTERM', listener: (signal: NodeJS.Signals) => void): unknown;
  exit(code: number): never | void;
}

/**
 * Graceful shutdown: on the first SIGINT/SIGTERM every registered cleanup runs, newest first
 * (devices reset before the sockets and services they sit on are closed); a second signal
 * while that runs exits at once with 128 + signal number, as a shell would.
 */
export class Shutdown {
  private readonly cleanups: { name: string; run: Cleanup }[] = [];
  private running: Promise<void> | undefined;
  private readonly stopped: Promise<NodeJS.Signals | 'requested'>;
  private resolveStopped: (reason: NodeJS.Signals | 'requested') => void = () => undefined;

  constructor(private readonly log: Logger) {
    this.stopped = new Promise((resolve) => {
      this.resolveStopped = resolve;
    });
  }

  /** Registers a cleanup; returns a function that unregisters it (for resources closed early). */
  add(name: string, run: Cleanup): () => void {
    const item = { name, run };
    this.cleanups.push(item);
    return () => {
      const index = this.cleanups.indexOf(item);
      if (index >= 0) this.cleanups.splice(index, 1);
    };
  }

  get stopping(): boolean {
    return this.running !== undefined;
  }

  /** Resolves when a signal (or `request`) asked the command to stop. */
  whenStopRequested(): Promise<NodeJS.Signals | 'requested'> {
    return this.stopped;
  }

  request(): void {
    this.resolveStopped('requested');
  }

  install(source: SignalSource = process as unknown as SignalSource): () => void {
    const listener = (signal: NodeJS.Signals) => {
      if (this.running) {
        this.log.warn({ signal }, 'second signal: exiting at once');
        source.exit(128 + (signal === 'SIGINT' ? 2 : 15));
        return;
      }
      this.log.info({ signal }, 'shutting down (send the signal again to exit at once)');
      this.resolveStopped(signal);
      void this.run();
    };
    source.on('SIGINT', listener);
    source.on('SIGTERM', listener);
    return () => {
      source.off('SIGINT', listener);
      source.off('SIGTERM', listener);
    };
  }

  /** Runs every cleanup once, newest first; a failing cleanup is logged and the rest still run. */
  run(): Promise<void> {
    this.running ??= (async () => {
      while (this.cleanups.length > 0) {
        const item = this.cleanups.pop()!;
        try {
          await item.run();
          this.log.debug({ cleanup: item.name }, 'cleaned up');
        } catch (error) {
          this.log.error({ cleanup: item.name, err: error }, 'cleanup failed');
        }
      }
    })();
    return this.running;
  }
}
