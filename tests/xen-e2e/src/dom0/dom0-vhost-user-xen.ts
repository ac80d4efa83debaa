// vhost-user XEN_MMAP grant regions on a real hypervisor, all in dom0: one part of this
// process is a Xen vhost-user frontend and its "guest driver" (pages granted to domain 0 with
// gntalloc, as a user-space frontend grants; a split ring laid out in them with grant DMA
// addresses, `1<<63 | gref<<12 | offset`), the other is xvio's backend mapping each request
// through gntdev and unmapping it before completing it. Prints XVIO-MEASURE lines for the
// per-request round trip with grant map/unmap on real Xen.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRngDevice } from '@xvio/dev-rng';
import { GRANT_ADDRESS_FLAG } from '@xvio/grant-pool';
import {
  type DeviceContext,
  openChain,
  serviceQueue,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_VERSION_1,
  type VirtioDevice,
} from '@xvio/transport';
import { createXenRegionMapper, serveVhostUser, vhostUserWire } from '@xvio/transport/vhost-user';
import { type GrantTables, openNativeGrantTables, type SharedGrantPages } from '@xvio/xen';
// The project's vhost-user test frontend (real messages and fds over the socket).
import {
  createEventFd,
  drainEventFd,
  signalEventFd,
  TestFrontend,
  waitEventFd,
} from '../../../../packages/transport/src/vhost-user/vhost-user-frontend.js';
import { closeFd } from '../../../../packages/transport/src/vhost-user/vhost-user-libc.js';
import { assert } from './dom0-common.js';

const {
  encodeMemTable,
  encodeU64,
  encodeVringAddress,
  encodeVringState,
  ProtocolFeature,
  Request,
  VHOST_USER_F_PROTOCOL_FEATURES,
  XEN_MMAP_GRANT,
  XEN_MMAP_NO_ADVANCE_MAP,
} = vhostUserWire;

const PAGE = 4096;
const RING_SIZE = 16;
const DESC = 16;
const AVAIL = RING_SIZE * DESC;
const USER_BASE = 0x7e00_0000_0000n;
const VIRTQ_DESC_F_NEXT = 1;
const VIRTQ_DESC_F_WRITE = 2;

/** Echoes each request: readable bytes, reversed, into the writable buffers. */
function echoDevice(): VirtioDevice & { faults: number } {
  let context: DeviceContext | undefined;
  const device = {
    deviceType: 0x1f,
    name: 'echo0',
    queueMaxSizes: [RING_SIZE],
    features: 0n,
    configSize: 0,
    faults: 0,
    readConfig() {},
    writeConfig() {},
    activate(next: DeviceContext) {
      context = next;
    },
    notify(queueIndex: number) {
      const active = context;
      if (!active) return;
      const result = serviceQueue(active, queueIndex, (chain) => {
        const io = openChain(active.memory, chain);
        const input = new Uint8Array(io.reader.remaining);
        io.reader.read(input);
        io.writer.write(input.reverse());
        return io.close();
      });
      device.faults += result.faulted;
    },
    reset() {
      context = undefined;
    },
  };
  return device;
}

/** A page the driver owns: its bytes here, and the grant address of its first byte. */
interface Page {
  readonly bytes: Uint8Array;
  readonly ref: number;
}

const grantAddress = (page: Page, offset = 0) =>
  GRANT_ADDRESS_FLAG | (BigInt(page.ref) << 12n) | BigInt(offset);

/** The driver's end of one split ring: descriptors and avail in one granted page, used in another. */
class GrantRing {
  private availIdx = 0;
  private lastUsed = 0;
  private readonly view: DataView;
  private readonly usedView: DataView;

  constructor(
    readonly ring: Page,
    readonly used: Page,
  ) {
    ring.bytes.fill(0);
    used.bytes.fill(0);
    this.view = new DataView(ring.bytes.buffer, ring.bytes.byteOffset, PAGE);
    this.usedView = new DataView(used.bytes.buffer, used.bytes.byteOffset, PAGE);
  }

