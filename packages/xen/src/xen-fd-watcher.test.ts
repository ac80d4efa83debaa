import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { pollerSettled, watchEventFd, watchFdStream, watchReadable } from './xen-fd-watcher.js';
import { EFD_CLOEXEC, EFD_NONBLOCK, libc, O_CLOEXEC } from './xen-libc.js';

function eventFd(): number {
  return libc().eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

function signal(fd: number): void {
  const one = new Uint8Array(8);
  one[0] = 1;
  libc().write(fd, one, 8);
}

function pipe(): { read: number; write: number } {
  const fds = new Int32Array(2);
  expect(libc().pipe2(fds, O_CLOEXEC)).toBe(0);
  return { read: fds[0] as number, write: fds[1] as number };
}

function send(fd: number, bytes: number[]): void {
  expect(libc().write(fd, Uint8Array.from(bytes), bytes.length)).toBe(bytes.length);
}

const openFds = () => readdirSync('/proc/self/fd').length;
/** The loop path closes its fd when libuv closes the handle, on a later loop turn. */
const settle = async () => {
  await pollerSettled();
  await new Promise((resolve) => setTimeout(resolve, 20));
};

/** Resolves on the next call of the returned callback. */
function nextCall<T>(): { callback: (value: T) => void; next: () => Promise<T> } {
  let pending: ((value: T) => void) | undefined;
  const queue: T[] = [];
  return {
    callback: (value) => {
      if (pending) {
        const resolve = pending;
        pending = undefined;
        resolve(value);
      } else queue.push(value);
    },
    next: () => {
      if (queue.length > 0) return Promise.resolve(queue.shift() as T);
      return new Promise((resolve) => {
        pending = resolve;
      });
    },
  };
}

describe('eventfd watching', () => {
  for (const via of ['auto', 'poller'] as const) {
    it(`delivers each signal once and closes the fd it owns (${via})`, async () => {
      const before = openFds();
      const fd = eventFd();
      let signals = 0;
      let wake: () => void = () => {};
      const watch = watchEventFd(
        fd,
        () => {
          signals++;
          wake();
        },
        undefined,
        via,
      );
      expect(watch.via).toBe(via === 'poller' ? 'poller' : 'loop');
      for (let round = 1; round <= 3; round++) {
        const woken = new Promise<void>((resolve) => {
          wake = resolve;
        });
        signal(fd);
        signal(fd); // two writes before the wake-up: one counter, one signal
        await woken;
        expect(signals).toBe(round);
      }
      watch.close();
      await settle();
      expect(openFds()).toBe(before);
    });
  }
});

describe('stream watching', () => {
  for (const via of ['loop', 'poller'] as const) {
    it(`hands over what each read returned, in order, then reports the end (${via})`, async () => {
      const before = openFds();
      const ends = pipe();
      const chunks = nextCall<number[]>();
      const ended = nextCall<void>();
      const watch = watchFdStream(ends.read, (bytes) => chunks.callback([...bytes]), {
        via,
        onEnd: () => ended.callback(),
      });
      expect(watch.via).toBe(via);
      send(ends.write, [1, 2, 3, 4]);
      expect(await chunks.next()).toEqual([1, 2, 3, 4]);
      send(ends.write, [5]);
      expect(await chunks.next()).toEqual([5]);
      libc().close(ends.write);
      await ended.next();
      watch.close();
      await settle();
      expect(openFds()).toBe(before);
    });
  }

  for (const via of ['loop', 'poller'] as const) {
    it(`close stops the reads and closes the read end it owns (${via})`, async () => {
      const ends = pipe();
      const seen: number[] = [];
      const watch = watchFdStream(ends.read, (bytes) => seen.push(...bytes), { via });
      watch.close();
      await settle();
      // EPIPE: nobody holds the read end any more.
      expect(libc().write(ends.write, Uint8Array.of(9), 1)).toBe(-1);
      expect(seen).toEqual([]);
      libc().close(ends.write);
    });
  }
});

describe('readiness watching', () => {
  it('keeps the event loop running while it waits, and leaves the bytes to their owner', async () => {
    const ends = pipe();
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 1);
    const seen = new Promise<void>((resolve) => {
      const watch = watchReadable(ends.read, () => {
        watch.close();
        resolve();
      });
    });
    await new Promise((resolve) => setTimeout(resolve, 30));
    send(ends.write, [7]);
    await seen;
    clearInterval(ticker);
    expect(ticks).toBeGreaterThan(5);
    const byte = new Uint8Array(1);
    expect(libc().read(ends.read, byte, 1)).toBe(1);
    expect(byte[0]).toBe(7);
    libc().close(ends.read);
    libc().close(ends.write);
    await pollerSettled();
  });

  it('runs the handlers of every fd that became ready', async () => {
    const first = pipe();
    const second = pipe();
    const ready = new Set<string>();
    const both = new Promise<void>((resolve) => {
      const watches = [
        watchReadable(first.read, () => {
          ready.add('first');
          watches[0]?.close();
          if (ready.size === 2) resolve();
        }),
        watchReadable(second.read, () => {
          ready.add('second');
          watches[1]?.close();
          if (ready.size === 2) resolve();
        }),
      ];
    });
    send(second.write, [1]);
    send(first.write, [1]);
    await both;
    for (const fd of [first.read, first.write, second.read, second.write]) libc().close(fd);
    await pollerSettled();
    expect([...ready].sort()).toEqual(['first', 'second']);
  });
});
