import { type GrantTables, XenError } from '@xvio/xen';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeGrantAddress, PAGE_SIZE } from './grant-address.js';
import type { MemoryRange } from './guest-memory.js';
import { GuestMemoryError } from './memory-errors.js';
import { createSimFixture } from './memory-strategy-fixtures.js';
import { PersistentPoolMemory } from './persistent-pool-memory.js';
import { encodePoolTable, POOL_TABLE_MAX_REFS } from './pool-table-wire.js';

type Fixture = ReturnType<typeof createSimFixture>;

describe('persistent pool', () => {
  let fixture: Fixture | undefined;

  afterEach(async () => {
    await fixture?.close();
    fixture = undefined;
  });

  function setup(options: { poolPages?: number; maxPersistentPages?: number } = {}) {
    fixture = createSimFixture('persistent-pool', { poolPages: options.poolPages ?? 64, ...options });
    return { fixture, memory: fixture.memory as PersistentPoolMemory };
  }

  function request(
    memory: PersistentPoolMemory,
    address: bigint,
    length: number,
    access: MemoryRange['access'] = 'read',
  ) {
    return memory.map([{ address, length, access }]);
  }

  it('maps a pool buffer once and then serves it without a hypervisor call', () => {
    const { fixture, memory } = setup();
    const buffer = fixture.buffer(3 * PAGE_SIZE, { aligned: true });
    buffer.guestWrite(new Uint8Array(3 * PAGE_SIZE).fill(7));
    request(memory, buffer.address, buffer.length).release();
    expect(memory.counters.cacheMisses).toBe(3);
    expect(memory.counters.maps).toBe(3);
    const calls = memory.counters.calls;
    for (let i = 0; i < 50; i++) {
      const mapped = request(memory, buffer.address, buffer.length, i % 2 === 0 ? 'read' : 'write');
      expect(mapped.segments[0]).toHaveLength(1);
      expect(mapped.segments[0]?.[0]?.every((value) => value === 7)).toBe(true);
      mapped.release([0]);
    }
    expect(memory.counters.calls).toBe(calls);
    expect(memory.counters.cacheHits).toBe(150);
    expect(memory.persistentPages()).toBe(3);
    expect(fixture.hostMappings()).toBe(1);
  });

  it('hands a reused buffer its view again while resident, and a view of the new mapping after unmapAll', () => {
    const { fixture, memory } = setup();
    const buffer = fixture.buffer(100, { aligned: true });
    buffer.guestWrite(new Uint8Array(100).fill(3));
    const low = Number(buffer.address & 0xffff_ffffn);
    const high = Number(buffer.address >> 32n);
    // A range as a descriptor chain gives it: the address also as its two halves.
    const halves = { address: buffer.address, addressLow: low, addressHigh: high, length: 100 } as const;
    memory.map([{ ...halves, access: 'read' }]).release(); // maps the page
    const first = memory.map([{ ...halves, access: 'write' }]);
    const view = first.segments[0]?.[0];
    first.release([0]);
    const again = memory.map([{ address: buffer.address, length: 100, access: 'read' }]);
    expect(again.segments[0]?.[0]).toBe(view);
    again.release();
    // Another length from the same page is another view.
    const shorter = memory.map([{ ...halves, length: 60, access: 'read' }]);
    expect(shorter.segments[0]?.[0]).toHaveLength(60);
    shorter.release();
    memory.unmapAll();
    expect(fixture.hostMappings()).toBe(0);
    const remapped = memory.map([{ ...halves, access: 'write' }]);
    const fresh = remapped.segments[0]?.[0];
    expect(fresh).not.toBe(view);
    fresh?.fill(9);
    remapped.release([100]);
    expect([...buffer.guestRead()].every((value) => value === 9)).toBe(true);
  });

  it('decodes address halves to the same faults as the address', () => {
    const { memory } = setup();
    const cases: [bigint, number][] = [
      [0x1000n, 16], // a guest-physical address: nothing a grant backend reaches
      [(1n << 63n) | (0x1_0000_0000n << 12n), 16], // a reference beyond u32
      [encodeGrantAddress(1), 2 ** 32], // a length beyond a descriptor's
    ];
    for (const [address, length] of cases) {
      const plain = () => memory.map([{ address, length, access: 'read' }]);
      const split = () =>
        memory.map([
          {
            address,
            addressLow: Number(address & 0xffff_ffffn),
            addressHigh: Number(address >> 32n),
            length,
            access: 'read',
          },
        ]);
      const code = (run: () => unknown) => {
        try {
          run();
        } catch (error) {
          return GuestMemoryError.isInstance(error) ? error.code : 'other';
        }
        return 'none';
      };
      expect(code(split)).toBe(code(plain));
      expect(code(split)).not.toBe('none');
    }
  });

  it('serves pool references at both ends of the u32 range, also after the pool grows', () => {
    // A table-less stand-in for the hypervisor: each mapped page holds its reference's low byte.
    const mapped: number[][] = [];
    const grants = {
      map({ refs }: { refs: readonly number[] }) {
        mapped.push([...refs]);
        const bytes = new Uint8Array(refs.length * PAGE_SIZE);
        for (const [i, ref] of refs.entries()) bytes.fill(ref & 0xff, i * PAGE_SIZE, (i + 1) * PAGE_SIZE);
        return { bytes, unmap: () => undefined };
      },
    } as unknown as GrantTables;
    const high = [70_000, 0xffff_ffff];
    const memory = new PersistentPoolMemory({ grants, domid: 1, poolRefs: [5, ...high] });
    const byteAt = (ref: number) => {
      const request = memory.map([{ address: encodeGrantAddress(ref, 8), length: 16, access: 'read' }]);
      const value = request.segments[0]?.[0]?.[0];
      request.release();
      return value;
    };
    for (const ref of [5, ...high]) expect(byteAt(ref)).toBe(ref & 0xff);
    expect(mapped).toEqual([[5], [70_000], [0xffff_ffff]]);
    memory.setPool([5, 60_000, ...high]);
    for (const ref of [5, 60_000, ...high]) expect(byteAt(ref)).toBe(ref & 0xff);
    // Only the new page needed the hypervisor; every other one was still resident.
    expect(mapped).toEqual([[5], [70_000], [0xffff_ffff], [60_000]]);
    expect(memory.persistentPages()).toBe(4);
    memory.unmapAll();
    expect(memory.persistentPages()).toBe(0);
    expect(byteAt(70_000)).toBe(70_000 & 0xff);
    expect(mapped).toHaveLength(5);
  });

  it('keeps at most maxPersistentPages mapped, evicting the least recently used batch', () => {
    const { fixture, memory } = setup({ poolPages: 64, maxPersistentPages: 8 });
    const buffers = Array.from({ length: 6 }, () => fixture.buffer(2 * PAGE_SIZE, { aligned: true }));
    for (const buffer of buffers) request(memory, buffer.address, buffer.length).release();
    expect(memory.persistentPages()).toBeLessThanOrEqual(8);
    expect(memory.counters.evictions).toBe(2);
    // The two oldest were evicted: using them again misses; the newest still hit.
    const misses = memory.counters.cacheMisses;
    request(memory, (buffers[5] as (typeof buffers)[number]).address, 2 * PAGE_SIZE).release();
    expect(memory.counters.cacheMisses).toBe(misses);
    request(memory, (buffers[0] as (typeof buffers)[number]).address, 2 * PAGE_SIZE).release();
    expect(memory.counters.cacheMisses).toBe(misses + 2);
    expect(memory.persistentPages()).toBeLessThanOrEqual(8);
    expect(fixture.hostMappings()).toBe(memory.liveMappings());
  });

  it('never evicts pages a request still uses, and trims once it is released', () => {
    const { fixture, memory } = setup({ poolPages: 64, maxPersistentPages: 4 });
    const first = fixture.buffer(3 * PAGE_SIZE, { aligned: true });
    const second = fixture.buffer(3 * PAGE_SIZE, { aligned: true });
    const held = request(memory, first.address, first.length, 'write');
    const other = request(memory, second.address, second.length, 'write');
    // Both are in use: six pages mapped over a bound of four, and both views stay valid.
    expect(memory.persistentPages()).toBe(6);
    held.segments[0]?.[0]?.fill(1);
    other.segments[0]?.[0]?.fill(2);
    held.release();
    other.release();
    expect(memory.persistentPages()).toBeLessThanOrEqual(4);
    expect(first.guestRead().every((value) => value === 1)).toBe(true);
    expect(second.guestRead().every((value) => value === 2)).toBe(true);
  });

  it('maps buffers outside the pool per request, so the frontend can revoke them after completion', () => {
    const { fixture, memory } = setup({ poolPages: 4 });
    const inPool = fixture.buffer(PAGE_SIZE, { aligned: true });
    const outside = fixture.buffer(PAGE_SIZE, { readOnly: true });
    outside.guestWrite(new Uint8Array(PAGE_SIZE).fill(9));
    const mapped = memory.map([
      { address: inPool.address, length: PAGE_SIZE, access: 'write' },
      { address: outside.address, length: PAGE_SIZE, access: 'read' },
    ]);
    expect(memory.counters.fallbacks).toBe(1);
    expect(mapped.segments[1]?.[0]?.every((value) => value === 9)).toBe(true);
    mapped.release([PAGE_SIZE, 0]);
    for (const ref of outside.refs) fixture.frontend.endAccess(ref);
    // Pool pages stay mapped until disconnect: revoking one is refused.
    expect(() => fixture.frontend.endAccess(inPool.refs[0] as number)).toThrow(XenError);
    memory.unmapAll();
    fixture.frontend.endAccess(inPool.refs[0] as number);
    expect(fixture.hostMappings()).toBe(0);
  });

  it('takes the pool from a pool table the frontend granted', async () => {
    fixture = createSimFixture('grant-map');
    const { guest, frontend, backend } = fixture;
    const frames = Array.from({ length: 8 }, () => guest.allocatePages(1));
    const first = frontend.grant(frames);
    const refs = frames.map((_, i) => first + i);
    const tableFrame = guest.allocatePages(1);
    encodePoolTable(refs, guest.memory.subarray(tableFrame * PAGE_SIZE, (tableFrame + 1) * PAGE_SIZE));
    const tableRef = frontend.grant([tableFrame], true);
    const memory = new PersistentPoolMemory({ grants: backend.grants, domid: guest.domid });
    expect(memory.loadPoolTable(tableRef)).toBe(8);
    memory.map([{ address: encodeGrantAddress(first), length: 8 * PAGE_SIZE, access: 'read' }]).release();
    expect(memory.counters.fallbacks).toBe(0);
    expect(memory.persistentPages()).toBe(8);
    // A page that is no table, and a table that claims too many references.
    expect(() => memory.loadPoolTable(first)).toThrow(RangeError);
    const bad = encodePoolTable(
      [],
      guest.memory.subarray((frames[0] as number) * PAGE_SIZE, ((frames[0] as number) + 1) * PAGE_SIZE),
    );
    new DataView(bad.buffer, bad.byteOffset).setUint32(4, POOL_TABLE_MAX_REFS + 1, true);
    expect(() => memory.loadPoolTable(first)).toThrow(RangeError);
    expect(() => memory.loadPoolTable(guest.grantEntries - 1)).toThrow(GuestMemoryError);
    memory.unmapAll();
    expect(fixture.hostMappings()).toBe(0);
  });

  it('unmaps pages that leave the pool when the frontend publishes a new one', () => {
    const { fixture, memory } = setup({ poolPages: 8 });
    const buffer = fixture.buffer(2 * PAGE_SIZE, { aligned: true });
    request(memory, buffer.address, buffer.length).release();
    expect(memory.persistentPages()).toBe(2);
    memory.setPool([]);
    expect(memory.persistentPages()).toBe(0);
    expect(fixture.hostMappings()).toBe(0);
    // Now outside the pool: per request.
    request(memory, buffer.address, buffer.length).release();
    expect(memory.counters.fallbacks).toBe(1);
    expect(() => memory.setPool([-1])).toThrow(RangeError);
  });
});
