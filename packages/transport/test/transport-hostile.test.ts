// Hostile register and xenstore sequences against each transport: every one is answered as
// the spec says, counted, and leaves no vCPU waiting and the backend working.
import { afterEach, describe, expect, it } from 'vitest';
import { type MmioTransport, mmioRegister as R } from '../src/mmio/index.js';
import { pciRegister as P, type PciTransport } from '../src/pci/index.js';
import type { MmioGuestDriver, PciGuestDriver, XenbusGuestDriver } from '../src/testing/drivers/index.js';
import { VIRTIO_F_ACCESS_PLATFORM, VIRTIO_F_VERSION_1 } from '../src/virtio-features.js';
import {
  STATUS_ACKNOWLEDGE,
  STATUS_DEVICE_NEEDS_RESET,
  STATUS_DRIVER,
  STATUS_DRIVER_OK,
  STATUS_FEATURES_OK,
} from '../src/virtio-status.js';
import {
  XENBUS_STATE_CLOSED,
  XENBUS_STATE_CLOSING,
  XENBUS_STATE_CONNECTED,
  XENBUS_STATE_INIT_WAIT,
  XENBUS_STATE_INITIALISED,
  XENBUS_STATE_INITIALISING,
  XenbusBackend,
  xenbusPaths,
} from '../src/xenbus/index.js';
import { decode, text } from './sim-fixtures.js';
import { createRig, MMIO_BASE, type Rig } from './transport-rig.js';

const ACK_DRIVER = STATUS_ACKNOWLEDGE | STATUS_DRIVER;
const FEATURES_DONE = ACK_DRIVER | STATUS_FEATURES_OK;

let rig: Rig | undefined;
afterEach(async () => {
  await rig?.close();
  rig = undefined;
});

function noVcpuWaiting(current: Rig): void {
  expect(current.fixture.sim.unansweredIoreqs()).toEqual([]);
}

