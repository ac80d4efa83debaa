// Random register traffic from a hostile guest: every access is answered, nothing throws,
// and a well-behaved driver can still reset the device and use it afterwards.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { PciGuestDriver } from '../src/testing/drivers/index.js';
import { type XenbusBackend, xenbusPaths } from '../src/xenbus/index.js';
import { decode, text } from './sim-fixtures.js';
import { createRig, MMIO_BASE, PCI_FUNCTION } from './transport-rig.js';

const access = fc.record({
  write: fc.boolean(),
  offset: fc.oneof(
    fc.integer({ min: 0, max: 0x1ff }),
    fc.constantFrom(0x30, 0x34, 0x38, 0x44, 0x50, 0x70, 0x80, 0x84, 0x100),
  ),
  size: fc.constantFrom(1, 2, 4, 8),
  value: fc.oneof(
    fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
    fc.constantFrom(0n, 1n, 3n, 0xfn, 0xffn, 0xffff_ffffn),
  ),
});

async function stillWorks(rig: Awaited<ReturnType<typeof createRig>>): Promise<void> {
  await rig.probe();
  const used = await rig.driver.request(0, [{ data: text('Alive') }, { writable: 13 }]);
  expect(decode(used.written[0]!.subarray(8))).toBe('aLIVE');
  await rig.driver.quiesce();
  expect(rig.fixture.sim.unansweredIoreqs()).toEqual([]);
}

describe('random register traffic', () => {
  it('virtio-mmio answers every access and recovers with a reset', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(access, { minLength: 1, maxLength: 60 }), async (accesses) => {
        const rig = await createRig('mmio', 'foreign', { noProbe: true });
        try {
          const vcpu = rig.fixture.guest.vcpu(0);
          for (const a of accesses) {
            const address = MMIO_BASE + BigInt(Math.min(a.offset, 0x200 - a.size));
            if (a.write) await vcpu.mmioWrite(address, a.size, a.value, { timeoutMs: 1000 });
            else await vcpu.mmioRead(address, a.size, { timeoutMs: 1000 });
          }
          await stillWorks(rig);
        } finally {
          await rig.close();
        }
      }),
      { numRuns: 40 },
    );
  });

  it('virtio-pci answers every config-space and BAR access and recovers with a reset', async () => {
    const pciAccess = fc.record({
      space: fc.constantFrom('config', 'bar'),
      write: fc.boolean(),
      offset: fc.integer({ min: 0, max: 0x5fff }),
      size: fc.constantFrom(1, 2, 4),
      value: fc.oneof(
        fc.integer({ min: 0, max: 0xffff_ffff }),
        fc.constantFrom(0, 1, 0xffff_ffff, 0x8000, 0x4006),
      ),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(pciAccess, { minLength: 1, maxLength: 60 }), async (accesses) => {
        const rig = await createRig('pci', 'foreign');
        try {
          const driver = rig.driver as PciGuestDriver;
          const vcpu = driver.vcpu;
          for (const a of accesses) {
            if (a.space === 'config') {
              const register = a.offset % 0x100;
              if (a.write)
                await vcpu.pciConfigWrite(PCI_FUNCTION, register, a.size, BigInt(a.value), {
                  timeoutMs: 1000,
                });
              else await vcpu.pciConfigRead(PCI_FUNCTION, register, a.size, { timeoutMs: 1000 });
            } else {
              const address = driver.barAddress + BigInt(a.offset);
              if (a.write) await vcpu.mmioWrite(address, a.size, BigInt(a.value), { timeoutMs: 1000 });
              else await vcpu.mmioRead(address, a.size, { timeoutMs: 1000 });
            }
          }
          await driver.quiesce();
          await driver.remove();
          await stillWorks(rig);
        } finally {
          await rig.close();
        }
      }),
      { numRuns: 40 },
    );
  });

  it('virtio-xenbus survives random frontend nodes: a good frontend connects afterwards, or, after state 0, the backend has cleaned up by itself', async () => {
    const key = fc.constantFrom(
      'driver-features',
      'event-channel',
      'queue-0/size',
      'queue-0/desc',
      'queue-0/driver',
      'queue-0/device',
      'queue-0/event-channel',
      'queue-7/size',
      'persistent-pool-table',
      'config-write',
      'state',
    );
    const value = fc.oneof(
      fc.constantFrom(
        '',
        '0',
        '1',
        '3',
        '4',
        '5',
        '6',
        '-1',
        '0x',
        '0x1000',
        '100000000',
        'ffffffffffffffffffffffffffffffffff',
        '1 0 zz',
        '7 2 0102',
      ),
      fc.string({ maxLength: 24 }).filter((text) => !text.includes('\0')),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(key, value), { minLength: 1, maxLength: 30 }), async (writes) => {
        const rig = await createRig('xenbus', 'grant-map', { noProbe: true });
        try {
          const services = rig.fixture.guest.services();
          const paths = xenbusPaths(0, rig.fixture.guest.domid, 0);
          for (const [name, text] of writes) await services.store.write(`${paths.frontend}/${name}`, text);
          await new Promise((resolve) => setTimeout(resolve, 5));
          const backend = rig.transport as XenbusBackend;
          if (backend.gone !== undefined) {
            // X.10.1: a frontend `state` of 0 (Unknown) means the frontend is gone, as Linux's
            // backends take it. The backend must have cleaned up by itself (the toolstack would
            // add the device again); nothing else a frontend writes may end the device.
            expect(backend.gone).toBe('frontend-unknown');
            expect(writes.some(([name, text]) => name === 'state' && text.trim() === '0')).toBe(true);
            expect(rig.memory.liveMappings()).toBe(0);
            expect(await services.store.exists(paths.backend)).toBe(false);
            await services.close();
            return;
          }
          // The frontend driver loads and starts from scratch, whatever state it finds.
          await services.close();
          await stillWorks(rig);
        } finally {
          await rig.close();
        }
      }),
      { numRuns: 25 },
    );
    // 25 fresh rigs take under a second alone; when QEMU rigs share the CPUs (the root test
    // run) they have taken 20-30 s, so the limit only guards against a hang.
  }, 120_000);
});
