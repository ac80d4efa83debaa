import { createXenSimulator, type XenSimulator } from '@xvio/xen';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ForeignMappingMemory } from './foreign-mapping-memory.js';
import { GrantCopyMemory } from './grant-copy-memory.js';
import { GrantMapMemory } from './grant-map-memory.js';
import { createGuestMemory, parseGuestMemoryConfig } from './memory-config.js';
import { PersistentPoolMemory } from './persistent-pool-memory.js';

describe('createGuestMemory', () => {
  let sim: XenSimulator;

  beforeEach(() => {
    sim = createXenSimulator();
    sim.createDomain({ domid: 3, memoryBytes: 1024 * 1024 });
  });

  afterEach(async () => {
    await sim.close();
  });

  it('picks the strategy the configuration names, each with its own counters', () => {
    const services = sim.services(0);
    const memories = [
      createGuestMemory({ strategy: 'foreign', domid: 3 }, services),
      createGuestMemory({ strategy: 'grant-map', domid: 3 }, services),
      createGuestMemory({ strategy: 'grant-copy', domid: 3, options: { batchSegments: 16 } }, services),
      createGuestMemory({ strategy: 'persistent-pool', domid: 3, options: { poolRefs: [8, 9] } }, services),
    ];
    expect(memories.map((memory) => memory.kind)).toEqual([
      'foreign',
      'grant-map',
      'grant-copy',
      'persistent-pool',
    ]);
    expect(memories[0]).toBeInstanceOf(ForeignMappingMemory);
    expect(memories[1]).toBeInstanceOf(GrantMapMemory);
    expect(memories[2]).toBeInstanceOf(GrantCopyMemory);
    expect(memories[3]).toBeInstanceOf(PersistentPoolMemory);
    memories[0]?.read(0x1000n, new Uint8Array(8));
    expect(memories[0]?.counters.cacheMisses).toBe(1);
    expect(memories[1]?.counters.cacheMisses).toBe(0);
  });

  it('fills in defaults', () => {
    expect(parseGuestMemoryConfig({ strategy: 'grant-copy', domid: 1 })).toEqual({
      strategy: 'grant-copy',
      domid: 1,
      options: { batchSegments: 64, bounceCacheBytes: 8 * 1024 * 1024, maxRequestPages: 4096 },
    });
    expect(parseGuestMemoryConfig({ strategy: 'persistent-pool', domid: 1 }).options).toEqual({
      maxPersistentPages: 1056,
      maxRequestPages: 4096,
    });
  });

  it('rejects what it does not know, naming the field', () => {
    const services = sim.services(0);
    expect(() =>
      createGuestMemory({ strategy: 'grant-copy', domid: 1, options: { batchSegments: 65 } }, services),
    ).toThrow(/batchSegments/);
    expect(() => parseGuestMemoryConfig({ strategy: 'dma', domid: 1 })).toThrow(/strategy/);
    expect(() => parseGuestMemoryConfig({ strategy: 'grant-map', domid: 0x7ff0 })).toThrow(/domid/);
    expect(() =>
      parseGuestMemoryConfig({ strategy: 'grant-map', domid: 1, options: { poolRefs: [] } }),
    ).toThrow(/poolRefs/);
    expect(() =>
      parseGuestMemoryConfig({ strategy: 'foreign', domid: 1, options: { guestMemoryBytes: 100 } }),
    ).toThrow(/guestMemoryBytes/);
  });
});