describe('virtio-mmio against a hostile driver', () => {
  const setup = async () => {
    rig = await createRig('mmio', 'foreign', { noProbe: true });
    const vcpu = rig.fixture.guest.vcpu(0);
    const read = (offset: number, size = 4) => vcpu.mmioRead(MMIO_BASE + BigInt(offset), size).then(Number);
    const write = (offset: number, value: number, size = 4) =>
      vcpu.mmioWrite(MMIO_BASE + BigInt(offset), size, BigInt(value));
    return { current: rig, transport: rig.transport as MmioTransport, read, write };
  };

  it('answers wrong-size register accesses with 0 and drops wrong-size writes', async () => {
    const { current, transport, read, write } = await setup();
    expect(await read(R.MMIO_MAGIC_VALUE)).toBe(R.MMIO_MAGIC);
    expect(await read(R.MMIO_MAGIC_VALUE, 1)).toBe(0);
    expect(await read(R.MMIO_MAGIC_VALUE, 8)).toBe(0);
    expect(await read(R.MMIO_VERSION + 2, 2)).toBe(0);
    await write(R.MMIO_STATUS, STATUS_ACKNOWLEDGE, 2);
    expect(await read(R.MMIO_STATUS)).toBe(0);
    expect(transport.counters.wrongSize).toBe(4);
    expect(await read(0x0f0)).toBe(0); // a reserved hole
    expect(transport.counters.unknownRegister).toBe(1);
    noVcpuWaiting(current);
  });

  it('ignores queue and feature writes in the wrong status, and out-of-range QueueSel', async () => {
    const { current, transport, read, write } = await setup();
    await write(R.MMIO_QUEUE_SEL, 0);
    await write(R.MMIO_QUEUE_NUM, 8); // before FEATURES_OK
    await write(R.MMIO_STATUS, STATUS_DRIVER_OK); // skipping ACKNOWLEDGE..FEATURES_OK
    expect(await read(R.MMIO_STATUS)).toBe(0);
    expect(transport.controller.queue(0)?.size).toBe(transport.controller.queueMaxSize(0));
    await write(R.MMIO_QUEUE_SEL, 99);
    expect(await read(R.MMIO_QUEUE_NUM_MAX)).toBe(0);
    expect(await read(R.MMIO_QUEUE_READY)).toBe(0);
    await write(R.MMIO_QUEUE_READY, 1);
    await write(R.MMIO_QUEUE_NOTIFY, 1234);
    await write(R.MMIO_STATUS, STATUS_ACKNOWLEDGE);
    await write(R.MMIO_STATUS, ACK_DRIVER);
    await write(R.MMIO_DRIVER_FEATURES_SEL, 1);
    await write(R.MMIO_DRIVER_FEATURES, Number(VIRTIO_F_VERSION_1 >> 32n));
    await write(R.MMIO_STATUS, FEATURES_DONE);
    expect(await read(R.MMIO_STATUS)).toBe(FEATURES_DONE);
    await write(R.MMIO_DRIVER_FEATURES, 0xffff_ffff); // after FEATURES_OK: ignored
    expect(transport.controller.driverFeatures).toBe(VIRTIO_F_VERSION_1);
    expect(transport.counters.ignoredQueueWrites).toBe(1);
    expect(transport.counters.badQueueSel).toBe(2);
    expect(transport.counters.ignoredWrites).toBe(2);
    expect(transport.controller.metrics.ignoredKicks).toBe(1);
    noVcpuWaiting(current);
  });

  it('answers an unaligned ring with DEVICE_NEEDS_RESET and a config interrupt, then recovers', async () => {
    const { current, read, write } = await setup();
    await write(R.MMIO_STATUS, STATUS_ACKNOWLEDGE);
    await write(R.MMIO_STATUS, ACK_DRIVER);
    await write(R.MMIO_DRIVER_FEATURES_SEL, 1);
    await write(R.MMIO_DRIVER_FEATURES, 1);
    await write(R.MMIO_STATUS, FEATURES_DONE);
    await write(R.MMIO_QUEUE_SEL, 0);
    await write(R.MMIO_QUEUE_NUM, 16);
    await write(R.MMIO_QUEUE_DESC_LOW, 0x10_0001); // desc must be 16-byte aligned (2.7)
    await write(R.MMIO_QUEUE_DRIVER_LOW, 0x10_1000);
    await write(R.MMIO_QUEUE_DEVICE_LOW, 0x10_2000);
    await write(R.MMIO_QUEUE_READY, 1);
    await write(R.MMIO_STATUS, FEATURES_DONE | STATUS_DRIVER_OK);
    expect(await read(R.MMIO_STATUS)).toBe(FEATURES_DONE | STATUS_DRIVER_OK | STATUS_DEVICE_NEEDS_RESET);
    expect(await read(R.MMIO_INTERRUPT_STATUS)).toBe(R.MMIO_INT_CONFIG);
    expect(current.fixture.sim.interrupts.at(-1)).toMatchObject({ kind: 'irq', irq: 33, level: 1 });
    await write(R.MMIO_INTERRUPT_ACK, R.MMIO_INT_CONFIG);
    expect(current.fixture.sim.interrupts.at(-1)).toMatchObject({ kind: 'irq', irq: 33, level: 0 });
    await write(R.MMIO_STATUS, 0);
    expect(await read(R.MMIO_STATUS)).toBe(0);
    await current.probe();
    const used = await current.driver.request(0, [{ data: text('Again') }, { writable: 13 }]);
    expect(decode(used.written[0]!.subarray(8))).toBe('aGAIN');
    await current.driver.quiesce();
    noVcpuWaiting(current);
  });

  it('answers the INVALIDATE broadcast and floats reads once the window is released', async () => {
    const { current, transport, read } = await setup();
    await current.fixture.guest.broadcastInvalidate({ timeoutMs: 1000 });
    expect(current.fixture.server.stats.invalidates).toBeGreaterThanOrEqual(1);
    transport.close();
    expect(await read(R.MMIO_MAGIC_VALUE)).toBe(0xffff_ffff);
    noVcpuWaiting(current);
  });

  it('delivers an MSI on x86 and answers config reads beyond the device config with 0', async () => {
    rig = await createRig('mmio', 'foreign', { guestType: 'hvm' });
    const driver = rig.driver as MmioGuestDriver;
    await driver.request(0, [{ data: text('x') }, { writable: 9 }]);
    await driver.quiesce();
    expect(rig.fixture.sim.interrupts.some((e) => e.kind === 'msi' && e.data === 0x30)).toBe(true);
    expect(await driver.read32(R.MMIO_CONFIG + 0x40)).toBe(0);
    expect((rig.transport as MmioTransport).counters.configOutOfRange).toBe(1);
  });
});

