import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { GuestMemory } from './guest-memory.js';
import { GuestMemoryError } from './memory-errors.js';
import { createRegionsMemory, type MemoryRegion, regionSize } from './regions-memory.js';
import { createTestMemory } from './test-memory.js';

function region(
  guestAddress: bigint,
  size: number,
  userAddress: bigint,
  fill = 0,
): MemoryRegion & { unmapped: number } {
  const bytes = new Uint8Array(size).fill(fill);
  const out = {
    guestAddress,
    userAddress,
    bytes,
    unmapped: 0,
    unmap() {
      out.unmapped++;
    },
  };
  return out;
}

describe('regions memory', () => {
  it('reads and writes in place in the region holding the address', () => {
    const low = region(0n, 0x1000, 0x7f00_0000_0000n);
    const high = region(0x10_0000n, 0x1000, 0x7f00_1000_0000n);
    const memory = createRegionsMemory([high, low]);
    expect(memory.regions.map((r) => r.guestAddress)).toEqual([0n, 0x10_0000n]);
    memory.write(0x10_0010n, Uint8Array.of(1, 2, 3));
    expect([...high.bytes.subarray(0x10, 0x13)]).toEqual([1, 2, 3]);
    const back = new Uint8Array(3);
    memory.read(0x10_0010n, back);
    expect([...back]).toEqual([1, 2, 3]);
  });

  it('faults unmapped on holes, past the end and across a gap', () => {
    const memory = createRegionsMemory([
      region(0n, 0x1000, 0x1000_0000n),
      region(0x2000n, 0x1000, 0x2000_0000n),
    ]);
    expect(memory.check(0x1000n, 1, 'read')).toBe('unmapped');
    expect(memory.check(0xff0n, 0x20, 'read')).toBe('unmapped');
    expect(memory.check(0x3000n, 1, 'write')).toBe('unmapped');
    expect(memory.check(0n, -1, 'read')).toBe('invalid-range');
    expect(memory.check((1n << 64n) - 1n, 2, 'read')).toBe('invalid-range');
    expect(() => memory.read(0x1800n, new Uint8Array(1))).toThrowError(GuestMemoryError);
    expect(memory.counters.faults).toBe(1);
  });

  it('splits a range across adjacent regions into segments, and refuses a view of it', () => {
    const a = region(0n, 0x1000, 0x5000_0000n, 0xaa);
    const b = region(0x1000n, 0x1000, 0x9000_0000n, 0xbb);
    const memory = createRegionsMemory([a, b]);
    const mapped = memory.map([{ address: 0xff0n, length: 0x20, access: 'read' }]);
    expect(mapped.segments[0]!.map((s) => s.length)).toEqual([0x10, 0x10]);
    expect(mapped.segments[0]![1]![0]).toBe(0xbb);
    mapped.release();
    const copy = new Uint8Array(0x20);
    memory.read(0xff0n, copy);
    expect(copy[0x0f]).toBe(0xaa);
    expect(copy[0x10]).toBe(0xbb);
    expect(() => memory.view(0xff0n, 0x20, 'read')).toThrow(/not-contiguous/);
  });

  it('translates frontend user addresses to guest addresses within one region', () => {
    const memory = createRegionsMemory([region(0x10_0000n, 0x2000, 0x7fff_0000_0000n)]);
    expect(memory.translateUserAddress(0x7fff_0000_1000n, 0x100)).toBe(0x10_1000n);
    expect(memory.translateUserAddress(0x7fff_0000_1f00n, 0x200)).toBeUndefined();
    expect(memory.translateUserAddress(0x10_0000n, 1)).toBeUndefined();
  });

  it('rejects overlapping regions in guest or user space', () => {
    const memory = createRegionsMemory([region(0x1000n, 0x1000, 0x10_0000n)]);
    expect(() => memory.addRegion(region(0x1800n, 0x1000, 0x90_0000n))).toThrow(RangeError);
    expect(() => memory.addRegion(region(0x8000n, 0x1000, 0x10_0800n))).toThrow(RangeError);
    expect(() => memory.addRegion(region(0x8000n, 0, 0x80_0000n))).toThrow(RangeError);
    expect(() => memory.addRegion(region((1n << 64n) - 0x800n, 0x1000, 0x80_0000n))).toThrow(RangeError);
    expect(memory.regions).toHaveLength(1);
  });

  it('keeps a region that a live view uses until unmapAll, then unmaps it once', () => {
    const r = region(0n, 0x1000, 0x4000_0000n);
    const memory = createRegionsMemory([r]);
    memory.view(0x100n, 0x10, 'read');
    const request = memory.map([{ address: 0x200n, length: 4, access: 'write' }]);
    expect(memory.liveMappings()).toBe(2);
    expect(memory.removeRegion(0n, 0x1000)).toBe(false);
    request.release([4]);
    expect(memory.removeRegion(0n, 0x1000)).toBe(false);
    memory.unmapAll();
    expect(memory.liveMappings()).toBe(0);
    expect(memory.removeRegion(0n, 0x800)).toBe(false);
    expect(memory.removeRegion(0n, 0x1000)).toBe(true);
    expect(r.unmapped).toBe(1);
    expect(memory.check(0n, 1, 'read')).toBe('unmapped');
  });

  it('maps one buffer exactly as check and read see it, below and above 2^53', () => {
    const bases = [0x1000n, 1n << 60n, (1n << 64n) - 0x2000n];
    const regions = bases.map((base, i) => region(base, 0x1000, BigInt(i + 1) << 40n, i + 1));
    regions[0]!.bytes.forEach((_, j, bytes) => {
      bytes[j] = j & 0xff;
    });
    const memory = createRegionsMemory(regions);
    const address = fc
      .tuple(fc.constantFrom(...bases), fc.integer({ min: -0x1100, max: 0x2100 }))
      .map(([base, delta]) => base + BigInt(delta));
    fc.assert(
      fc.property(address, fc.integer({ min: 0, max: 0x1800 }), (at, length) => {
        const fault = memory.check(at, length, 'read');
        if (fault !== undefined) {
          expect(() => memory.map([{ address: at, length, access: 'read' }])).toThrow(GuestMemoryError);
          return;
        }
        const mapped = memory.map([{ address: at, length, access: 'read' }]);
        const expected = new Uint8Array(length);
        memory.read(at, expected);
        const segments = mapped.segments[0]!;
        const joined = new Uint8Array(length);
        let done = 0;
        for (const segment of segments) {
          joined.set(segment, done);
          done += segment.length;
        }
        expect(done).toBe(length);
        expect(joined).toEqual(expected);
        mapped.release();
      }),
      { numRuns: 2000 },
    );
    expect(memory.liveMappings()).toBe(0);
  });

  it('clear unmaps every region', () => {
    const a = region(0n, 0x1000, 0x1000_0000n);
    const b = region(0x4000n, 0x1000, 0x2000_0000n);
    const memory = createRegionsMemory([a, b]);
    memory.clear();
    expect(a.unmapped + b.unmapped).toBe(2);
    expect(memory.regions).toHaveLength(0);
  });
});

