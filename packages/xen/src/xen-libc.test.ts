import { execFileSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { libc } from './xen-libc.js';
import { mapScattered, SimMemoryFile } from './xen-sim-memory.js';

it('waits for a readable fd on a pool thread while the event loop keeps running', async () => {
  const directory = mkdtempSync(join(tmpdir(), 'xvio-poll-'));
  const fifo = join(directory, 'fifo');
  execFileSync('mkfifo', [fifo]);
  const fd = openSync(fifo, constants.O_RDWR | constants.O_NONBLOCK);
  try {
    expect(await libc().pollReadable(fd, 20)).toBe(false);
    let ticked = false;
    const waiting = libc().pollReadable(fd, 5000);
    setTimeout(() => {
      ticked = true;
      writeSync(fd, 'x');
    }, 20);
    expect(await waiting).toBe(true);
    expect(ticked).toBe(true);
  } finally {
    closeSync(fd);
    rmSync(directory, { recursive: true, force: true });
  }
});

it('maps pages of two memory files into one contiguous view that shares their memory', () => {
  const first = new SimMemoryFile('a', 4);
  const second = new SimMemoryFile('b', 4);
  first.bytes[2 * 4096] = 1;
  second.bytes[0] = 2;
  first.bytes[3 * 4096] = 3;
  const mapping = mapScattered(
    [
      { file: first, frame: 2 },
      { file: second, frame: 0 },
      { file: first, frame: 3 },
    ],
    true,
  );
  expect([mapping.bytes[0], mapping.bytes[4096], mapping.bytes[8192]]).toEqual([1, 2, 3]);
  mapping.bytes[4097] = 9;
  expect(second.bytes[1]).toBe(9);
  expect(first.liveMappings + second.liveMappings).toBe(2);
  mapping.unmap();
  expect(first.liveMappings + second.liveMappings).toBe(0);
  first.close();
  second.close();
});
