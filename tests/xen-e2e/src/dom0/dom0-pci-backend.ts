// A stand-alone xvio backend process in dom0 (its own bundle, dom0-pci-backend.mjs): serves a
// virtio-rng as a PCI function of an HVM guest through its own ioreq server, and persists the
// transport state (ioreq server id + `PciTransport.snapshot()`) to a file after every change
// the driver makes. Started with `--adopt`, it takes over the ioreq server and the function
// that a previous backend process (killed) left in Xen, restores the state and serves on.
//
//   node dom0-pci-backend.mjs --domid 3 --pci 0:0:7.0 --state /tmp/rng.state [--adopt]
//
// Prints `XVIO-BACKEND ready server=<id> adopted=<bool>` once serving, then a line
// `XVIO-BACKEND served <bytes> answered <n> resumed <n> status <s>` every second.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createRngDevice } from '@xvio/dev-rng';
import { createGuestMemory } from '@xvio/grant-pool';
import {
  PciTransport,
  type PciTransportState,
  parsePciTransportState,
  serializePciTransportState,
} from '@xvio/transport/pci';
import { adoptIoreqServer, createIoreqServer, openNativeXenServices } from '@xvio/xen';

const { values } = parseArgs({
  options: {
    domid: { type: 'string' },
    pci: { type: 'string', default: '0:0:7.0' },
    state: { type: 'string' },
    adopt: { type: 'boolean', default: false },
  },
});
const domid = Number(values.domid);
const stateFile = values.state;
const pciMatch = /^(\d+):(\d+):(\d+)\.(\d+)$/.exec(values.pci ?? '');
if (!Number.isInteger(domid) || domid <= 0 || !stateFile || !pciMatch) {
  console.error('usage: dom0-pci-backend --domid N --pci S:B:D.F --state FILE [--adopt]');
  process.exit(2);
}
const pci = {
  segment: Number(pciMatch[1]),
  bus: Number(pciMatch[2]),
  device: Number(pciMatch[3]),
  function: Number(pciMatch[4]),
};

/** The persisted record: which ioreq server, and the function's transport state. */
interface SavedBackend {
  server: number;
  transport: string;
}

const services = await openNativeXenServices();
let restore: { server: number; state: PciTransportState } | undefined;
if (values.adopt) {
  const saved = JSON.parse(readFileSync(stateFile, 'utf8')) as SavedBackend;
  restore = { server: saved.server, state: parsePciTransportState(saved.transport) };
}
const onError = (error: unknown) => console.log(`XVIO-BACKEND error ${String(error)}`);
const server = restore
  ? adoptIoreqServer(services, { domid, id: restore.server, onError })
  : createIoreqServer(services, { domid, onError });
const device = createRngDevice({});
const memory = createGuestMemory({ strategy: 'foreign', domid }, services);
const persist = (transport: PciTransport) => {
  // Written whole and renamed: a process killed mid-write leaves the previous state intact.
  const record: SavedBackend = {
    server: server.id,
    transport: serializePciTransportState(transport.snapshot()),
  };
  writeFileSync(`${stateFile}.new`, JSON.stringify(record));
  renameSync(`${stateFile}.new`, stateFile);
};
const transport = new PciTransport({
  server,
  device,
  memory,
  pci,
  onError,
  onStateChange: persist,
  // Split rings only: a split queue resumes at its used ring's idx, which lives in guest
  // memory; a packed ring's position and wrap counters die with the process (a restored
  // packed queue can only be reset: NEEDS_RESET).
  packed: false,
  ...(restore ? { restore: restore.state } : {}),
});
persist(transport);
server.enable();
console.log(
  `XVIO-BACKEND ready server=${server.id} adopted=${server.adopted} status=${transport.controller.status} features=0x${transport.controller.driverFeatures.toString(16)}`,
);

const report = setInterval(() => {
  console.log(
    `XVIO-BACKEND served ${device.metrics().bytes ?? 0} answered ${server.stats.answered} resumed ${server.stats.resumed} status ${transport.controller.status}`,
  );
}, 1000);

process.on('SIGTERM', () => {
  clearInterval(report);
  transport.close();
  void server.close().then(async () => {
    await services.close();
    process.exit(0);
  });
});