describe('regions memory with on-demand regions', () => {
  /** A test memory standing for a grant region: spies on what reaches it. */
  function onDemand(base: bigint, size: number, readOnly?: { offset: number; length: number }[]) {
    const memory = createTestMemory(size, { base, readOnly });
    const released: (readonly number[] | undefined)[] = [];
    let unmapAlls = 0;
    const spy: GuestMemory = {
      kind: 'spy',
      counters: memory.counters,
      check: (address, length, access) => memory.check(address, length, access),
      read: (address, target) => memory.read(address, target),
      write: (address, source) => memory.write(address, source),
      view: (address, length, access) => memory.view(address, length, access),
      map: (ranges) => {
        const mapped = memory.map(ranges);
        return {
          segments: mapped.segments,
          release: (written) => {
            released.push(written);
            mapped.release(written);
          },
        };
      },
      fence: () => {},
      unmapAll: () => {
        unmapAlls++;
        memory.unmapAll();
      },
      liveMappings: () => memory.liveMappings(),
    };
    let unmapped = 0;
    const region: MemoryRegion = {
      guestAddress: base,
      userAddress: 0n,
      bytes: new Uint8Array(0),
      onDemand: { size, memory: spy },
      unmap: () => {
        unmapped++;
      },
    };
    return {
      region,
      memory,
      released,
      get unmapAlls() {
        return unmapAlls;
      },
      get unmapped() {
        return unmapped;
      },
    };
  }

  it('sends accesses inside an on-demand region to its memory, at the same guest address', () => {
    const grant = onDemand(0x10_0000n, 0x4000);
    const memory = createRegionsMemory([region(0n, 0x1000, 0x7f00_0000_0000n), grant.region]);
    expect(regionSize(grant.region)).toBe(0x4000);
    memory.write(0x10_0010n, Uint8Array.of(9, 8, 7));
    expect([...grant.memory.bytes.subarray(0x10, 0x13)]).toEqual([9, 8, 7]);
    const back = new Uint8Array(3);
    memory.read(0x10_0010n, back);
    expect([...back]).toEqual([9, 8, 7]);
    expect(memory.check(0x10_3fffn, 1, 'write')).toBeUndefined();
    expect(memory.check(0x10_3fffn, 2, 'read')).toBe('unmapped');
    const view = memory.view(0x10_1000n, 16, 'write');
    view[0] = 0x42;
    expect(grant.memory.bytes[0x1000]).toBe(0x42);
    expect(memory.liveMappings()).toBe(1);
    memory.unmapAll();
    expect(grant.unmapAlls).toBe(1);
    expect(memory.liveMappings()).toBe(0);
  });

  it('maps a request across mapped and on-demand regions, hands each piece its written bytes, releases once', () => {
    const low = region(0n, 0x1000, 0x7f00_0000_0000n, 0x11);
    const grant = onDemand(0x1000n, 0x2000);
    grant.memory.bytes.fill(0x22);
    const memory = createRegionsMemory([low, grant.region]);
    const mapped = memory.map([
      { address: 0xff0n, length: 0x20, access: 'write' },
      { address: 0x1800n, length: 8, access: 'read' },
    ]);
    expect(mapped.segments[0]!.map((s) => s.length)).toEqual([0x10, 0x10]);
    expect(mapped.segments[0]![1]![0]).toBe(0x22);
    expect(mapped.segments[1]![0]![0]).toBe(0x22);
    expect(memory.liveMappings()).toBe(3);
    expect(memory.removeRegion(0x1000n, 0)).toBe(false);
    mapped.release([0x14, 8]);
    mapped.release([0x14, 8]);
    // 0x10 bytes went to the mapped piece, 4 to the on-demand one; the readable range's
    // count passes through as given.
    expect(grant.released).toEqual([[4, 8]]);
    expect(memory.liveMappings()).toBe(0);
    expect(memory.removeRegion(0x1000n, 0)).toBe(true);
    expect(grant.unmapped).toBe(1);
  });

  it('maps nothing when an on-demand memory faults, and passes its fault through check', () => {
    const grant = onDemand(0x1000n, 0x2000, [{ offset: 0x1000, length: 0x1000 }]);
    const other = onDemand(0x8000n, 0x1000);
    const memory = createRegionsMemory([grant.region, other.region]);
    expect(memory.check(0x2000n, 4, 'write')).toBe('read-only');
    expect(memory.check(0x2000n, 4, 'read')).toBeUndefined();
    expect(() =>
      memory.map([
        { address: 0x8000n, length: 4, access: 'write' },
        { address: 0x2000n, length: 4, access: 'write' },
      ]),
    ).toThrowError(GuestMemoryError);
    expect(other.released).toEqual([[0]]);
    expect(memory.liveMappings()).toBe(0);
    expect(other.memory.liveMappings()).toBe(0);
  });

  it('lets on-demand regions share frontend addresses, and translates mapped regions first', () => {
    const a = onDemand(0x1000n, 0x1000);
    const b = onDemand(0x4000n, 0x1000);
    const memory = createRegionsMemory([a.region, b.region]);
    expect(memory.translateUserAddress(0x10n, 4)).toBe(0x1010n);
    memory.addRegion(region(0x9000n, 0x1000, 0n));
    expect(memory.translateUserAddress(0x10n, 4)).toBe(0x9010n);
    expect(() => memory.addRegion(region(0xa000n, 0x1000, 0x800n))).toThrowError(RangeError);
    expect(() =>
      memory.addRegion({ ...a.region, guestAddress: 0x20_0000n, bytes: new Uint8Array(1) }),
    ).toThrowError(RangeError);
  });
});
