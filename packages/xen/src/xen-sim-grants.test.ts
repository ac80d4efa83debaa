import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GrantError, XenError } from './xen-errors.js';
import {
  GNTST_bad_copy_arg,
  GNTST_bad_domain,
  GNTST_bad_gntref,
  GNTST_okay,
  GNTST_permission_denied,
  GTF_permit_access,
  GTF_reading,
  GTF_readonly,
  GTF_writing,
} from './xen-grant-wire.js';
import type { XenServices } from './xen-services.js';
import { createXenSimulator, type SimDomain, type XenSimulator } from './xen-sim.js';

let sim: XenSimulator;
let guest: SimDomain;
let dom0: XenServices;
let guestServices: XenServices;

beforeEach(() => {
  sim = createXenSimulator();
  guest = sim.createDomain({ memoryBytes: 1 << 20 });
  dom0 = sim.services(0);
  guestServices = guest.services();
});

afterEach(async () => {
  await sim.close();
});

function expectXenError(fn: () => unknown, code: string): XenError {
  try {
    fn();
  } catch (error) {
    expect(XenError.isInstance(error)).toBe(true);
    expect((error as XenError).code).toBe(code);
    return error as XenError;
  }
  throw new Error(`expected ${code}`);
}

describe('grant map', () => {
  it('maps the granted guest page itself (shared, not a copy) and marks the entry in use', () => {
    const ref = guestServices.grants.grantAccess(0, 10);
    guest.memory.fill(0xab, 10 * 4096, 11 * 4096);
    const mapping = dom0.grants.map({ domid: guest.domid, refs: [ref], writable: true });
    expect(mapping.status).toEqual([GNTST_okay]);
    expect(mapping.bytes.length).toBe(4096);
    expect(mapping.bytes[100]).toBe(0xab);
    mapping.bytes[5] = 0x42;
    expect(guest.memory[10 * 4096 + 5]).toBe(0x42);
    guest.memory[10 * 4096 + 6] = 0x17;
    expect(mapping.bytes[6]).toBe(0x17);
    const entry = guest.grantEntry(ref);
    expect(entry.flags & (GTF_reading | GTF_writing)).toBe(GTF_reading | GTF_writing);
    expect(entry.domid).toBe(0);
    expect(entry.frame).toBe(10);
    mapping.unmap();
    expect(guest.grantEntry(ref).flags).toBe(GTF_permit_access);
  });

  it('a read-only mapping sets only GTF_reading', () => {
    const ref = guestServices.grants.grantAccess(0, 3, { readOnly: true });
    const mapping = dom0.grants.map({ domid: guest.domid, refs: [ref], writable: false });
    expect(guest.grantEntry(ref).flags).toBe(GTF_permit_access | GTF_readonly | GTF_reading);
    mapping.unmap();
    expect(guest.grantEntry(ref).flags).toBe(GTF_permit_access | GTF_readonly);
  });

  it('end access fails with EBUSY while the page is mapped, as Linux reports "grant still in use"', () => {
    const ref = guestServices.grants.grantAccess(0, 4);
    const mapping = dom0.grants.map({ domid: guest.domid, refs: [ref], writable: true });
    expectXenError(() => guestServices.grants.endAccess(ref), 'EBUSY');
    mapping.unmap();
    guestServices.grants.endAccess(ref);
    expect(guest.grantEntry(ref).flags).toBe(0);
    const error = expectXenError(
      () => dom0.grants.map({ domid: guest.domid, refs: [ref], writable: false }),
      'EINVAL',
    );
    expect((error as GrantError).status).toEqual([GNTST_permission_denied]);
  });

  it('maps scattered refs into one contiguous view in request order', () => {
    const refs = [20, 7, 8, 30].map((frame) => {
      guest.memory.fill(frame, frame * 4096, (frame + 1) * 4096);
      return guestServices.grants.grantAccess(0, frame);
    });
    const mapping = dom0.grants.map({ domid: guest.domid, refs, writable: false });
    expect(mapping.bytes.length).toBe(4 * 4096);
    expect([0, 1, 2, 3].map((i) => mapping.page(i)[0])).toEqual([20, 7, 8, 30]);
    expect(dom0.grants.liveMappings()).toBe(1);
    mapping.unmap();
    expect(dom0.grants.liveMappings()).toBe(0);
  });

  it('reports a status per op and maps nothing when any op fails', () => {
    const good = guestServices.grants.grantAccess(0, 1);
    const readOnly = guestServices.grants.grantAccess(0, 2, { readOnly: true });
    const forOther = guestServices.grants.grantAccess(7, 3);
    const error = expectXenError(
      () =>
        dom0.grants.map({
          domid: guest.domid,
          refs: [good, 100_000, readOnly, forOther, 500],
          writable: true,
        }),
      'EINVAL',
    ) as GrantError;
    expect(GrantError.isInstance(error)).toBe(true);
    expect(error.status).toEqual([
      GNTST_okay,
      GNTST_bad_gntref,
      GNTST_permission_denied,
      GNTST_permission_denied,
      GNTST_permission_denied,
    ]);
    expect(guest.grantEntry(good).flags).toBe(GTF_permit_access);
    expect(dom0.grants.liveMappings()).toBe(0);
  });

  it('answers bad_domain for a domain that does not exist', () => {
    const error = expectXenError(
      () => dom0.grants.map({ domid: 99, refs: [8], writable: false }),
      'EINVAL',
    ) as GrantError;
    expect(error.status).toEqual([GNTST_bad_domain]);
  });

  it('a double unmap fails with EINVAL and changes nothing', () => {
    const ref = guestServices.grants.grantAccess(0, 5);
    const mapping = dom0.grants.map({ domid: guest.domid, refs: [ref], writable: true });
    mapping.unmap();
    expectXenError(() => mapping.unmap(), 'EINVAL');
    expect(guest.grantEntry(ref).flags).toBe(GTF_permit_access);
  });

  it('keeps GTF flags while two mappings of the same ref are live', () => {
    const ref = guestServices.grants.grantAccess(0, 6);
    const first = dom0.grants.map({ domid: guest.domid, refs: [ref], writable: true });
    const second = dom0.grants.map({ domid: guest.domid, refs: [ref], writable: false });
    first.unmap();
    expect(guest.grantEntry(ref).flags & GTF_reading).toBe(GTF_reading);
    expect(guest.grantEntry(ref).flags & GTF_writing).toBe(0);
    second.unmap();
    expect(guest.grantEntry(ref).flags).toBe(GTF_permit_access);
  });

  it('refuses to map beyond the handle limit', () => {
    const ref = guestServices.grants.grantAccess(0, 9);
    dom0.grants.setMaxGrants(1);
    const mapping = dom0.grants.map({ domid: guest.domid, refs: [ref], writable: false });
    expectXenError(() => dom0.grants.map({ domid: guest.domid, refs: [ref], writable: false }), 'ENOMEM');
    mapping.unmap();
  });
});

