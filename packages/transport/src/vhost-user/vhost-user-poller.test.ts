import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { EFD_CLOEXEC, EFD_NONBLOCK, libc } from './vhost-user-libc.js';
import { pollerSettled, watchEventFd, watchReadable } from './vhost-user-poller.js';

function eventFd(): number {
  return libc().eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

function signal(fd: number): void {
  const one = new Uint8Array(8);
  one[0] = 1;
  libc().write(fd, one, 8);
}

const openFds = () => readdirSync('/proc/self/fd').length;

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
      await pollerSettled();
      // The pipe path closes the fd on the next loop turn.
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(openFds()).toBe(before);
    });
  }

  it('keeps the event loop running while it waits (no blocking, no polling)', async () => {
    const fd = eventFd();
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 1);
    const seen = new Promise<void>((resolve) => {
      const watch = watchReadable(fd, () => {
        watch.close();
        resolve();
      });
    });
    await new Promise((resolve) => setTimeout(resolve, 30));
    signal(fd);
    await seen;
    clearInterval(ticker);
    libc().close(fd);
    await pollerSettled();
    expect(ticks).toBeGreaterThan(5);
  });
});
