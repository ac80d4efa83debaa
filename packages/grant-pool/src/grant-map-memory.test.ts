import {
  GNTST_general_error,
  GNTST_okay,
  GrantError,
  type GrantTables,
  GTF_reading,
  GTF_writing,
} from '@xvio/xen';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeGrantAddress, PAGE_SIZE } from './grant-address.js';
import { GrantMapMemory } from './grant-map-memory.js';
import { GuestMemoryError } from './memory-errors.js';
import { createSimFixture } from './memory-strategy-fixtures.js';

type Fixture = ReturnType<typeof createSimFixture>;

describe('grant map per request', () => {
  let fixture: Fixture | undefined;

  afterEach(async () => {
    await fixture?.close();
    fixture = undefined;
  });

  it('maps a chain in one call per direction: readable pages read-only, writable pages writable', () => {
    fixture = createSimFixture('grant-map');
    const memory = fixture.memory as GrantMapMemory;
    const request = fixture.buffer(2 * PAGE_SIZE, { straddle: true });
    const reply = fixture.buffer(PAGE_SIZE, { aligned: true });
    const mapped = memory.map([
      { address: request.address, length: request.length, access: 'read' },
      { address: reply.address, length: reply.length, access: 'write' },
    ]);
    expect(memory.counters.calls).toBe(2);
    expect(memory.counters.maps).toBe(3 + 1);
    expect(fixture.frontend.flags(request.refs[0] as number) & GTF_writing).toBe(0);
    expect(fixture.frontend.flags(request.refs[0] as number) & GTF_reading).toBe(GTF_reading);
    expect(fixture.frontend.flags(reply.refs[0] as number) & GTF_writing).toBe(GTF_writing);
    expect(fixture.hostMappings()).toBe(2);
    mapped.release();
    expect(memory.counters.calls).toBe(4);
    expect(memory.counters.unmaps).toBe(4);
    expect(fixture.hostMappings()).toBe(0);
  });

  it('tells a read-only grant from a revoked one when every failed op reads general_error (native gntdev)', () => {
    fixture = createSimFixture('grant-map');
    const real = fixture.backend.grants;
    // What the native binding reports: gntdev gives one errno per batch, so each failing op
    // found by mapping it alone reads GNTST_general_error, whatever Xen's reason was.
    const grants = Object.create(real) as GrantTables;
    grants.map = (request) => {
      try {
        return real.map(request);
      } catch (error) {
        if (!GrantError.isInstance(error)) throw error;
        const status = error.status.map((s) => (s === GNTST_okay ? s : GNTST_general_error));
        throw new GrantError('EINVAL', 'map_grant_refs', status, error.message);
      }
    };
    const memory = new GrantMapMemory({ grants, domid: fixture.guest.domid });
    const readOnly = fixture.buffer(PAGE_SIZE, { readOnly: true, aligned: true });
    const faultOf = (body: () => unknown) => {
      try {
        body();
        return undefined;
      } catch (error) {
        return GuestMemoryError.isInstance(error) ? error.code : String(error);
      }
    };
    expect(
      faultOf(() => memory.map([{ address: readOnly.address, length: PAGE_SIZE, access: 'write' }])),
    ).toBe('read-only');
    const never = encodeGrantAddress(fixture.frontend.grant([fixture.guest.allocatePages(1)]) + 1);
    expect(faultOf(() => memory.map([{ address: never, length: 16, access: 'write' }]))).toBe(
      'grant-not-permitted',
    );
    expect(memory.liveMappings()).toBe(0);
    expect(fixture.hostMappings()).toBe(0);
  });

  it('bounds the pages a request may map', () => {
    fixture = createSimFixture('grant-map');
    const memory = new GrantMapMemory({
      grants: fixture.backend.grants,
      domid: fixture.guest.domid,
      maxRequestPages: 2,
    });
    const buffer = fixture.buffer(PAGE_SIZE, { aligned: true });
    const ranges = [
      { address: buffer.address, length: PAGE_SIZE, access: 'read' as const },
      { address: buffer.address, length: PAGE_SIZE, access: 'read' as const },
      { address: buffer.address, length: PAGE_SIZE, access: 'read' as const },
    ];
    let code: string | undefined;
    try {
      memory.map(ranges);
    } catch (error) {
      if (GuestMemoryError.isInstance(error)) code = error.code;
    }
    expect(code).toBe('too-large');
    expect(memory.counters.calls).toBe(0);
    expect(memory.check(encodeGrantAddress(buffer.refs[0] as number), 3 * PAGE_SIZE, 'read')).toBe(
      'too-large',
    );
  });

  it('reports a vanished frontend as a host failure with its cause', () => {
    fixture = createSimFixture('grant-map');
    const memory = fixture.memory as GrantMapMemory;
    const buffer = fixture.buffer(16);
    fixture.frontend.close();
    fixture.sim.destroyDomain(fixture.guest.domid);
    let error: unknown;
    try {
      memory.read(buffer.address, new Uint8Array(16));
    } catch (caught) {
      error = caught;
    }
    expect(GuestMemoryError.isInstance(error) && error.code).toBe('host-failure');
    expect(GuestMemoryError.isInstance(error) && error.isGuestFault).toBe(false);
    expect((error as Error).cause).toBeDefined();
  });
});
