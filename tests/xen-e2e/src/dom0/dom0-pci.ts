// Scenario 4 on the PCI transport: a stock HVM guest streams from xvio's virtio-rng (PCI
// function 00:05.0 served through xvio's ioreq server, foreign-mapped DMA) and is destroyed
// mid-transfer. xvio must clean up: device reset, foreign mappings released, ioreq server
// destroyed, and the domain must leave `xl list` (a foreign mapping kept would hold it).
import { createRngDevice } from '@xvio/dev-rng';
import { createGuestMemory } from '@xvio/grant-pool';
import { PciTransport } from '@xvio/transport/pci';
import { createIoreqServer, type XenServices } from '@xvio/xen';
import {
  assert,
  diagnose,
  domainNames,
  guestLines,
  readLog,
  relayGuest,
  sleep,
  writeHvmConfig,
  xl,
} from './dom0-common.js';

export async function scenarioPciDestroy(services: XenServices): Promise<string> {
  const name = 'xvio-hvm-stream';
  const { config, serial } = writeHvmConfig(name, 'xvio.mode=stream');
  const created = performance.now();
  const step = (what: string) =>
    console.log(`XVIO-STEP pci-destroy ${((performance.now() - created) / 1000).toFixed(1)} s ${what}`);
  xl('create', '-p', config);
  const domid = Number(xl('domid', name).trim());
  const errors: string[] = [];
  const server = createIoreqServer(
    { deviceModel: services.deviceModel, foreignMemory: services.foreignMemory, events: services.events },
    { domid, onError: (error) => errors.push(error.message) },
  );
  const memory = createGuestMemory({ strategy: 'foreign', domid }, services);
  const device = createRngDevice({});
  const transport = new PciTransport({
    server,
    device,
    memory,
    pci: { segment: 0, bus: 0, device: 5, function: 0 },
    onError: (error) => errors.push(String(error)),
  });
  server.enable();
  xl('unpause', name);
  const bytes = () => device.metrics().bytes ?? 0;
  const deadline = Date.now() + 400_000;
  let lastReport = Date.now();
  try {
    // Streaming: the guest reads /dev/hwrng in a loop; wait until well past its first reads.
    while (bytes() < 24 * 1024) {
      if (Date.now() > deadline || !domainNames().includes(name)) {
        diagnose(serial);
        throw new Error(`the guest never streamed (${bytes()} bytes, ${server.stats.answered} ioreqs)`);
      }
      if (Date.now() - lastReport > 20_000) {
        lastReport = Date.now();
        step(`waiting: ${server.stats.answered} ioreqs answered, ${bytes()} bytes`);
      }
      await sleep(500);
    }
    step(
      `streaming (${bytes()} bytes, ${memory.counters.maps} foreign maps); destroying the guest mid-transfer`,
    );
  } finally {
    if (domainNames().includes(name)) xl('destroy', name);
  }
  relayGuest(guestLines(readLog(serial)));
  await sleep(1000);
  const held = { chunks: (memory as { liveMappings?: () => number }).liveMappings?.(), names: domainNames() };
  // The backend's part when its guest is gone: release the function (device reset unmaps all
  // guest memory), destroy the ioreq server (Xen may already have: errors are reported, not thrown).
  transport.close();
  await server.close();
  const live = (memory as { liveMappings?: () => number }).liveMappings?.() ?? 0;
  let gone = false;
  for (let i = 0; i < 60 && !gone; i++) {
    gone = !domainNames().some((n) => n === name || n === '(null)');
    if (!gone) await sleep(500);
  }
  console.log(
    `XVIO-NOTE pci-destroy after destroy: ${JSON.stringify(held)} before cleanup; memory ${JSON.stringify(memory.counters)}, ioreq ${JSON.stringify(server.stats)}, errors ${JSON.stringify(errors.slice(0, 4))}`,
  );
  assert(live === 0, `${live} foreign mappings left`);
  assert(gone, `the domain stayed in xl list: ${domainNames().join(',')}`);
  return `HVM guest ${domid} destroyed while streaming (${bytes()} bytes served): device reset, foreign mappings released, ioreq server destroyed, xl list clean`;
}