describe('virtio-pci against a hostile driver', () => {
  it('follows a BAR moved under traffic and floats the old window', async () => {
    rig = await createRig('pci', 'grant-map');
    const driver = rig.driver as PciGuestDriver;
    const transport = rig.transport as PciTransport;
    const old = driver.barAddress;
    const head = driver.queue(0).add([{ data: text('Moved') }, { writable: 13 }]);
    expect(head).toBeDefined();
    await driver.moveBar(0xd000_0000n);
    expect(transport.barAddress).toBe(0xd000_0000n);
    expect(transport.counters.barReleases).toBeGreaterThanOrEqual(1);
    await driver.kick(0);
    const [used] = await driver.waitUsed(0, 1);
    expect(decode(used!.written[0]!.subarray(8))).toBe('mOVED');
    expect(await driver.vcpu.mmioRead(old, 4)).toBe(0xffff_ffffn);
    await driver.quiesce();
    noVcpuWaiting(rig);
  });

  it('holds messages of a masked MSI-X vector as pending and sends them on unmask', async () => {
    rig = await createRig('pci', 'foreign');
    const driver = rig.driver as PciGuestDriver;
    const transport = rig.transport as PciTransport;
    await driver.maskVector(1, true);
    const sent = transport.counters.msiSent;
    driver.queue(0).add([{ data: text('Masked') }, { writable: 14 }]);
    await driver.kick(0);
    expect(transport.counters.msiPending).toBe(1);
    expect(transport.counters.msiSent).toBe(sent);
    const table = Number(await driver.configRead(P.CAP_MSIX_AT + P.MSIX_PBA, 4)) & ~7;
    expect(await driver.vcpu.mmioRead(driver.barAddress + BigInt(table), 4)).toBe(0b10n);
    await driver.maskVector(1, false);
    expect(transport.counters.msiSent).toBe(sent + 1);
    const [used] = await driver.waitUsed(0, 1);
    expect(used!.length).toBe(14);
    await driver.quiesce();
    noVcpuWaiting(rig);
  });

  it('sends a Xen pirq MSI (vector field 0) even though the table entry stays masked, as Linux HVM guests leave it', async () => {
    rig = await createRig('pci', 'foreign');
    const driver = rig.driver as PciGuestDriver;
    const transport = rig.transport as PciTransport;
    const table = Number(await driver.configRead(P.CAP_MSIX_AT + P.MSIX_TABLE, 4)) & ~7;
    const entry = driver.barAddress + BigInt(table + 1 * P.MSIX_ENTRY_SIZE);
    // Linux's xen_hvm_setup_msi_irqs: the pirq rides in the address, the data's vector is 0;
    // masking goes through the event channel, so the table's mask bit is never cleared.
    await driver.vcpu.mmioWrite(entry + BigInt(P.MSIX_ENTRY_ADDRESS_LOW), 4, 0xfee0_5000n);
    await driver.vcpu.mmioWrite(entry + BigInt(P.MSIX_ENTRY_DATA), 4, 0n);
    await driver.maskVector(1, true);
    const sent = transport.counters.msiSent;
    driver.queue(0).add([{ data: text('Pirq') }, { writable: 12 }]);
    await driver.kick(0);
    expect(transport.counters.msiSent).toBe(sent + 1);
    expect(
      rig.fixture.sim.interrupts.some((e) => e.kind === 'msi' && e.data === 0 && e.address === 0xfee0_5000n),
    ).toBe(true);
    await driver.quiesce();
    noVcpuWaiting(rig);
  });

  it('refuses bad vectors, wrong widths and out-of-range queue_select; the cfg window reaches BAR 0', async () => {
    rig = await createRig('pci', 'foreign');
    const driver = rig.driver as PciGuestDriver;
    const transport = rig.transport as PciTransport;
    expect(await driver.read(P.COMMON_DEVICE_FEATURE, 1)).toBe(0);
    expect(transport.counters.wrongSize).toBe(1);
    await driver.write(P.COMMON_QUEUE_SELECT, 2, 7);
    expect(await driver.read(P.COMMON_QUEUE_SIZE, 2)).toBe(0);
    await driver.write(P.COMMON_QUEUE_MSIX_VECTOR, 2, 1);
    expect(transport.counters.badQueueSel).toBe(1);
    await driver.write(P.COMMON_CONFIG_MSIX_VECTOR, 2, 200);
    expect(await driver.read(P.COMMON_CONFIG_MSIX_VECTOR, 2)).toBe(P.VIRTIO_MSI_NO_VECTOR);
    expect(transport.counters.badVectors).toBe(1);
    await driver.configWrite(P.CAP_PCI_CFG_AT + P.CAP_BAR, 1, 0);
    await driver.configWrite(P.CAP_PCI_CFG_AT + P.CAP_OFFSET, 4, P.BAR_COMMON_OFFSET + P.COMMON_NUM_QUEUES);
    await driver.configWrite(P.CAP_PCI_CFG_AT + P.CAP_LENGTH, 4, 2);
    expect(await driver.configRead(P.CAP_PCI_CFG_AT + P.CAP_PCI_CFG_DATA, 4)).toBe(1);
    expect(await driver.configRead(0x100, 4)).toBe(0); // no extended capabilities
    expect(await driver.configRead(P.PCI_DEVICE_ID, 2)).toBe(P.VIRTIO_PCI_DEVICE_BASE + 0xbf);
    await driver.configWrite(P.PCI_DEVICE_ID, 2, 0x1234); // read-only
    expect(await driver.configRead(P.PCI_DEVICE_ID, 2)).toBe(P.VIRTIO_PCI_DEVICE_BASE + 0xbf);
    noVcpuWaiting(rig);
  });

  it('masks INTx with the command register when MSI-X is off', async () => {
    rig = await createRig('pci', 'foreign', { msix: false });
    const driver = rig.driver as PciGuestDriver;
    const command = await driver.configRead(P.PCI_COMMAND, 2);
    await driver.configWrite(P.PCI_COMMAND, 2, command | P.PCI_COMMAND_INTX_DISABLE);
    const before = rig.fixture.sim.interrupts.length;
    driver.queue(0).add([{ data: text('quiet') }, { writable: 13 }]);
    await driver.kick(0);
    const used = await driver.waitUsed(0, 1);
    expect(used).toHaveLength(1);
    expect(rig.fixture.sim.interrupts.slice(before).filter((e) => e.kind === 'pci-intx')).toEqual([]);
  });
});

