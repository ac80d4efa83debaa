// One suite, the same reads, writes and faults, for every GuestMemory strategy.

import { GTF_reading, GTF_writing, XenError } from '@xvio/xen';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { GuestMemory, MemoryRange } from './guest-memory.js';
import { GuestMemoryError, type MemoryFaultCode } from './memory-errors.js';
import type { StrategyFixture } from './memory-strategy-fixtures.js';

function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return out;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** Runs `action` and returns the code of the `GuestMemoryError` it throws (failing if it does not). */
function faultOf(action: () => unknown): MemoryFaultCode {
  try {
    action();
  } catch (error) {
    if (GuestMemoryError.isInstance(error)) return error.code;
    throw error;
  }
  throw new Error('expected a GuestMemoryError');
}

const FOUR_GIB = 2 ** 32;

/** The shared behaviour every strategy must show. */
export function describeMemoryStrategy(name: string, create: () => StrategyFixture): void {
  describe(`GuestMemory strategy: ${name}`, () => {
    let fixture: StrategyFixture;
    let memory: GuestMemory;

    beforeEach(() => {
      fixture = create();
      memory = fixture.memory;
    });

    afterEach(async () => {
      await fixture.close();
    });

    /** Every mapping the strategy holds is one the host has, and nothing else is left. */
    function expectNoLeak(): void {
      expect(memory.liveMappings()).toBe(fixture.retained());
      const host = fixture.hostMappings();
      if (host !== undefined) expect(host).toBe(memory.liveMappings());
    }

    it('reads and writes a one-page buffer with read/write', () => {
      const buffer = fixture.buffer(1000);
      buffer.guestWrite(pattern(1000, 1));
      const target = new Uint8Array(1000);
      memory.read(buffer.address, target);
      expect(target).toEqual(pattern(1000, 1));
      memory.write(buffer.address, pattern(1000, 2));
      expect(buffer.guestRead()).toEqual(pattern(1000, 2));
      expect(memory.counters.bytesRead).toBe(1000);
      expect(memory.counters.bytesWritten).toBe(1000);
      expectNoLeak();
    });

    it('reads and writes a buffer that straddles a page or region boundary', () => {
      const buffer = fixture.buffer(600, { straddle: true });
      buffer.guestWrite(pattern(600, 3));
      const target = new Uint8Array(600);
      memory.read(buffer.address, target);
      expect(target).toEqual(pattern(600, 3));
      memory.write(buffer.address, pattern(600, 4));
      expect(buffer.guestRead()).toEqual(pattern(600, 4));
      expectNoLeak();
    });

    it('maps a chain in one batch and copies back only what the device wrote', () => {
      const header = fixture.buffer(16);
      const data = fixture.buffer(9000, { straddle: true });
      const status = fixture.buffer(3 * 4096 + 10);
      header.guestWrite(pattern(16, 5));
      data.guestWrite(pattern(9000, 6));
      status.guestWrite(new Uint8Array(status.length).fill(0xee));
      const ranges: MemoryRange[] = [
        { address: header.address, length: header.length, access: 'read' },
        { address: data.address, length: data.length, access: 'read' },
        { address: status.address, length: status.length, access: 'write' },
      ];
      const mapped = memory.map(ranges);
      expect(mapped.segments).toHaveLength(3);
      expect(concat(mapped.segments[0] ?? [])).toEqual(pattern(16, 5));
      expect(concat(mapped.segments[1] ?? [])).toEqual(pattern(9000, 6));
      const writable = mapped.segments[2] ?? [];
      expect(writable.reduce((sum, part) => sum + part.length, 0)).toBe(status.length);
      // The device fills only the first 5000 bytes.
      const reply = pattern(5000, 7);
      let done = 0;
      for (const part of writable) {
        const n = Math.min(part.length, reply.length - done);
        part.set(reply.subarray(done, done + n));
        done += n;
        if (done === reply.length) break;
      }
      expect(memory.liveMappings()).toBeGreaterThanOrEqual(1);
      mapped.release([0, 0, 5000]);
      mapped.release([0, 0, 5000]);
      const seen = status.guestRead();
      expect(seen.subarray(0, 5000)).toEqual(reply);
      expect(seen.subarray(5000).every((value) => value === 0xee)).toBe(true);
      expect(memory.counters.bytesRead).toBe(16 + 9000);
      expect(memory.counters.bytesWritten).toBe(5000);
      expectNoLeak();
    });

    it('keeps a ring view mapped until unmapAll', () => {
      const ring = fixture.buffer(4096 + 512, { straddle: fixture.contiguousViews });
      const view = memory.view(ring.address, ring.length, 'write');
      expect(view.length).toBe(ring.length);
      view.set(pattern(ring.length, 8));
      expect(ring.guestRead()).toEqual(pattern(ring.length, 8));
      ring.guestWrite(pattern(ring.length, 9));
      expect(view).toEqual(pattern(ring.length, 9));
      expect(memory.liveMappings()).toBeGreaterThan(0);
      memory.unmapAll();
      expect(memory.liveMappings()).toBe(0);
      if (fixture.hostMappings() !== undefined) expect(fixture.hostMappings()).toBe(0);
    });

    it('faults on memory the guest never made reachable, mapping nothing', () => {
      const { address, codes } = fixture.inaccessible;
      expect(codes).toContain(memory.check(address, 100, 'read'));
      expect(codes).toContain(faultOf(() => memory.read(address, new Uint8Array(100))));
      expect(codes).toContain(faultOf(() => memory.write(address, new Uint8Array(100))));
      expect(codes).toContain(faultOf(() => memory.map([{ address, length: 100, access: 'read' }])));
      expect(codes).toContain(faultOf(() => memory.view(address, 100, 'read')));
      expect(memory.counters.faults).toBeGreaterThanOrEqual(4);
      expectNoLeak();
    });

    it('faults on addresses beyond the guest (reference beyond the table, frame beyond RAM)', () => {
      const { address, codes } = fixture.outOfRange;
      expect(codes).toContain(memory.check(address, 4096, 'write'));
      expect(codes).toContain(faultOf(() => memory.map([{ address, length: 4096, access: 'write' }])));
      expect(codes).toContain(faultOf(() => memory.read(address, new Uint8Array(8))));
      expectNoLeak();
    });

    it('accepts zero-length ranges at valid addresses and faults on malformed ones', () => {
      const buffer = fixture.buffer(64);
      expect(memory.check(buffer.address, 0, 'read')).toBeUndefined();
      const mapped = memory.map([{ address: buffer.address, length: 0, access: 'write' }]);
      expect(concat(mapped.segments[0] ?? [])).toHaveLength(0);
      mapped.release([0]);
      const { address, codes } = fixture.malformed;
      expect(codes).toContain(memory.check(address, 0, 'read'));
      expect(codes).toContain(faultOf(() => memory.map([{ address, length: 0, access: 'read' }])));
      expect(codes).toContain(faultOf(() => memory.read(address, new Uint8Array(0))));
      expectNoLeak();
    });

    it('faults on 4 GiB lengths without mapping anything', () => {
      const buffer = fixture.buffer(64);
      expect(memory.check(buffer.address, FOUR_GIB, 'read')).toBe('invalid-range');
      expect(faultOf(() => memory.map([{ address: buffer.address, length: FOUR_GIB, access: 'read' }]))).toBe(
        'invalid-range',
      );
      expect(faultOf(() => memory.view(buffer.address, FOUR_GIB, 'read'))).toBe('invalid-range');
      expect(memory.check(buffer.address, -1, 'read')).toBe('invalid-range');
      expect(memory.check(buffer.address, 1.5, 'read')).toBe('invalid-range');
      // The largest valid length runs far past anything granted or mapped.
      const code = faultOf(() =>
        memory.map([{ address: buffer.address, length: FOUR_GIB - 1, access: 'read' }]),
      );
      expect(['unmapped', 'too-large', 'grant-out-of-range', 'grant-not-permitted']).toContain(code);
      expectNoLeak();
    });

    it('undoes a batch whose last range faults', () => {
      const good = fixture.buffer(5000, { straddle: true });
      const host = fixture.hostMappings();
      const before = memory.liveMappings();
      const code = faultOf(() =>
        memory.map([
          { address: good.address, length: good.length, access: 'read' },
          { address: good.address, length: good.length, access: 'write' },
          { address: fixture.inaccessible.address, length: 10, access: 'write' },
        ]),
      );
      expect(fixture.inaccessible.codes).toContain(code);
      expect(memory.liveMappings() - fixture.retained()).toBe(before);
      if (host !== undefined) expect((fixture.hostMappings() ?? 0) - fixture.retained()).toBe(host);
    });

    it('leaks no mapping through a storm of faulting and good requests', () => {
      const good = fixture.buffer(3000, { straddle: true });
      const other = fixture.buffer(100);
      const bad: bigint[] = [
        fixture.inaccessible.address,
        fixture.outOfRange.address,
        fixture.malformed.address,
      ];
      let faults = 0;
      for (let round = 0; round < 300; round++) {
        const target = bad[round % bad.length] as bigint;
        const ranges: MemoryRange[] = [
          { address: good.address, length: good.length, access: round % 2 === 0 ? 'read' : 'write' },
          { address: other.address, length: other.length, access: 'write' },
        ];
        if (round % 5 !== 0)
          ranges.splice(round % 2, 0, { address: target, length: 1 + (round % 9000), access: 'read' });
        try {
          const mapped = memory.map(ranges);
          mapped.release(ranges.map(() => 1));
        } catch (error) {
          if (!GuestMemoryError.isInstance(error)) throw error;
          faults++;
        }
        try {
          memory.read(target, new Uint8Array(round % 50));
        } catch (error) {
          if (!GuestMemoryError.isInstance(error)) throw error;
          faults++;
        }
        memory.check(target, round, 'write');
      }
      expect(faults).toBeGreaterThanOrEqual(240 + 200);
      expectNoLeak();
      memory.unmapAll();
      expect(memory.liveMappings()).toBe(0);
      if (fixture.hostMappings() !== undefined) expect(fixture.hostMappings()).toBe(0);
    });

    it('answers any hostile range with a typed fault or the right bytes, leaking nothing', () => {
      const buffer = fixture.buffer(3 * 4096, { straddle: true });
      buffer.guestWrite(pattern(buffer.length, 11));
      const targets = [
        buffer.address,
        fixture.inaccessible.address,
        fixture.outOfRange.address,
        fixture.malformed.address,
      ];
      fc.assert(
        fc.property(
          fc.constantFrom(...targets),
          fc.integer({ min: -5000, max: 5000 }),
          fc.oneof(fc.integer({ min: 0, max: 3 * 4096 }), fc.constantFrom(-1, 2 ** 32 - 1, 2 ** 32, 2 ** 53)),
          fc.constantFrom<MemoryRange['access']>('read', 'write'),
          (base, delta, length, access) => {
            const address = base + BigInt(delta);
            try {
              const mapped = memory.map([{ address, length, access }]);
              const bytes = concat(mapped.segments[0] ?? []);
              expect(bytes.length).toBe(length);
              const offset = Number(address - buffer.address);
              if (
                base === buffer.address &&
                access === 'read' &&
                offset >= 0 &&
                offset + length <= buffer.length
              ) {
                expect(bytes).toEqual(pattern(buffer.length, 11).subarray(offset, offset + length));
              }
              mapped.release([0]);
            } catch (error) {
              if (!GuestMemoryError.isInstance(error)) throw error;
            }
          },
        ),
        { numRuns: 150, seed: 4 },
      );
      expect(buffer.guestRead()).toEqual(pattern(buffer.length, 11));
      expectNoLeak();
    });

    it('never writes a read-only buffer', () => {
      if (!fixture.readOnlyBuffers) {
        expect(fixture.grantFlags).toBeUndefined();
        return;
      }
      const buffer = fixture.buffer(6000, { readOnly: true, straddle: true });
      buffer.guestWrite(pattern(6000, 10));
      const mapped = memory.map([{ address: buffer.address, length: buffer.length, access: 'read' }]);
      expect(concat(mapped.segments[0] ?? [])).toEqual(pattern(6000, 10));
      const flags = fixture.grantFlags?.(buffer) ?? 0;
      // Xen sees no writable use of the grant (no GTF_writing), whichever way it is reached.
      expect(flags & GTF_writing).toBe(0);
      mapped.release();
      expect(
        faultOf(() => memory.map([{ address: buffer.address, length: buffer.length, access: 'write' }])),
      ).toBe('read-only');
      expect(faultOf(() => memory.write(buffer.address, new Uint8Array(10).fill(1)))).toBe('read-only');
      expect(memory.check(buffer.address, 10, 'write')).toBe('read-only');
      expect(memory.check(buffer.address, 10, 'read')).toBeUndefined();
      expect(buffer.guestRead()).toEqual(pattern(6000, 10));
      expect((fixture.grantFlags?.(buffer) ?? 0) & (GTF_reading | GTF_writing)).toBe(0);
      expectNoLeak();
    });

    it('handles a grant revoked in the middle of a request', () => {
      if (!fixture.revoke || !fixture.revokeBuffer) {
        expect(fixture.readOnlyBuffers).toBe(false);
        return;
      }
      const buffer = fixture.buffer(5000, { straddle: true });
      const revoke = fixture.revokeBuffer.bind(fixture);
      const mapped = memory.map([{ address: buffer.address, length: buffer.length, access: 'write' }]);
      const first = mapped.segments[0]?.[0] ?? new Uint8Array(0);
      expect(first.length).toBeGreaterThanOrEqual(10);
      first.fill(0x5a, 0, 10);
      if (fixture.revoke === 'allowed') {
        // Nothing is mapped: the guest may revoke; the copy-back then fails the request.
        revoke(buffer);
        expect(faultOf(() => mapped.release([10]))).toBe('grant-not-permitted');
        expect(
          buffer
            .guestRead()
            .subarray(0, 10)
            .every((value) => value === 0x5a),
        ).toBe(false);
      } else {
        let busy: unknown;
        try {
          revoke(buffer);
        } catch (error) {
          busy = error;
        }
        expect(XenError.isInstance(busy) && busy.code).toBe('EBUSY');
        mapped.release([10]);
        if (fixture.revoke === 'busy-until-unmap-all') {
          expect(() => revoke(buffer)).toThrow(/EBUSY/);
          memory.unmapAll();
        }
        revoke(buffer);
      }
      expect(memory.check(buffer.address, 10, 'read')).toBe('grant-not-permitted');
      expect(faultOf(() => memory.read(buffer.address, new Uint8Array(10)))).toBe('grant-not-permitted');
      expectNoLeak();
    });
  });
}
