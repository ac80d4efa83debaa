import { afterEach, describe, expect, it } from 'vitest';
import { ForeignMappingMemory } from './foreign-mapping-memory.js';
import { PAGE_SIZE } from './grant-address.js';
import { GuestMemoryError } from './memory-errors.js';
import { createSimFixture } from './memory-strategy-fixtures.js';

type Fixture = ReturnType<typeof createSimFixture>;

describe('foreign mapping', () => {
  let fixture: Fixture | undefined;

  afterEach(async () => {
    await fixture?.close();
    fixture = undefined;
  });

  function setup(options: { chunkPages?: number; maxChunks?: number; guestMemoryBytes?: number } = {}) {
    fixture = createSimFixture('foreign', { chunkPages: 4, maxChunks: 3, ...options });
    return { fixture, memory: fixture.memory as ForeignMappingMemory };
  }

  const chunk = 4 * PAGE_SIZE;

  it('maps each chunk once and serves later requests from the cache', () => {
    const { fixture, memory } = setup();
    const address = BigInt(2 * chunk + 100);
    for (let i = 0; i < 10; i++) memory.map([{ address, length: 2 * PAGE_SIZE, access: 'write' }]).release();
    expect(memory.counters.cacheMisses).toBe(1);
    expect(memory.counters.cacheHits).toBe(9);
    expect(memory.counters.maps).toBe(4);
    expect(memory.cachedChunks()).toBe(1);
    expect(fixture.hostMappings()).toBe(1);
  });

  it('keeps at most maxChunks mapped, least recently used out first', () => {
    const { fixture, memory } = setup();
    for (let index = 0; index < 8; index++) {
      memory.read(BigInt(index * chunk), new Uint8Array(16));
      expect(memory.cachedChunks()).toBeLessThanOrEqual(3);
    }
    expect(memory.counters.evictions).toBe(5);
    expect(fixture.hostMappings()).toBe(3);
    const misses = memory.counters.cacheMisses;
    memory.read(BigInt(7 * chunk), new Uint8Array(16));
    expect(memory.counters.cacheMisses).toBe(misses);
    memory.read(0n, new Uint8Array(16));
    expect(memory.counters.cacheMisses).toBe(misses + 1);
  });

  it('keeps chunks a request uses past the bound until it is released', () => {
    const { fixture, memory } = setup();
    fixture.guest.memory.fill(3, 0, 5 * chunk);
    // One buffer across five chunks: all stay mapped while the request lives.
    const mapped = memory.map([{ address: 0n, length: 5 * chunk, access: 'read' }]);
    expect(memory.cachedChunks()).toBe(5);
    expect(mapped.segments[0]).toHaveLength(5);
    expect(mapped.segments[0]?.every((segment) => segment.every((value) => value === 3))).toBe(true);
    mapped.release();
    expect(memory.cachedChunks()).toBe(3);
    expect(fixture.hostMappings()).toBe(3);
  });

  it('maps per request where a chunk runs past guest RAM, and unmaps at release', () => {
    // 4 pages per chunk, RAM of 4 MiB + 2 pages: the last chunk has only two pages of RAM.
    const { fixture, memory } = setup({ guestMemoryBytes: 4 * 1024 * 1024 + 2 * PAGE_SIZE });
    const address = BigInt(4 * 1024 * 1024 + 10);
    fixture.guest.memory.fill(5, 4 * 1024 * 1024, 4 * 1024 * 1024 + 2 * PAGE_SIZE);
    const mapped = memory.map([{ address, length: PAGE_SIZE, access: 'read' }]);
    expect(memory.counters.fallbacks).toBe(1);
    expect(mapped.segments[0]?.[0]?.every((value) => value === 5)).toBe(true);
    expect(fixture.hostMappings()).toBe(1);
    mapped.release();
    expect(fixture.hostMappings()).toBe(0);
    expect(() => memory.read(address + BigInt(2 * PAGE_SIZE), new Uint8Array(1))).toThrow(GuestMemoryError);
  });

  it('faults beyond a known RAM size without asking the hypervisor', async () => {
    fixture = createSimFixture('foreign');
    const memory = new ForeignMappingMemory({
      foreignMemory: fixture.backend.foreignMemory,
      domid: fixture.guest.domid,
      guestMemoryBytes: 8 * 1024 * 1024,
    });
    expect(memory.check(BigInt(8 * 1024 * 1024 - 4), 8, 'read')).toBe('unmapped');
    expect(memory.check(BigInt(8 * 1024 * 1024), 0, 'read')).toBeUndefined();
    expect(memory.check(BigInt(8 * 1024 * 1024 + 1), 0, 'read')).toBe('unmapped');
    expect(memory.counters.calls).toBe(0);
  });

  it('maps a ring view contiguously across chunk boundaries', () => {
    const { fixture, memory } = setup();
    const view = memory.view(BigInt(chunk - 8), 16, 'write');
    view.fill(0xab);
    expect(fixture.guest.memory.subarray(chunk - 8, chunk + 8).every((value) => value === 0xab)).toBe(true);
    expect(
      () =>
        new ForeignMappingMemory({ foreignMemory: fixture.backend.foreignMemory, domid: 1, chunkPages: 0 }),
    ).toThrow(RangeError);
  });
});