describe('virtio-xenbus against a hostile frontend', () => {
  const manualFrontend = async () => {
    rig = await createRig('xenbus', 'grant-map', { noProbe: true });
    const store = rig.fixture.guest.services().store;
    const paths = xenbusPaths(0, rig.fixture.guest.domid, 0);
    const backend = rig.transport as XenbusBackend;
    const backendState = () => store.read(`${paths.backend}/state`).then(Number);
    return { current: rig, store, paths, backend, backendState };
  };

  it('refuses malformed and unoffered features with Closing and an error, then waits again', async () => {
    const { store, paths, backend, backendState } = await manualFrontend();
    await store.write(`${paths.frontend}/driver-features`, 'not hex');
    await store.write(`${paths.frontend}/state`, String(XENBUS_STATE_INITIALISED));
    await backend.settled();
    await new Promise((resolve) => setTimeout(resolve, 20));
    await backend.settled();
    expect(await backendState()).toBe(XENBUS_STATE_CLOSING);
    expect(await store.read(`${paths.backend}/error`)).toMatch(/driver-features/);
    await store.write(`${paths.frontend}/state`, String(XENBUS_STATE_INITIALISING));
    await new Promise((resolve) => setTimeout(resolve, 20));
    await backend.settled();
    expect(await backendState()).toBe(XENBUS_STATE_INIT_WAIT);
    await store.write(
      `${paths.frontend}/driver-features`,
      (VIRTIO_F_VERSION_1 | VIRTIO_F_ACCESS_PLATFORM | (1n << 60n)).toString(16),
    );
    await store.write(`${paths.frontend}/event-channel`, '1');
    await store.write(`${paths.frontend}/state`, String(XENBUS_STATE_INITIALISED));
    await new Promise((resolve) => setTimeout(resolve, 20));
    await backend.settled();
    expect(await backendState()).toBe(XENBUS_STATE_CLOSING);
    expect(await store.read(`${paths.backend}/error`)).toMatch(/features-rejected/);
    expect(backend.counters.refused).toBe(2);
  });

  it('refuses a driver without VIRTIO_F_ACCESS_PLATFORM when it only reaches grants', async () => {
    const { store, paths, backend, backendState } = await manualFrontend();
    await store.write(`${paths.frontend}/driver-features`, VIRTIO_F_VERSION_1.toString(16));
    await store.write(`${paths.frontend}/state`, String(XENBUS_STATE_INITIALISED));
    await new Promise((resolve) => setTimeout(resolve, 20));
    await backend.settled();
    expect(await backendState()).toBe(XENBUS_STATE_CLOSING);
    expect(await store.read(`${paths.backend}/error`)).toMatch(/lacks VIRTIO_F_ACCESS_PLATFORM/);
  });

  it('refuses an event channel it cannot bind', async () => {
    const { store, paths, backend, backendState } = await manualFrontend();
    await store.write(
      `${paths.frontend}/driver-features`,
      (VIRTIO_F_VERSION_1 | VIRTIO_F_ACCESS_PLATFORM).toString(16),
    );
    await store.write(`${paths.frontend}/event-channel`, '4000');
    await store.write(`${paths.frontend}/state`, String(XENBUS_STATE_INITIALISED));
    await new Promise((resolve) => setTimeout(resolve, 20));
    await backend.settled();
    expect(await backendState()).toBe(XENBUS_STATE_CLOSING);
    expect(await store.read(`${paths.backend}/error`)).toMatch(/event-channel/);
  });

  it('reconnects after the backend restarts', async () => {
    rig = await createRig('xenbus', 'grant-map');
    const driver = rig.driver as XenbusGuestDriver;
    const first = rig.transport as XenbusBackend;
    expect(await driver.backendState()).toBe(XENBUS_STATE_CONNECTED);
    // The backend process dies: its mappings and channels go with it.
    first.abandon();
    const reconnected = driver.reconnected();
    const second = new XenbusBackend({
      services: rig.fixture.dom0,
      backendDomid: 0,
      frontendDomid: rig.fixture.guest.domid,
      devid: 0,
      device: rig.device,
      memory: rig.memory,
    });
    await second.start();
    await reconnected;
    expect(driver.reconnects).toBe(1);
    expect(await driver.backendState()).toBe(XENBUS_STATE_CONNECTED);
    const used = await driver.request(0, [{ data: text('Back') }, { writable: 12 }]);
    expect(decode(used.written[0]!.subarray(8))).toBe('bACK');
    await driver.remove();
    await second.close();
  });
});

