// Shared set-up for the transport tests that run through the Xen simulator: a guest domain,
// dom0's services, an ioreq server and the memory strategies a backend can use.
import { createRegionsMemory, type GuestMemory } from '@xvio/grant-pool';
import {
  createIoreqServer,
  createXenSimulator,
  type IoreqServer,
  type SimDomain,
  type SimDomainType,
  type XenServices,
  type XenSimulator,
} from '@xvio/xen';
import { MemoryTemplateHost, TemplateDevice } from '../../dev-template/src/index.js';

export interface SimFixture {
  readonly sim: XenSimulator;
  readonly guest: SimDomain;
  readonly dom0: XenServices;
  readonly server: IoreqServer;
  close(): Promise<void>;
}

export async function simFixture(
  type: SimDomainType = 'hvm',
  options: { ioreq?: boolean } = {},
): Promise<SimFixture> {
  const sim = createXenSimulator();
  const guest = sim.createDomain({ type, memoryBytes: 16 * 1024 * 1024, vcpus: 2 });
  const dom0 = sim.services(0);
  const server =
    options.ioreq === false
      ? (undefined as unknown as IoreqServer)
      : createIoreqServer(dom0, { domid: guest.domid });
  return {
    sim,
    guest,
    dom0,
    server,
    close: async () => {
      if (options.ioreq !== false) await server.close();
      await sim.close();
    },
  };
}

/** Foreign mapping of all guest RAM once (grant_usage=0): the simplest backend memory. */
export function foreignMemory(fixture: SimFixture): GuestMemory {
  const frames = Array.from({ length: fixture.guest.ramPages }, (_, i) => BigInt(i));
  const mapping = fixture.dom0.foreignMemory.map(fixture.guest.domid, frames, { writable: true });
  return createRegionsMemory([
    { guestAddress: 0n, userAddress: 0n, bytes: mapping.bytes, unmap: () => mapping.unmap() },
  ]);
}

export function templateDevice(): TemplateDevice {
  return new TemplateDevice(new MemoryTemplateHost());
}

export const text = (value: string): Uint8Array => new TextEncoder().encode(value);
export const decode = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);
