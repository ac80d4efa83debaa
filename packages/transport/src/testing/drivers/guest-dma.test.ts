import { decodeGrantAddress, PAGE_SIZE } from '@xvio/grant-pool';
import { createXenSimulator, GTF_readonly, type XenSimulator } from '@xvio/xen';
import { afterEach, describe, expect, it } from 'vitest';
import { grantDma, poolDma } from './guest-dma.js';

describe('guest grant DMA (grant-dma-ops.c)', () => {
  let sim: XenSimulator | undefined;
  afterEach(async () => {
    await sim?.close();
    sim = undefined;
  });

  it('grants a multi-page buffer with consecutive refs even around a hole, and revokes them on unmap', () => {
    sim = createXenSimulator();
    const guest = sim.createDomain({ type: 'hvm' });
    const grants = guest.services().grants;
    // Leave a one-entry hole: A, B granted, A revoked.
    const a = grants.grantAccess(0, 10);
    const b = grants.grantAccess(0, 11);
    grants.endAccess(a);
    const dma = grantDma(guest, 0, grants);
    const physical = 0x40_0000n + 100n; // page 0x400, offset 100, 3 pages long
    const mapping = dma.map(physical, 2 * PAGE_SIZE + 10, 'to-device');
    const { gref, offset } = decodeGrantAddress(mapping.address);
    expect(offset).toBe(100);
    const first = Number(gref);
    expect(first).toBeGreaterThan(b); // the hole (a) could not start a run of 3
    for (let page = 0; page < 3; page++) {
      const entry = guest.grantEntry(first + page);
      expect(entry.frame).toBe(0x400 + page);
      expect(entry.domid).toBe(0);
      expect(entry.flags & GTF_readonly).toBe(GTF_readonly);
    }
    expect(guest.grantEntry(a).flags).toBe(0); // the filler was released
    mapping.unmap();
    for (let page = 0; page < 3; page++) expect(guest.grantEntry(first + page).flags).toBe(0);
    expect(dma.counters).toMatchObject({ grants: 3, revoked: 3, revokeFailures: 0 });
  });

  it('reports a revocation the backend blocks by keeping the page mapped', () => {
    sim = createXenSimulator();
    const guest = sim.createDomain({ type: 'hvm' });
    const dom0 = sim.services(0);
    const dma = grantDma(guest, 0);
    const mapping = dma.map(0x50_0000n, 64, 'from-device');
    const { gref } = decodeGrantAddress(mapping.address);
    const held = dom0.grants.map({ domid: guest.domid, refs: [Number(gref)], writable: true });
    expect(() => mapping.unmap()).toThrow(/grant-still-in-use/);
    expect(dma.counters.revokeFailures).toBe(1);
    held.unmap();
  });

  it('addresses pool pages without granting per request', () => {
    sim = createXenSimulator();
    const guest = sim.createDomain({ type: 'hvm' });
    const pool = poolDma(guest, 0, 8);
    const frame = pool.allocatePages?.(2);
    expect(frame).toBeDefined();
    const grantsBefore = pool.counters.grants;
    const mapping = pool.map(BigInt((frame as number) * PAGE_SIZE + 8), PAGE_SIZE, 'to-device');
    // The first allocation is the pool's first page, so the address names the pool's first ref.
    expect(Number(decodeGrantAddress(mapping.address).gref)).toBe(pool.refs[0]);
    mapping.unmap();
    expect(pool.counters.grants).toBe(grantsBefore);
    expect(pool.freePages?.(frame as number, 2)).toBe(true);
    pool.release();
  });
});
