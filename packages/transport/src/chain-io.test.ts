import { createTestMemory } from '@xvio/grant-pool';
import { describe, expect, it } from 'vitest';
import { openChain } from './chain-io.js';
import { SplitQueue } from './split-queue.js';
import { MockSplitQueue } from './testing/mock-split-queue.js';

function chainOf(buffers: Parameters<MockSplitQueue['addChain']>[0]) {
  const memory = createTestMemory(1 << 20);
  const driver = new MockSplitQueue(memory, { size: 16, seed: 7 });
  const placed = driver.addChain(buffers);
  const chain = new SplitQueue(memory, driver.config).pop()!;
  return { memory, chain, placed };
}

describe('openChain', () => {
  it('reads readable bytes in order across descriptors', () => {
    const { memory, chain } = chainOf([
      { data: Uint8Array.of(1, 2) },
      { data: Uint8Array.of(3) },
      { data: Uint8Array.of(4, 5, 6) },
    ]);
    const io = openChain(memory, chain);
    expect(io.reader.remaining).toBe(6);
    expect(io.reader.readExact(3)).toEqual(Uint8Array.of(1, 2, 3));
    expect(io.reader.skip(1)).toBe(1);
    expect(io.reader.views(10).map((view) => Array.from(view))).toEqual([[5, 6]]);
    expect(io.reader.readExact(1)).toBeUndefined();
    expect(io.close()).toBe(0);
  });

  it('writes across writable descriptors and reports the bytes written', () => {
    const { memory, chain, placed } = chainOf([
      { data: Uint8Array.of(9) },
      { writable: true, length: 2 },
      { writable: true, length: 3 },
    ]);
    const rings = memory.liveMappings(); // the queue's own ring views
    const io = openChain(memory, chain);
    expect(memory.liveMappings()).toBe(rings + 3);
    expect(io.writer.write(Uint8Array.of(1, 2, 3, 4))).toBe(4);
    expect(io.writer.remaining).toBe(1);
    expect(io.writer.write(Uint8Array.of(5, 6))).toBe(1);
    expect(io.close()).toBe(5);
    expect(io.close()).toBe(5); // idempotent
    const [, a, b] = placed.buffers;
    expect(Array.from(memory.bytes.subarray(a!.offset, a!.offset + 2))).toEqual([1, 2]);
    expect(Array.from(memory.bytes.subarray(b!.offset, b!.offset + 3))).toEqual([3, 4, 5]);
    expect(memory.liveMappings()).toBe(rings);
  });

  it('maps nothing when a buffer is outside guest memory', () => {
    const memory = createTestMemory(1 << 20);
    const driver = new MockSplitQueue(memory, { size: 4 });
    driver.writeDescriptor(0, { address: 0x10n, length: 4, flags: 1, next: 1 });
    driver.writeDescriptor(1, { address: 1n << 32n, length: 4, flags: 2, next: 0 });
    driver.publish(0);
    const chain = new SplitQueue(memory, driver.config).pop()!;
    const rings = memory.liveMappings();
    expect(() => openChain(memory, chain)).toThrow('unmapped');
    expect(memory.liveMappings()).toBe(rings);
  });
});