  get descAddress(): bigint {
    return grantAddress(this.ring);
  }
  get availAddress(): bigint {
    return grantAddress(this.ring, AVAIL);
  }
  get usedAddress(): bigint {
    return grantAddress(this.used);
  }

  /** Publishes a chain of (address, length, writable) descriptors from descriptor 0 on. */
  add(buffers: { address: bigint; length: number; writable: boolean }[]): void {
    const first = (this.availIdx * 4) % RING_SIZE;
    buffers.forEach((buffer, i) => {
      const at = (first + i) * DESC;
      const last = i === buffers.length - 1;
      this.view.setBigUint64(at, buffer.address, true);
      this.view.setUint32(at + 8, buffer.length, true);
      this.view.setUint16(
        at + 12,
        (buffer.writable ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT),
        true,
      );
      this.view.setUint16(at + 14, last ? 0 : first + i + 1, true);
    });
    this.view.setUint16(AVAIL + 4 + 2 * (this.availIdx % RING_SIZE), first, true);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.view.setUint16(AVAIL + 2, this.availIdx, true);
  }

  /** Used elements since the last call: (id, length). */
  collect(): { id: number; length: number }[] {
    const out: { id: number; length: number }[] = [];
    const usedIdx = this.usedView.getUint16(2, true);
    while (this.lastUsed !== usedIdx) {
      const at = 4 + 8 * (this.lastUsed % RING_SIZE);
      out.push({ id: this.usedView.getUint32(at, true), length: this.usedView.getUint32(at + 4, true) });
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
    }
    // EVENT_IDX: ask for a call at the next used element.
    this.view.setUint16(AVAIL + 4 + 2 * RING_SIZE, this.lastUsed, true);
    return out;
  }
}

/** One frontend connection with one running ring; the backend sees grant regions of domain 0. */
async function connectFrontend(
  socketPath: string,
  ring: GrantRing,
  maxRef: number,
  layout: 'on-demand' | 'rings-in-advance',
) {
  const frontend = new TestFrontend(socketPath);
  const offered = await frontend.getU64(Request.GET_FEATURES);
  const protocol = await frontend.getU64(Request.GET_PROTOCOL_FEATURES);
  assert(protocol & ProtocolFeature.XEN_MMAP, 'the backend does not offer XEN_MMAP');
  frontend.send(
    Request.SET_PROTOCOL_FEATURES,
    encodeU64(ProtocolFeature.REPLY_ACK | ProtocolFeature.XEN_MMAP),
  );
  const ack = async (request: number, payload?: Uint8Array, fds?: readonly number[]) => {
    const status = await frontend.acked(request, payload, fds);
    assert(status === 0n, `request ${request} refused`);
  };
  await ack(Request.SET_OWNER);
  await ack(
    Request.SET_FEATURES,
    encodeU64(offered & (VIRTIO_F_VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES | VIRTIO_F_EVENT_IDX)),
  );
  const end = GRANT_ADDRESS_FLAG + BigInt((maxRef + 1) * PAGE);
  const region = (guestAddress: bigint, size: bigint, userAddress: bigint, flags: number) => ({
    guestAddress,
    size,
    userAddress,
    mmapOffset: 0n,
    xenFlags: flags,
    domid: 0,
  });
  const onDemand = XEN_MMAP_GRANT | XEN_MMAP_NO_ADVANCE_MAP;
  let regions: ReturnType<typeof region>[];
  if (layout === 'on-demand') {
    regions = [region(GRANT_ADDRESS_FLAG, end - GRANT_ADDRESS_FLAG, USER_BASE, onDemand)];
  } else {
    // As xen-vhost-frontend does: ring pages mapped in advance, the rest on demand (address 0).
    const rings = [ring.ring, ring.used]
      .map((page, i) =>
        region(grantAddress(page), BigInt(PAGE), USER_BASE + BigInt(i) * 0x10_0000n, XEN_MMAP_GRANT),
      )
      .sort((a, b) => (a.guestAddress < b.guestAddress ? -1 : 1));
    regions = [];
    let at = GRANT_ADDRESS_FLAG;
    for (const r of rings) {
      if (r.guestAddress > at) regions.push(region(at, r.guestAddress - at, 0n, onDemand));
      regions.push(r);
      at = r.guestAddress + r.size;
    }
    if (at < end) regions.push(region(at, end - at, 0n, onDemand));
  }
  const user = (address: bigint) => {
    const r = regions.find((x) => address >= x.guestAddress && address < x.guestAddress + x.size);
    assert(r, `0x${address.toString(16)} in no region`);
    return r.userAddress + (address - r.guestAddress);
  };
  const regionFds = regions.map(() => createEventFd());
  try {
    await ack(Request.SET_MEM_TABLE, encodeMemTable(regions, true), regionFds);
  } finally {
    for (const fd of regionFds) closeFd(fd);
  }
  const kick = createEventFd();
  const call = createEventFd();
  await ack(Request.SET_VRING_NUM, encodeVringState(0, RING_SIZE));
  await ack(Request.SET_VRING_BASE, encodeVringState(0, 0));
  await ack(
    Request.SET_VRING_ADDR,
    encodeVringAddress({
      index: 0,
      flags: 0,
      desc: user(ring.descAddress),
      used: user(ring.usedAddress),
      avail: user(ring.availAddress),
      log: 0n,
    }),
  );
  await ack(Request.SET_VRING_KICK, encodeU64(0n), [kick]);
  await ack(Request.SET_VRING_ENABLE, encodeVringState(0, 1));
  await ack(Request.SET_VRING_CALL, encodeU64(0n), [call]);
  drainEventFd(call);
  return {
    frontend,
    regions: regions.length,
    /** Kicks and waits for the call that completes what was added. */
    async roundTrip(): Promise<{ id: number; length: number }[]> {
      signalEventFd(kick);
      await waitEventFd(call, 10_000);
      return ring.collect();
    },
    close() {
      frontend.close();
      closeFd(kick);
      closeFd(call);
    },
  };
}

