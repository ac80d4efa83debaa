import type { GrantTables, SimGrantTables } from '@xvio/xen';
import { GNTST_general_error, GNTST_okay, GTF_reading, GTF_writing } from '@xvio/xen';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeGrantAddress, PAGE_SIZE } from './grant-address.js';
import { GrantCopyMemory } from './grant-copy-memory.js';
import { GuestMemoryError } from './memory-errors.js';
import { createSimFixture } from './memory-strategy-fixtures.js';

type Fixture = ReturnType<typeof createSimFixture>;

describe('grant copy', () => {
  let fixture: Fixture | undefined;

  afterEach(async () => {
    await fixture?.close();
    fixture = undefined;
  });

  it('copies in batches of at most 64 segments and never maps a buffer', () => {
    fixture = createSimFixture('grant-copy', { guestMemoryBytes: 16 * 1024 * 1024 });
    const memory = fixture.memory as GrantCopyMemory;
    const grants = fixture.backend.grants as SimGrantTables;
    const buffer = fixture.buffer(1024 * 1024, { aligned: true });
    buffer.guestWrite(new Uint8Array(1024 * 1024).fill(0x11));
    const mapped = memory.map([{ address: buffer.address, length: buffer.length, access: 'read' }]);
    expect(memory.counters.calls).toBe(4);
    expect(memory.counters.copies).toBe(256);
    expect(grants.counters.copies).toBe(256);
    expect(fixture.frontend.flags(buffer.refs[0] as number) & (GTF_reading | GTF_writing)).toBe(0);
    expect(fixture.hostMappings()).toBe(0);
    expect(mapped.segments[0]?.[0]?.every((value) => value === 0x11)).toBe(true);
    mapped.release();
    expect(memory.counters.calls).toBe(4);
  });

  it('copies back only the bytes the device wrote', () => {
    fixture = createSimFixture('grant-copy');
    const memory = fixture.memory as GrantCopyMemory;
    const grants = fixture.backend.grants as SimGrantTables;
    const buffer = fixture.buffer(3 * PAGE_SIZE, { straddle: true });
    buffer.guestWrite(new Uint8Array(3 * PAGE_SIZE).fill(0xcc));
    const mapped = memory.map([{ address: buffer.address, length: buffer.length, access: 'write' }]);
    // The writable range is only checked (zero-length copies), not copied in.
    expect(grants.counters.copiedBytes).toBe(0);
    mapped.segments[0]?.[0]?.fill(0x33, 0, 5000);
    mapped.release([5000]);
    expect(grants.counters.copiedBytes).toBe(5000);
    const seen = buffer.guestRead();
    expect(seen.subarray(0, 5000).every((value) => value === 0x33)).toBe(true);
    expect(seen.subarray(5000).every((value) => value === 0xcc)).toBe(true);
    expect(memory.counters.bytesWritten).toBe(5000);
  });

  it('copies nothing back for a request released after a reset', () => {
    fixture = createSimFixture('grant-copy');
    const memory = fixture.memory as GrantCopyMemory;
    const buffer = fixture.buffer(100);
    const mapped = memory.map([{ address: buffer.address, length: 100, access: 'write' }]);
    mapped.segments[0]?.[0]?.fill(0x44);
    memory.unmapAll();
    expect(memory.liveMappings()).toBe(0);
    mapped.release([100]);
    expect(buffer.guestRead().every((value) => value === 0)).toBe(true);
  });

  it('tells a read-only grant from a revoked one through Linux gntdev on real Xen', () => {
    fixture = createSimFixture('grant-copy');
    const real = fixture.backend.grants;
    // Real Xen refuses to write-pin a read-only grant, and any grant not permitted to us, with
    // GNTST_general_error; Linux's gntdev answers a zero-length segment GNTST_okay without
    // asking Xen at all. So the writable check of `map` passes and the copy-back refuses.
    const grants = Object.create(real) as GrantTables;
    grants.copy = (segments) => {
      const status = real.copy(segments).map((s) => (s === GNTST_okay ? s : GNTST_general_error));
      return status.map((s, i) => ((segments[i]?.length ?? 0) === 0 ? GNTST_okay : s));
    };
    const memory = new GrantCopyMemory({ grants, domid: fixture.guest.domid });
    const faultOf = (address: bigint) => {
      try {
        memory.map([{ address, length: 64, access: 'write' }]).release([64]);
        return undefined;
      } catch (error) {
        return GuestMemoryError.isInstance(error) ? error.code : String(error);
      }
    };
    const readOnly = fixture.buffer(PAGE_SIZE, { readOnly: true, aligned: true });
    readOnly.guestWrite(new Uint8Array(64).fill(0x3c));
    expect(faultOf(readOnly.address)).toBe('read-only');
    expect(readOnly.guestRead().subarray(0, 64)).toEqual(new Uint8Array(64).fill(0x3c));
    const never = encodeGrantAddress(fixture.frontend.grant([fixture.guest.allocatePages(1)]) + 1);
    expect(faultOf(never)).toBe('grant-not-permitted');
  });

  it('honours a smaller batch and rejects a batch above 64', () => {
    fixture = createSimFixture('grant-copy');
    const { backend, guest } = fixture;
    const memory = new GrantCopyMemory({ grants: backend.grants, domid: guest.domid, batchSegments: 2 });
    const buffer = fixture.buffer(5 * PAGE_SIZE, { aligned: true });
    memory.read(buffer.address, new Uint8Array(5 * PAGE_SIZE));
    expect(memory.counters.calls).toBe(3);
    expect(
      () => new GrantCopyMemory({ grants: backend.grants, domid: guest.domid, batchSegments: 65 }),
    ).toThrow(RangeError);
  });
});
