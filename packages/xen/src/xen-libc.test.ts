import { expect, it } from 'vitest';
import { mapScattered, SimMemoryFile } from './xen-sim-memory.js';

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