describe('virtio-xenbus device removal', () => {
  it('closes both ends when the toolstack sets online to 0', async () => {
    rig = await createRig('xenbus', 'grant-map');
    const driver = rig.driver as XenbusGuestDriver;
    const backend = rig.transport as XenbusBackend;
    await rig.fixture.dom0.store.write(`${backend.paths.backend}/online`, '0');
    for (let i = 0; i < 200 && (await driver.backendState()) !== XENBUS_STATE_CLOSED; i++) {
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    expect(await driver.backendState()).toBe(XENBUS_STATE_CLOSED);
    expect(driver.removedByBackend).toBe(true);
    expect(rig.memory.liveMappings()).toBe(0);
  });
});

describe('unusable rings and vanishing drivers on every transport', () => {
  it('PCI: an unaligned ring sets DEVICE_NEEDS_RESET and sends the config vector', async () => {
    rig = await createRig('pci', 'foreign', { noProbe: true });
    const current = rig;
    const transport = rig.transport as PciTransport;
    // Enumerate and place the BAR like firmware, then program a queue by hand.
    await rig.probe();
    const driver = rig.driver as PciGuestDriver;
    await driver.write(P.COMMON_DEVICE_STATUS, 1, 0);
    await driver.write(P.COMMON_DEVICE_STATUS, 1, STATUS_ACKNOWLEDGE);
    await driver.write(P.COMMON_DEVICE_STATUS, 1, ACK_DRIVER);
    await driver.write(P.COMMON_DRIVER_FEATURE_SELECT, 4, 1);
    await driver.write(P.COMMON_DRIVER_FEATURE, 4, 1);
    await driver.write(P.COMMON_DEVICE_STATUS, 1, FEATURES_DONE);
    await driver.write(P.COMMON_CONFIG_MSIX_VECTOR, 2, 0);
    await driver.write(P.COMMON_QUEUE_SELECT, 2, 0);
    await driver.write(P.COMMON_QUEUE_SIZE, 2, 16);
    await driver.write(P.COMMON_QUEUE_DESC, 4, 0x10_0008); // not 16-byte aligned
    await driver.write(P.COMMON_QUEUE_DRIVER, 4, 0x10_1000);
    await driver.write(P.COMMON_QUEUE_DEVICE, 4, 0x10_2000);
    await driver.write(P.COMMON_QUEUE_ENABLE, 2, 1);
    const sent = transport.counters.msiSent;
    await driver.write(P.COMMON_DEVICE_STATUS, 1, FEATURES_DONE | STATUS_DRIVER_OK);
    expect(await driver.read(P.COMMON_DEVICE_STATUS, 1)).toBe(
      FEATURES_DONE | STATUS_DRIVER_OK | STATUS_DEVICE_NEEDS_RESET,
    );
    expect(transport.counters.msiSent).toBe(sent + 1);
    expect(current.fixture.sim.interrupts.at(-1)).toMatchObject({ kind: 'msi', data: 0x40 });
    await driver.quiesce();
    noVcpuWaiting(current);
  });

  it('XenBus: an unaligned ring is answered with DEVICE_NEEDS_RESET in the config page', async () => {
    rig = await createRig('xenbus', 'foreign', { noProbe: true });
    const current = rig;
    const guestServices = rig.fixture.guest.services();
    const store = guestServices.store;
    const paths = xenbusPaths(0, rig.fixture.guest.domid, 0);
    const backend = rig.transport as XenbusBackend;
    const channel = guestServices.events.bindUnboundPort(0);
    let events = 0;
    channel.onEvent(() => {
      events++;
    });
    await store.write(`${paths.frontend}/driver-features`, VIRTIO_F_VERSION_1.toString(16));
    await store.write(`${paths.frontend}/event-channel`, String(channel.localPort));
    await store.write(`${paths.frontend}/queue-0/size`, '16');
    await store.write(`${paths.frontend}/queue-0/desc`, '0x100004');
    await store.write(`${paths.frontend}/queue-0/driver`, '0x101000');
    await store.write(`${paths.frontend}/queue-0/device`, '0x102000');
    await store.write(`${paths.frontend}/state`, String(XENBUS_STATE_INITIALISED));
    for (let i = 0; i < 200 && backend.xenbusState !== XENBUS_STATE_CONNECTED; i++) {
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    expect(backend.xenbusState).toBe(XENBUS_STATE_CONNECTED);
    expect(backend.controller.status & STATUS_DEVICE_NEEDS_RESET).toBe(STATUS_DEVICE_NEEDS_RESET);
    const configRef = Number(await store.read(`${paths.backend}/config-ref`));
    const page = guestServices.grants.map({ domid: 0, refs: [configRef], writable: false });
    expect(
      new DataView(page.bytes.buffer, page.bytes.byteOffset).getUint32(4, true) & STATUS_DEVICE_NEEDS_RESET,
    ).toBe(STATUS_DEVICE_NEEDS_RESET);
    for (let i = 0; i < 100 && events === 0; i++) await new Promise((resolve) => setTimeout(resolve, 1));
    expect(events).toBeGreaterThan(0);
    page.unmap();
    channel.close();
    await current.fixture.guest.services().close();
  });

  for (const transport of ['mmio', 'pci', 'xenbus'] as const) {
    it(`${transport}: a driver unloaded with requests in flight revokes every grant cleanly`, async () => {
      rig = await createRig(transport, 'grant-map');
      const driver = rig.driver;
      driver.queue(0).add([{ data: text('never kicked') }, { writable: 20 }]);
      await driver.request(0, [{ data: text('kicked') }, { writable: 14 }]);
      await driver.remove();
      expect(rig.dma.counters.revokeFailures).toBe(0);
      expect(rig.dma.counters.grants).toBe(rig.dma.counters.revoked);
      expect(rig.memory.liveMappings()).toBe(0);
    });
  }
});
