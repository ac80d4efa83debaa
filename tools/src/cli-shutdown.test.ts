import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { createLogger } from './cli-logger.js';
import { Shutdown, type SignalSource } from './cli-shutdown.js';

function fakeProcess() {
  const emitter = new EventEmitter();
  const exits: number[] = [];
  const source: SignalSource = {
    on: (signal, listener) => emitter.on(signal, listener),
    off: (signal, listener) => emitter.off(signal, listener),
    exit: (code: number) => {
      exits.push(code);
    },
  };
  return { emitter, exits, source };
}

const quiet = createLogger({ level: 'silent', destination: { write: () => undefined } });

describe('shutdown', () => {
  it('runs cleanups newest first on the first signal', async () => {
    const order: string[] = [];
    const shutdown = new Shutdown(quiet);
    shutdown.add('socket', () => void order.push('socket'));
    shutdown.add('device', async () => {
      order.push('device');
    });
    const { emitter, source } = fakeProcess();
    shutdown.install(source);
    emitter.emit('SIGTERM', 'SIGTERM');
    expect(await shutdown.whenStopRequested()).toBe('SIGTERM');
    await shutdown.run();
    expect(order).toEqual(['device', 'socket']);
  });

  it('exits at once with 128+signal on a second signal', async () => {
    const shutdown = new Shutdown(quiet);
    let release!: () => void;
    shutdown.add('slow', () => new Promise<void>((resolve) => (release = resolve)));
    const { emitter, exits, source } = fakeProcess();
    shutdown.install(source);
    emitter.emit('SIGINT', 'SIGINT');
    emitter.emit('SIGINT', 'SIGINT');
    expect(exits).toEqual([130]);
    release();
    await shutdown.run();
  });

  it('keeps running the other cleanups when one fails', async () => {
    const order: string[] = [];
    const shutdown = new Shutdown(quiet);
    shutdown.add('a', () => void order.push('a'));
    shutdown.add('b', () => {
      throw new Error('boom');
    });
    await shutdown.run();
    expect(order).toEqual(['a']);
  });

  it('forgets a cleanup that was removed', async () => {
    const order: string[] = [];
    const shutdown = new Shutdown(quiet);
    const remove = shutdown.add('a', () => void order.push('a'));
    remove();
    await shutdown.run();
    expect(order).toEqual([]);
  });
});
