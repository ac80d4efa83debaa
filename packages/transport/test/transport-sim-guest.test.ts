// attachSimGuest as the demo uses it: several devices per guest, two guests on different
// transports and memory strategies at once.
import { createXenSimulator } from '@xvio/xen';
import { describe, expect, it } from 'vitest';
import { attachSimGuest, type SimMemoryKind, type SimTransportKind } from '../src/testing/drivers/index.js';
import { decode, templateDevice, text } from './sim-fixtures.js';

describe('attachSimGuest', () => {
  it('serves two guests with three devices each over different transports and strategies', async () => {
    const sim = createXenSimulator();
    const setups: [SimTransportKind, SimMemoryKind, 'arm' | 'hvm' | 'pv'][] = [
      ['mmio', 'grant-copy', 'arm'],
      ['pci', 'grant-map', 'hvm'],
      ['xenbus', 'persistent-pool', 'pv'],
    ];
    const guests = [];
    for (const [transport, memory, type] of setups) {
      const guest = sim.createDomain({ type, memoryBytes: 32 * 1024 * 1024 });
      const devices = [templateDevice(), templateDevice(), templateDevice()];
      guests.push({ transport, attached: await attachSimGuest({ sim, guest, transport, memory, devices }) });
    }
    await Promise.all(
      guests.flatMap(({ transport, attached }) =>
        attached.devices.map(async (entry, index) => {
          for (let round = 0; round < 5; round++) {
            const payload = `${transport}${'abc'[index]}R${'vwxyz'[round]}`;
            const used = await entry.driver.request(0, [
              { data: text(payload) },
              { writable: 8 + payload.length },
            ]);
            expect(decode(used.written[0]!.subarray(8)).toLowerCase()).toBe(payload.toLowerCase());
          }
        }),
      ),
    );
    const spis = sim.interrupts
      .filter((e) => e.kind === 'irq' && e.level === 1)
      .map((e) => ('irq' in e ? e.irq : 0));
    expect(new Set(spis)).toEqual(new Set([33, 34, 35]));
    for (const { attached } of guests) {
      for (const entry of attached.devices) await entry.driver.quiesce();
      await attached.close();
      for (const entry of attached.devices) expect(entry.memory.liveMappings()).toBe(0);
    }
    expect(sim.unansweredIoreqs()).toEqual([]);
    await sim.close();
  });
});
