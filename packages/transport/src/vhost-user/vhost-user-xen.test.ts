import { createRegionsMemory, GRANT_ADDRESS_FLAG, GuestMemoryError } from '@xvio/grant-pool';
import { createXenSimulator } from '@xvio/xen';
import { describe, expect, it } from 'vitest';
import { VhostUserError } from './vhost-user-errors.js';
import {
  XEN_MMAP_FOREIGN,
  XEN_MMAP_GRANT,
  XEN_MMAP_NO_ADVANCE_MAP,
  XEN_MMAP_NO_ADVANCE_MAP_RUST_VMM,
} from './vhost-user-wire.js';
import { createXenRegionMapper } from './vhost-user-xen.js';

describe('createXenRegionMapper', () => {
  it('maps a foreign region of a guest through ForeignMemory and unmaps it', async () => {
    const sim = createXenSimulator();
    const guest = sim.createDomain({ memoryBytes: 1 << 20 });
    for (let i = 0; i < 0x4000; i++) guest.memory[0x2000 + i] = (i * 13) & 0xff;
    const services = sim.services(0);
    const mapper = createXenRegionMapper({ foreignMemory: services.foreignMemory });
    const [piece, ...rest] = mapper.map({
      guestAddress: 0x2000n,
      size: 0x4000n,
      userAddress: 0x7f00_0000_2000n,
      mmapOffset: 0n,
      xenFlags: XEN_MMAP_FOREIGN,
      domid: guest.domid,
      fd: -1,
    });
    expect(rest).toEqual([]);
    expect(piece!.guestAddress).toBe(0x2000n);
    expect(piece!.userAddress).toBe(0x7f00_0000_2000n);
    expect(piece!.bytes.length).toBe(0x4000);
    expect(piece!.bytes[0x123]).toBe((0x123 * 13) & 0xff);
    piece!.bytes[7] = 0xaa; // the backend writes guest memory through the mapping
    expect(guest.memory[0x2007]).toBe(0xaa);
    piece!.unmap!();
    await services.close();
  });

  it('maps a foreign region flagged NO_ADVANCE_MAP per access, in bounded chunks', async () => {
    const sim = createXenSimulator();
    const guest = sim.createDomain({ memoryBytes: 4 << 20 });
    guest.memory[0x30_0005] = 0x77;
    const services = sim.services(0);
    const mapper = createXenRegionMapper({ foreignMemory: services.foreignMemory });
    const [piece, ...rest] = mapper.map({
      guestAddress: 0n,
      size: 4n << 20n,
      userAddress: 0x7f00_0000_0000n,
      mmapOffset: 0n,
      xenFlags: XEN_MMAP_FOREIGN | XEN_MMAP_NO_ADVANCE_MAP,
      domid: guest.domid,
      fd: -1,
    });
    expect(rest).toEqual([]);
    expect(piece!.bytes.length).toBe(0);
    const onDemand = piece!.onDemand!.memory;
    expect(onDemand.kind).toBe('foreign');
    expect(onDemand.counters.maps).toBe(0);
    const memory = createRegionsMemory([piece!]);
    const back = new Uint8Array(2);
    memory.read(0x30_0004n, back);
    expect([...back]).toEqual([0, 0x77]);
    memory.write(0x10n, Uint8Array.of(9));
    expect(guest.memory[0x10]).toBe(9);
    expect(onDemand.counters.maps).toBeGreaterThan(0);
    memory.clear();
    expect(onDemand.liveMappings()).toBe(0);
    await services.close();
  });

  it('refuses grant regions without grant tables, unaligned regions and frames beyond the guest, mapping nothing', async () => {
    const sim = createXenSimulator();
    const guest = sim.createDomain({ memoryBytes: 1 << 20 });
    const services = sim.services(0);
    const mapper = createXenRegionMapper({ foreignMemory: services.foreignMemory });
    const base = {
      guestAddress: 0n,
      size: 0x1000n,
      userAddress: 0x1000n,
      mmapOffset: 0n,
      domid: guest.domid,
      fd: -1,
    };
    const code = (call: () => unknown) => {
      try {
        call();
      } catch (error) {
        return VhostUserError.isInstance(error) ? error.code : String((error as { code?: string }).code);
      }
      return 'no error';
    };
    expect(code(() => mapper.map({ ...base, xenFlags: XEN_MMAP_GRANT }))).toBe('xen-mapping-unavailable');
    expect(code(() => mapper.map({ ...base, xenFlags: XEN_MMAP_FOREIGN, guestAddress: 0x800n }))).toBe(
      'invalid-region',
    );
    expect(
      code(() => mapper.map({ ...base, xenFlags: XEN_MMAP_FOREIGN, guestAddress: 0xff000n, size: 0x4000n })),
    ).toBe('EINVAL');
    await services.close();
  });
});

