// The XenBus handshake a split driver performs, end to end on the simulator: the toolstack
// creates the backend and frontend directories with libxl's permissions, the frontend
// grants a ring page and allocates an event channel, the backend maps and binds them, and
// both sides exchange data and doorbells. Nothing is mocked: every step is the service API.
import { afterEach, expect, it } from 'vitest';
import { createXenSimulator, type XenSimulator } from './xen-sim.js';

let sim: XenSimulator;

afterEach(async () => {
  await sim.close();
});

it('runs a frontend/backend handshake over xenstore, a granted ring and an event channel', async () => {
  sim = createXenSimulator();
  const guest = sim.createDomain({ memoryBytes: 1 << 20 });
  const backend = sim.services(0);
  const frontend = guest.services();
  const backendPath = `/local/domain/0/backend/virtio/${guest.domid}/0`;
  const frontendPath = `/local/domain/${guest.domid}/device/virtio/0`;

  // Toolstack (libxl): backend dir owned by dom0 and readable by the guest; frontend dir owned by the guest.
  // As libxl__device_generic_add: make each directory and set its permissions first, so the
  // entries written afterwards inherit them.
  await backend.store.transaction(async (tx) => {
    await tx.mkdir(backendPath);
    await tx.setPermissions(backendPath, [
      { domid: 0, access: 'none' },
      { domid: guest.domid, access: 'read' },
    ]);
    await tx.write(`${backendPath}/frontend`, frontendPath);
    await tx.write(`${backendPath}/state`, '1');
    await tx.mkdir(frontendPath);
    await tx.setPermissions(frontendPath, [
      { domid: guest.domid, access: 'none' },
      { domid: 0, access: 'read' },
    ]);
    await tx.write(`${frontendPath}/backend`, backendPath);
    await tx.write(`${frontendPath}/state`, '1');
  });
  await backend.store.write(`${backendPath}/state`, '2'); // InitWait

  // Backend waits for the frontend to reach Initialised (3).
  const watch = await backend.store.watch(`${frontendPath}/state`);
  const initialised = (async () => {
    for await (const _event of watch) if ((await backend.store.read(`${frontendPath}/state`)) === '3') return;
  })();

  // Frontend: read the backend id from its own tree, grant a ring page, allocate a port, publish.
  expect(await frontend.store.read('device/virtio/0/backend')).toBe(backendPath);
  expect(await frontend.store.read(`${backendPath}/state`)).toBe('2');
  const ringFrame = guest.allocatePages(1);
  const ringRef = frontend.grants.grantAccess(0, ringFrame);
  const frontendPort = frontend.events.bindUnboundPort(0);
  await frontend.store.transaction(async (tx) => {
    await tx.write('device/virtio/0/ring-ref', String(ringRef));
    await tx.write('device/virtio/0/event-channel', String(frontendPort.localPort));
    await tx.write('device/virtio/0/state', '3');
  });
  await initialised;
  await watch.close();

  // Backend: map the ring, bind the port, connect.
  const ref = Number(await backend.store.read(`${frontendPath}/ring-ref`));
  const port = Number(await backend.store.read(`${frontendPath}/event-channel`));
  const ring = backend.grants.map({ domid: guest.domid, refs: [ref], writable: true });
  const backendPort = backend.events.bindInterdomain(guest.domid, port);
  await backend.store.write(`${backendPath}/state`, '4');

  // A request from the guest, a response from the backend.
  const requestSeen = new Promise<number>((resolve) =>
    backendPort.onEvent(() => resolve(ring.bytes[0] as number)),
  );
  guest.memory[ringFrame * 4096] = 42;
  frontendPort.notify();
  expect(await requestSeen).toBe(42);
  const responseSeen = new Promise<number>((resolve) =>
    frontendPort.onEvent(() => resolve(guest.memory[ringFrame * 4096 + 1] as number)),
  );
  ring.bytes[1] = 43;
  backendPort.notify();
  expect(await responseSeen).toBe(43);

  // The guest cannot tamper with the backend's directory; it cannot revoke the ring while mapped.
  await expect(frontend.store.write(`${backendPath}/state`, '6')).rejects.toMatchObject({ code: 'EACCES' });
  expect(() => frontend.grants.endAccess(ringRef)).toThrow(expect.objectContaining({ code: 'EBUSY' }));

  // Disconnect in order: backend unmaps, then the guest can revoke.
  ring.unmap();
  backendPort.close();
  frontend.grants.endAccess(ringRef);
  expect(await backend.store.read(`${frontendPath}/state`)).toBe('3');
});