describe('domain destruction', () => {
  it('keeps a backend mapping usable after the granting domain is destroyed, then unmaps cleanly', () => {
    const ref = guestServices.grants.grantAccess(0, 12);
    guest.memory[12 * 4096] = 7;
    const mapping = dom0.grants.map({ domid: guest.domid, refs: [ref], writable: true });
    sim.destroyDomain(guest.domid);
    expect(mapping.bytes[0]).toBe(7);
    mapping.bytes[1] = 8;
    mapping.unmap();
    expect(dom0.grants.liveMappings()).toBe(0);
    const error = expectXenError(
      () => dom0.grants.map({ domid: guest.domid, refs: [ref], writable: true }),
      'EINVAL',
    );
    expect((error as GrantError).status).toEqual([GNTST_bad_domain]);
  });
});

describe('domain destruction, as xl destroy looks to a backend', () => {
  it("releases the dead domain's mappings of dom0's grants, removes its home and fires @releaseDomain", async () => {
    const shared = dom0.grants.share(guest.domid, 1, { readOnly: true });
    const held = guestServices.grants.map({ domid: 0, refs: shared.refs, writable: false });
    expectXenError(() => shared.unshare(), 'EBUSY');
    const released: string[] = [];
    const watch = await dom0.store.watch('@releaseDomain', {
      onEvent: (event) => released.push(event.path),
    });
    const home = await dom0.store.getDomainPath(guest.domid);
    expect(await dom0.store.exists(home)).toBe(true);
    await new Promise((resolve) => setImmediate(resolve));
    expect(released).toEqual(['@releaseDomain']); // the event every new watch gets
    sim.destroyDomain(guest.domid);
    await new Promise((resolve) => setImmediate(resolve));
    expect(released).toEqual(['@releaseDomain', '@releaseDomain']);
    expect(await dom0.store.exists(home)).toBe(false);
    expect(held.mapped).toBe(false);
    expect(guestServices.grants.liveMappings()).toBe(0);
    shared.unshare();
    await watch.close();
  });
});

