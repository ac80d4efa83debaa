import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  createOsEntropySource,
  EntropySourceError,
  FileEntropySource,
  SeededEntropySource,
} from './rng-host.js';

let directory: string;

beforeEach(async () => {
  directory = await mkdtemp(join(tmpdir(), 'xvio-rng-'));
});

afterEach(async () => {
  await rm(directory, { recursive: true, force: true });
});

/** Resolves when the source has at least `bytes` ready (or failed). */
async function waitFor(source: FileEntropySource, bytes: number): Promise<void> {
  while (source.available() < bytes && !source.error) {
    await new Promise<void>((resolve) => source.whenAvailable(resolve));
  }
}

describe('createOsEntropySource', () => {
  it('is always available and fills the whole target', () => {
    const source = createOsEntropySource();
    expect(source.available()).toBe(Number.POSITIVE_INFINITY);
    const target = new Uint8Array(4096);
    source.read(target);
    // 4096 random bytes are all zero with probability 2^-32768.
    expect(target.some((b) => b !== 0)).toBe(true);
  });
});

describe('createOsEntropySource pool', () => {
  it('serves small reads from a pool without repeating bytes across refills', () => {
    const source = createOsEntropySource();
    const seen = new Set<string>();
    // 2000 x 100 bytes crosses the 64 KiB pool three times.
    for (let i = 0; i < 2000; i++) {
      const target = new Uint8Array(100);
      source.read(target);
      seen.add(Buffer.from(target).toString('hex'));
    }
    expect(seen.size).toBe(2000);
  });
});

describe('FileEntropySource', () => {
  it('reads a file in order through a bounded read-ahead buffer', async () => {
    const content = Uint8Array.from({ length: 10_000 }, (_, i) => (i * 31) & 0xff);
    const path = join(directory, 'entropy');
    await writeFile(path, content);
    const source = new FileEntropySource({ path, bufferSize: 1024 });
    await source.ready();
    const got = new Uint8Array(content.length);
    let at = 0;
    while (at < content.length) {
      await waitFor(source, 1);
      expect(source.available()).toBeLessThanOrEqual(1536);
      const n = Math.min(source.available(), 700, content.length - at);
      source.read(got.subarray(at, at + n));
      at += n;
    }
    expect(got).toEqual(content);
    await waitFor(source, 1);
    expect(source.error?.code).toBe('source-exhausted');
    await source.close();
  });

  it('refuses to read more than is available', async () => {
    const path = join(directory, 'small');
    await writeFile(path, Uint8Array.of(1, 2, 3));
    const source = new FileEntropySource({ path });
    await waitFor(source, 3);
    let caught: unknown;
    try {
      source.read(new Uint8Array(4));
    } catch (error) {
      caught = error;
    }
    expect(EntropySourceError.isInstance(caught) && caught.code).toBe('source-underrun');
    await source.close();
  });

  it('reports a path that cannot be opened with the system error as cause', async () => {
    const source = new FileEntropySource({ path: join(directory, 'missing') });
    const error = await source.ready().then(
      () => undefined,
      (reason: unknown) => reason,
    );
    expect(EntropySourceError.isInstance(error)).toBe(true);
    expect((error as EntropySourceError).code).toBe('source-failed');
    expect(((error as Error).cause as NodeJS.ErrnoException).code).toBe('ENOENT');
    expect(source.available()).toBe(0);
    await source.close();
  });

  it('reads a character device (/dev/urandom) without blocking the event loop', async () => {
    const source = new FileEntropySource({ path: '/dev/urandom', bufferSize: 4096 });
    await waitFor(source, 4096);
    const target = new Uint8Array(4096);
    source.read(target);
    expect(target.some((b) => b !== 0)).toBe(true);
    await source.close();
  });
});

describe('SeededEntropySource', () => {
  it('is deterministic per seed and differs between seeds', () => {
    const read = (seed: number) => {
      const bytes = new Uint8Array(64);
      new SeededEntropySource({ seed }).read(bytes);
      return bytes;
    };
    expect(read(1)).toEqual(read(1));
    expect(read(1)).not.toEqual(read(2));
    expect(read(0).some((b) => b !== 0)).toBe(true);
  });

  it('gives the same stream however the reads are split', () => {
    const whole = new Uint8Array(100);
    new SeededEntropySource({ seed: 5 }).read(whole);
    const source = new SeededEntropySource({ seed: 5 });
    const parts = new Uint8Array(100);
    for (const [start, end] of [
      [0, 3],
      [3, 50],
      [50, 51],
      [51, 100],
    ] as const)
      source.read(parts.subarray(start, end));
    expect(parts).toEqual(whole);
  });

  it('runs dry at its budget and wakes waiters on refill', async () => {
    const source = new SeededEntropySource({ seed: 5, budget: 4 });
    source.read(new Uint8Array(4));
    expect(source.available()).toBe(0);
    let woken = 0;
    source.whenAvailable(() => woken++);
    const cancel = source.whenAvailable(() => woken++);
    cancel();
    source.refill(10);
    expect(woken).toBe(1);
    expect(source.available()).toBe(10);
  });
});
