import { createXenSimulator } from '@xvio/xen';
import { describe, expect, it } from 'vitest';
import { VhostUserError } from './vhost-user-errors.js';
import { XEN_MMAP_FOREIGN, XEN_MMAP_GRANT } from './vhost-user-wire.js';
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

  it('refuses grant regions, unaligned regions and frames beyond the guest, mapping nothing', async () => {
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