describe('grant copy', () => {
  it('copies to and from granted pages with a status per segment', () => {
    const source = guestServices.grants.grantAccess(0, 11, { readOnly: true });
    const dest = guestServices.grants.grantAccess(0, 12);
    guest.memory.set([1, 2, 3, 4], 11 * 4096 + 100);
    const local = new Uint8Array(4);
    const status = dom0.grants.copy([
      {
        source: { kind: 'grant', domid: guest.domid, ref: source, offset: 100 },
        dest: { kind: 'local', bytes: local },
        length: 4,
      },
      {
        source: { kind: 'local', bytes: new Uint8Array([9, 8, 7]) },
        dest: { kind: 'grant', domid: guest.domid, ref: dest, offset: 4093 },
        length: 3,
      },
      {
        source: { kind: 'local', bytes: new Uint8Array(8) },
        dest: { kind: 'grant', domid: guest.domid, ref: source, offset: 0 },
        length: 8,
      },
      {
        source: { kind: 'local', bytes: new Uint8Array(8) },
        dest: { kind: 'grant', domid: guest.domid, ref: dest, offset: 4090 },
        length: 8,
      },
      {
        source: { kind: 'grant', domid: guest.domid, ref: 99_999, offset: 0 },
        dest: { kind: 'local', bytes: local },
        length: 4,
      },
    ]);
    expect(status).toEqual([
      GNTST_okay,
      GNTST_okay,
      GNTST_permission_denied,
      GNTST_bad_copy_arg,
      GNTST_bad_gntref,
    ]);
    expect([...local]).toEqual([1, 2, 3, 4]);
    expect([...guest.memory.subarray(12 * 4096 + 4093, 12 * 4096 + 4096)]).toEqual([9, 8, 7]);
    // The read-only page was not written by the refused segment.
    expect(guest.memory[11 * 4096]).toBe(0);
    // A copy does not leave the entry marked in use.
    expect(guest.grantEntry(dest).flags).toBe(GTF_permit_access);
  });
});

describe('frontend sharing', () => {
  it('shares pages that the backend can map, and refuses to unshare while mapped', () => {
    const shared = guestServices.grants.share(0, 2);
    shared.bytes[4096] = 0x55;
    const mapping = dom0.grants.map({ domid: guest.domid, refs: shared.refs, writable: true });
    expect(mapping.bytes[4096]).toBe(0x55);
    expectXenError(() => shared.unshare(), 'EBUSY');
    mapping.unmap();
    shared.unshare();
    expect(shared.refs.map((ref) => guest.grantEntry(ref).flags)).toEqual([0, 0]);
  });

  it('rejects frames outside guest RAM and refs outside the table', () => {
    expectXenError(() => guestServices.grants.grantAccess(0, 1 << 20), 'EINVAL');
    expectXenError(() => guestServices.grants.endAccess(1 << 20), 'EINVAL');
    expectXenError(() => guestServices.grants.endAccess(9), 'EINVAL');
  });
});

describe('foreign memory', () => {
  it('lets a privileged domain map guest frames and nobody else', () => {
    guest.memory[3 * 4096 + 1] = 0x99;
    const mapping = dom0.foreignMemory.map(guest.domid, [3n, 4n], { writable: true });
    expect(mapping.bytes[1]).toBe(0x99);
    mapping.bytes[4096] = 0x11;
    expect(guest.memory[4 * 4096]).toBe(0x11);
    mapping.unmap();
    expectXenError(() => mapping.unmap(), 'EINVAL');
    const other = sim.createDomain({ memoryBytes: 1 << 16 });
    expectXenError(() => other.services().foreignMemory.map(guest.domid, [0n], { writable: false }), 'EPERM');
    expectXenError(() => dom0.foreignMemory.map(guest.domid, [256n], { writable: false }), 'EINVAL');
    expectXenError(() => dom0.foreignMemory.map(77, [0n], { writable: false }), 'ESRCH');
  });
});
