import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { XenError } from './xen-errors.js';
import type { XenServices } from './xen-services.js';
import { createXenSimulator, type SimDomain, type XenSimulator } from './xen-sim.js';

let sim: XenSimulator;
let guest: SimDomain;
let dom0: XenServices;
let guestServices: XenServices;

beforeEach(() => {
  sim = createXenSimulator();
  guest = sim.createDomain({ memoryBytes: 1 << 16 });
  dom0 = sim.services(0);
  guestServices = guest.services();
});

afterEach(async () => {
  await sim.close();
});

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('event channels', () => {
  it('connects an unbound port and delivers notifications asynchronously both ways', async () => {
    const frontend = guestServices.events.bindUnboundPort(0);
    const backend = dom0.events.bindInterdomain(guest.domid, frontend.localPort);
    expect(frontend.remotePort).toBe(backend.localPort);
    const seen: string[] = [];
    frontend.onEvent(() => seen.push('frontend'));
    backend.onEvent(() => seen.push('backend'));
    frontend.notify();
    expect(seen).toEqual([]); // never delivered inside notify
    await tick();
    expect(seen).toEqual(['backend']);
    backend.notify();
    await tick();
    expect(seen).toEqual(['backend', 'frontend']);
  });

  it('coalesces notifications while pending and holds them while masked', async () => {
    const frontend = guestServices.events.bindUnboundPort(0);
    const backend = dom0.events.bindInterdomain(guest.domid, frontend.localPort, { autoUnmask: false });
    let count = 0;
    backend.onEvent(() => count++);
    frontend.notify();
    frontend.notify();
    frontend.notify();
    await tick();
    expect(count).toBe(1);
    // Delivered events mask the port until the consumer unmasks, like /dev/xen/evtchn.
    frontend.notify();
    await tick();
    expect(count).toBe(1);
    expect(sim.eventChannelBits(0, backend.localPort)).toEqual({ pending: true, masked: true });
    backend.unmask();
    await tick();
    expect(count).toBe(2);
  });

  it('yields events through the async iterator', async () => {
    const frontend = guestServices.events.bindUnboundPort(0);
    const backend = dom0.events.bindInterdomain(guest.domid, frontend.localPort);
    const iterator = backend[Symbol.asyncIterator]();
    const next = iterator.next();
    frontend.notify();
    expect(await next).toEqual({ value: backend.localPort, done: false });
    backend.close();
    expect(await iterator.next()).toEqual({ value: undefined, done: true });
  });

  it('returns the peer to unbound on close so it can be bound again', async () => {
    const frontend = guestServices.events.bindUnboundPort(0);
    const backend = dom0.events.bindInterdomain(guest.domid, frontend.localPort);
    backend.close();
    expect(frontend.remotePort).toBeUndefined();
    frontend.notify(); // dropped, no error
    const again = dom0.events.bindInterdomain(guest.domid, frontend.localPort);
    let got = 0;
    again.onEvent(() => got++);
    frontend.notify();
    await tick();
    expect(got).toBe(1);
  });

  it('rejects binding to ports that are not offered to us', () => {
    const offeredElsewhere = guestServices.events.bindUnboundPort(0);
    const other = sim.createDomain({ memoryBytes: 1 << 16 });
    const code = (fn: () => unknown) => {
      try {
        fn();
      } catch (error) {
        return XenError.isInstance(error) ? error.code : 'not-xen';
      }
      return 'none';
    };
    expect(code(() => other.services().events.bindInterdomain(guest.domid, offeredElsewhere.localPort))).toBe(
      'EINVAL',
    );
    expect(code(() => dom0.events.bindInterdomain(guest.domid, 4000))).toBe('EINVAL');
    expect(code(() => dom0.events.bindInterdomain(123, 1))).toBe('ESRCH');
    offeredElsewhere.close();
    expect(code(() => offeredElsewhere.notify())).toBe('EINVAL');
  });
});

describe('simulator interrupt log', () => {
  it('keeps the most recent interrupts only, and counts them all', async () => {
    const { createXenSimulator, SIM_INTERRUPT_LOG_LIMIT } = await import('./index.js');
    const sim = createXenSimulator();
    const guest = sim.createDomain({ type: 'hvm' });
    const dm = sim.services(0).deviceModel;
    const total = 3 * SIM_INTERRUPT_LOG_LIMIT;
    for (let i = 0; i < total; i++) dm.injectMsi(guest.domid, 0xfee0_0000n, i);
    expect(sim.interruptCount).toBe(total);
    expect(sim.interrupts.length).toBeLessThan(2 * SIM_INTERRUPT_LOG_LIMIT);
    expect(sim.interrupts.length).toBeGreaterThanOrEqual(SIM_INTERRUPT_LOG_LIMIT);
    expect(sim.interrupts.at(-1)).toMatchObject({ kind: 'msi', data: total - 1 });
    await sim.close?.();
  });
});