describe('createXenRegionMapper grant regions', () => {
  async function granted(pages: number, readOnly = false) {
    const sim = createXenSimulator();
    const guest = sim.createDomain({ memoryBytes: 1 << 20 });
    const services = sim.services(0);
    const shared = guest.services().grants.share(0, pages, { readOnly });
    shared.bytes.forEach((_, i) => {
      shared.bytes[i] = (i * 3) & 0xff;
    });
    return { sim, guest, services, shared, firstRef: shared.refs[0]! };
  }
  const grantAddress = (ref: number, offset = 0) =>
    GRANT_ADDRESS_FLAG | (BigInt(ref) << 12n) | BigInt(offset);

  it('maps a grant region in advance, writable, from the references its guest addresses name', async () => {
    const { guest, services, shared, firstRef } = await granted(2);
    expect(shared.refs).toEqual([firstRef, firstRef + 1]);
    const mapper = createXenRegionMapper({ grants: services.grants });
    const [piece, ...rest] = mapper.map({
      guestAddress: grantAddress(firstRef, 0x100),
      size: 0x1800n,
      userAddress: 0x7f00_0000_0100n,
      mmapOffset: 0n,
      xenFlags: XEN_MMAP_GRANT,
      domid: guest.domid,
      fd: -1,
    });
    expect(rest).toEqual([]);
    expect(piece!.bytes.length).toBe(0x1800);
    expect(piece!.bytes[0]).toBe(shared.bytes[0x100]);
    piece!.bytes[0x1000] = 0x5a;
    expect(shared.bytes[0x1100]).toBe(0x5a);
    expect(services.grants.liveMappings()).toBe(1);
    piece!.unmap!();
    expect(services.grants.liveMappings()).toBe(0);
    await services.close();
  });

  it('maps a NO_ADVANCE_MAP region per access (either flag spelling), read-only grants never written', async () => {
    const { guest, services, shared, firstRef } = await granted(2, true);
    for (const flag of [XEN_MMAP_NO_ADVANCE_MAP, XEN_MMAP_NO_ADVANCE_MAP_RUST_VMM]) {
      const mapper = createXenRegionMapper({ grants: services.grants });
      const [piece] = mapper.map({
        guestAddress: GRANT_ADDRESS_FLAG,
        size: BigInt(guest.grantEntries * 4096),
        userAddress: 0n,
        mmapOffset: 0n,
        xenFlags: XEN_MMAP_GRANT | flag,
        domid: guest.domid,
        fd: -1,
      });
      expect(piece!.bytes.length).toBe(0);
      expect(services.grants.liveMappings()).toBe(0);
      const memory = createRegionsMemory([piece!]);
      const back = new Uint8Array(8);
      memory.read(grantAddress(firstRef, 0xffc), back);
      expect([...back]).toEqual([...shared.bytes.subarray(0xffc, 0x1004)]);
      expect(memory.check(grantAddress(firstRef), 4, 'write')).toBe('read-only');
      expect(() => memory.write(grantAddress(firstRef), Uint8Array.of(1))).toThrowError(GuestMemoryError);
      expect(shared.bytes[0]).toBe(0);
      const mapped = memory.map([{ address: grantAddress(firstRef + 1, 8), length: 16, access: 'read' }]);
      expect(mapped.segments[0]![0]![0]).toBe(shared.bytes[0x1008]);
      expect(services.grants.liveMappings()).toBe(1);
      mapped.release();
      expect(services.grants.liveMappings()).toBe(0);
      // A reference that was never granted: a guest fault, nothing mapped.
      expect(memory.check(grantAddress(firstRef + 2), 1, 'read')).toBe('grant-not-permitted');
      memory.clear();
    }
    await services.close();
  });

  it('copies instead of mapping with the grant-copy strategy', async () => {
    const { guest, services, shared, firstRef } = await granted(1);
    const mapper = createXenRegionMapper({ grants: services.grants, grantStrategy: 'grant-copy' });
    const [piece] = mapper.map({
      guestAddress: GRANT_ADDRESS_FLAG,
      size: 0x10_0000n,
      userAddress: 0n,
      mmapOffset: 0n,
      xenFlags: XEN_MMAP_GRANT | XEN_MMAP_NO_ADVANCE_MAP,
      domid: guest.domid,
      fd: -1,
    });
    expect(piece!.onDemand!.memory.kind).toBe('grant-copy');
    const memory = createRegionsMemory([piece!]);
    memory.write(grantAddress(firstRef, 4), Uint8Array.of(7, 7));
    expect([...shared.bytes.subarray(4, 6)]).toEqual([7, 7]);
    expect(services.grants.liveMappings()).toBe(0);
    await services.close();
  });

  it('keeps pool pages mapped across requests with the persistent-pool strategy, until the region goes', async () => {
    const { guest, services, shared, firstRef } = await granted(2);
    const mapper = createXenRegionMapper({
      grants: services.grants,
      grantStrategy: 'persistent-pool',
      poolRefs: shared.refs,
    });
    const [piece] = mapper.map({
      guestAddress: GRANT_ADDRESS_FLAG,
      size: 0x10_0000n,
      userAddress: 0n,
      mmapOffset: 0n,
      xenFlags: XEN_MMAP_GRANT | XEN_MMAP_NO_ADVANCE_MAP,
      domid: guest.domid,
      fd: -1,
    });
    const memory = createRegionsMemory([piece!]);
    for (let round = 0; round < 3; round++) {
      const mapped = memory.map([{ address: grantAddress(firstRef, 16), length: 8, access: 'write' }]);
      mapped.segments[0]![0]!.fill(round + 1);
      mapped.release([8]);
    }
    expect(shared.bytes[16]).toBe(3);
    expect(services.grants.liveMappings()).toBeGreaterThan(0);
    memory.clear();
    expect(services.grants.liveMappings()).toBe(0);
    await services.close();
  });

  it('refuses grant regions it cannot take, mapping nothing', async () => {
    const { guest, services, firstRef } = await granted(1);
    const mapper = createXenRegionMapper({ grants: services.grants });
    const base = {
      guestAddress: grantAddress(firstRef),
      size: 0x1000n,
      userAddress: 0x1000n,
      mmapOffset: 0n,
      xenFlags: XEN_MMAP_GRANT,
      domid: guest.domid,
      fd: -1,
    };
    const code = (call: () => unknown) => {
      try {
        call();
      } catch (error) {
        return VhostUserError.isInstance(error) ? error.code : String(error);
      }
      return 'no error';
    };
    expect(code(() => mapper.map({ ...base, xenFlags: XEN_MMAP_GRANT | XEN_MMAP_FOREIGN }))).toBe(
      'invalid-region',
    );
    expect(code(() => mapper.map({ ...base, domid: 0x7ff0 }))).toBe('invalid-region');
    expect(code(() => mapper.map({ ...base, mmapOffset: 0x1000n }))).toBe('invalid-region');
    expect(code(() => mapper.map({ ...base, size: 0n }))).toBe('invalid-region');
    // Across bit 63, and references beyond a u32.
    expect(
      code(() => mapper.map({ ...base, guestAddress: GRANT_ADDRESS_FLAG - 0x1000n, size: 0x2000n })),
    ).toBe('invalid-region');
    expect(code(() => mapper.map({ ...base, guestAddress: grantAddress(0xffff_ffff), size: 0x2000n }))).toBe(
      'invalid-region',
    );
    // In advance: every reference must be granted, writable.
    expect(code(() => mapper.map({ ...base, size: 0x2000n }))).toBe('invalid-region');
    expect(services.grants.liveMappings()).toBe(0);
    expect(code(() => createXenRegionMapper({}).map(base))).toBe('xen-mapping-unavailable');
    expect(code(() => createXenRegionMapper({}).map({ ...base, xenFlags: XEN_MMAP_FOREIGN }))).toBe(
      'xen-mapping-unavailable',
    );
    await services.close();
  });
});