function pagesOf(shared: SharedGrantPages): Page[] {
  return shared.refs.map((ref, i) => ({ ref, bytes: shared.bytes.subarray(i * PAGE, (i + 1) * PAGE) }));
}

/**
 * The check: echo over both region layouts (readable buffers on a read-only grant map
 * fine; a device-writable descriptor on it completes empty and leaves it untouched), rng
 * over the same kind of connection, the per-request round trip, and no grant mapping left
 * once each frontend has gone. `openGrants` opens a grant-table handle (native; the
 * simulator's dom0 handles to try the scenario off Xen).
 */
export async function scenarioVhostUserXenGrant(
  openGrants: () => GrantTables = openNativeGrantTables,
): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'xvio-vu-xen-'));
  const frontendGrants = openGrants();
  const backendGrants = openGrants();
  const shared = frontendGrants.share(0, 4);
  const readOnly = frontendGrants.share(0, 1, { readOnly: true });
  const notes: string[] = [];
  try {
    const [ringPage, usedPage, input, output] = pagesOf(shared) as [Page, Page, Page, Page];
    const [locked] = pagesOf(readOnly) as [Page];
    const maxRef = Math.max(...shared.refs, ...readOnly.refs);
    const mapper = createXenRegionMapper({ grants: backendGrants });
    for (const layout of ['on-demand', 'rings-in-advance'] as const) {
      const echo = echoDevice();
      const socketPath = join(dir, `echo-${layout}.sock`);
      const server = serveVhostUser({ socketPath, device: () => echo, xenMapper: mapper, once: true });
      const ring = new GrantRing(ringPage, usedPage);
      const connection = await connectFrontend(socketPath, ring, maxRef, layout);
      try {
        const ringMappings = backendGrants.liveMappings();
        for (let i = 0; i < input.bytes.length; i++) input.bytes[i] = (i * 13 + 1) & 0xff;
        locked.bytes.fill(0x5a);
        // 1. A readable buffer crossing nothing, a writable one: echoed.
        ring.add([
          { address: grantAddress(input, 100), length: 64, writable: false },
          { address: grantAddress(output, 200), length: 64, writable: true },
        ]);
        let used = await connection.roundTrip();
        assert(used.length === 1 && used[0]!.length === 64, `echo completed ${JSON.stringify(used)}`);
        const expected = input.bytes.slice(100, 164).reverse();
        assert(
          output.bytes.subarray(200, 264).every((b, i) => b === expected[i]),
          'echoed bytes differ',
        );
        // 2. The readable buffer on a read-only grant: mapped read-only, served.
        ring.add([
          { address: grantAddress(locked, 8), length: 32, writable: false },
          { address: grantAddress(output, 1024), length: 32, writable: true },
        ]);
        used = await connection.roundTrip();
        assert(used[0]?.length === 32 && output.bytes[1024] === 0x5a, 'read-only grant not readable');
        // 3. A device-writable descriptor on the read-only grant: a guest fault, nothing written.
        ring.add([{ address: grantAddress(locked, 8), length: 32, writable: true }]);
        used = await connection.roundTrip();
        assert(used[0]?.length === 0, `write on a read-only grant completed ${used[0]?.length} bytes`);
        assert(
          locked.bytes.every((b) => b === 0x5a),
          'a read-only grant was written',
        );
        assert(echo.faults === 1, `faults ${echo.faults}`);
        assert(backendGrants.liveMappings() === ringMappings, 'a request mapping outlived its request');
        // 4. Round trips with grant map/unmap per request.
        const rounds = 200;
        const start = performance.now();
        for (let i = 0; i < rounds; i++) {
          ring.add([
            { address: grantAddress(input, 0), length: 64, writable: false },
            { address: grantAddress(output, 0), length: 64, writable: true },
          ]);
          await connection.roundTrip();
        }
        const micros = ((performance.now() - start) * 1000) / rounds;
        console.log(`XVIO-MEASURE vhost-user-xen-grant-echo-64b-${layout} ${micros.toFixed(1)} us`);
        notes.push(
          `${layout}: ${connection.regions} regions, ${ringMappings} ring mappings, ${micros.toFixed(0)} us/request`,
        );
      } finally {
        const closed = new Promise<void>((resolve) => server.on('close', () => resolve()));
        connection.close();
        await closed;
      }
      assert(
        backendGrants.liveMappings() === 0,
        `${backendGrants.liveMappings()} grant mappings left after the frontend went`,
      );
    }
    // A real device over the same kind of connection.
    const rng = createRngDevice({ name: 'rng0', queueSize: RING_SIZE });
    const rngSocket = join(dir, 'rng.sock');
    const rngServer = serveVhostUser({
      socketPath: rngSocket,
      device: () => rng,
      xenMapper: mapper,
      once: true,
    });
    const ring = new GrantRing(ringPage, usedPage);
    const connection = await connectFrontend(rngSocket, ring, maxRef, 'on-demand');
    try {
      output.bytes.fill(0);
      ring.add([{ address: grantAddress(output, 512), length: 2048, writable: true }]);
      const used = await connection.roundTrip();
      assert(used[0]?.length === 2048, `rng completed ${JSON.stringify(used)}`);
      assert(new Set(output.bytes.subarray(512, 2560)).size > 200, 'rng bytes look constant');
    } finally {
      const closed = new Promise<void>((resolve) => rngServer.on('close', () => resolve()));
      connection.close();
      await closed;
    }
    assert(backendGrants.liveMappings() === 0, 'grant mappings left after the rng frontend went');
    return `${notes.join('; ')}; rng 2048 bytes; no mapping left after each disconnect`;
  } finally {
    backendGrants.close();
    shared.unshare();
    readOnly.unshare();
    frontendGrants.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
