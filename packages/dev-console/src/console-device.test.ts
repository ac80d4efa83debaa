import { createHash } from 'node:crypto';
import { hasFeature, VIRTIO_F_VERSION_1 } from '@xvio/transport';
import { activateForTest, type MockQueue, type TestHarness } from '@xvio/transport/testing';
import { afterEach, describe, expect, it } from 'vitest';
import type { ConsoleConfigInput } from './console-config.js';
import { type ConsoleDevice, createConsoleDevice } from './console-device.js';
import { MemoryConsoleHost } from './console-host.js';
import {
  CONFIG_COLS,
  CONFIG_MAX_NR_PORTS,
  CONFIG_ROWS,
  CONTROL_RECEIVE_QUEUE,
  CONTROL_SIZE,
  CONTROL_TRANSMIT_QUEUE,
  decodeControl,
  decodeResize,
  encodeControl,
  portQueues,
  VIRTIO_CONSOLE_CONSOLE_PORT,
  VIRTIO_CONSOLE_DEVICE_ADD,
  VIRTIO_CONSOLE_DEVICE_READY,
  VIRTIO_CONSOLE_DEVICE_REMOVE,
  VIRTIO_CONSOLE_F_EMERG_WRITE,
  VIRTIO_CONSOLE_F_MULTIPORT,
  VIRTIO_CONSOLE_F_SIZE,
  VIRTIO_CONSOLE_PORT_NAME,
  VIRTIO_CONSOLE_PORT_OPEN,
  VIRTIO_CONSOLE_PORT_READY,
  VIRTIO_CONSOLE_RESIZE,
  VIRTIO_ID_CONSOLE,
} from './console-wire.js';

const text = (value: string) => new TextEncoder().encode(value);
const string = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

interface Running {
  device: ConsoleDevice;
  harness: TestHarness;
  hosts: MemoryConsoleHost[];
}

const running: Running[] = [];

afterEach(async () => {
  for (const { device, harness } of running.splice(0)) {
    harness.dispose();
    await device.close();
  }
});

/** A console whose ports are memory hosts, brought to DRIVER_OK by a mock driver. */
async function startConsole(
  config: ConsoleConfigInput = {},
  options: { hosts?: MemoryConsoleHost[]; withoutFeatures?: bigint; memorySize?: number } = {},
): Promise<Running> {
  const ports = config.ports ?? [{}];
  const hosts = options.hosts ?? ports.map(() => new MemoryConsoleHost({ size: { cols: 132, rows: 43 } }));
  const map = new Map<number, MemoryConsoleHost>();
  ports.forEach((port, i) => {
    map.set(port.id ?? i, hosts[i]!);
  });
  const device = createConsoleDevice({ ...config, ports }, { hosts: map });
  await device.open();
  const harness = activateForTest(device, {
    memorySize: options.memorySize ?? device.queueMaxSizes.length * (512 << 10),
    withoutFeatures: options.withoutFeatures ?? 0n,
  });
  const result = { device, harness, hosts };
  running.push(result);
  return result;
}

/** Guest receive buffers on a queue, remembered so their contents can be read once used. */
class ReceiveDriver {
  private readonly placed = new Map<number, { offset: number; length: number }>();

  constructor(
    private readonly harness: TestHarness,
    readonly queueIndex: number,
  ) {}

  get queue(): MockQueue {
    return this.harness.queue(this.queueIndex);
  }

  post(count: number, length: number): void {
    for (let i = 0; i < count; i++) {
      const { head, buffers } = this.queue.addChain([{ writable: true, length }]);
      this.placed.set(head, { offset: buffers[0]!.offset, length });
    }
    this.harness.kick(this.queueIndex);
  }

  /** The contents of every buffer the device completed since the last call, in order. */
  take(): Uint8Array[] {
    return this.queue.takeUsed().map((used) => {
      const buffer = this.placed.get(used.id)!;
      this.placed.delete(used.id);
      expect(used.length).toBeLessThanOrEqual(buffer.length);
      return this.harness.memory.bytes.slice(buffer.offset, buffer.offset + used.length);
    });
  }
}

interface Control {
  id: number;
  event: number;
  value: number;
  payload: Uint8Array;
}

/** The driver's side of the control queues (5.3.6.2): PAGE_SIZE receive buffers, like Linux. */
class ControlDriver {
  readonly receive: ReceiveDriver;

  constructor(private readonly harness: TestHarness) {
    this.receive = new ReceiveDriver(harness, CONTROL_RECEIVE_QUEUE);
    this.receive.post(16, 4096);
  }

  send(id: number, event: number, value: number): void {
    this.harness.request(CONTROL_TRANSMIT_QUEUE, [{ data: encodeControl({ id, event, value }) }]);
  }

  /** Messages the device sent since the last call; receive buffers are replenished. */
  take(): Control[] {
    const messages = this.receive.take().map((bytes) => {
      const head = decodeControl(bytes)!;
      return { ...head, payload: bytes.slice(CONTROL_SIZE) };
    });
    if (messages.length > 0) this.receive.post(messages.length, 4096);
    return messages;
  }
}

const concat = (chunks: Uint8Array[]) => Buffer.concat(chunks.map((chunk) => Buffer.from(chunk)));
const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

describe('ConsoleDevice identity', () => {
  it('is a console device offering SIZE and EMERG_WRITE by default, MULTIPORT only when configured', () => {
    const single = createConsoleDevice();
    expect(single.deviceType).toBe(VIRTIO_ID_CONSOLE);
    expect(single.queueMaxSizes).toHaveLength(2);
    expect(hasFeature(single.features, VIRTIO_F_VERSION_1)).toBe(true);
    expect(hasFeature(single.features, VIRTIO_CONSOLE_F_SIZE)).toBe(true);
    expect(hasFeature(single.features, VIRTIO_CONSOLE_F_EMERG_WRITE)).toBe(true);
    expect(hasFeature(single.features, VIRTIO_CONSOLE_F_MULTIPORT)).toBe(false);
    const multi = createConsoleDevice({ multiport: true, maxPorts: 4, ports: [{}] });
    expect(hasFeature(multi.features, VIRTIO_CONSOLE_F_MULTIPORT)).toBe(true);
    expect(multi.queueMaxSizes).toHaveLength(10); // 2 x (4 ports + control)
    const plain = createConsoleDevice({ size: 'off', emergencyWrite: false });
    expect(hasFeature(plain.features, VIRTIO_CONSOLE_F_SIZE)).toBe(false);
    expect(hasFeature(plain.features, VIRTIO_CONSOLE_F_EMERG_WRITE)).toBe(false);
  });
});

describe('ConsoleDevice single port', () => {
  it('hands guest output to the host in order and completes transmit buffers with 0', async () => {
    const { harness, hosts, device } = await startConsole();
    harness.request(1, [{ data: text('hello, ') }]);
    harness.request(1, [{ data: text('wor') }, { data: text('ld') }]);
    expect(await harness.waitForUsed(1, 2)).toEqual([
      { id: expect.any(Number), length: 0 },
      { id: expect.any(Number), length: 0 },
    ]);
    expect(string(hosts[0]!.takeOutput())).toBe('hello, world');
    expect(device.metrics()).toMatchObject({ 'port0.txBytes': 12, 'port0.txChains': 2 });
  });

  it('delivers host input into receive buffers, across buffers, and waits for buffers', async () => {
    const { harness, hosts } = await startConsole();
    const receive = new ReceiveDriver(harness, 0);
    hosts[0]!.input(text('typed before any buffer'));
    expect(receive.take()).toEqual([]);
    receive.post(3, 8);
    expect(receive.take().map(string)).toEqual(['typed be', 'fore any', ' buffer']);
    hosts[0]!.input(text('x'));
    receive.post(1, 8);
    expect(receive.take().map(string)).toEqual(['x']);
  });

  it('reads cols, rows and max_nr_ports from config space and raises a config change on resize (F_SIZE)', async () => {
    const { harness, hosts } = await startConsole();
    const config = () => new DataView(harness.controller.readConfig(0, 12).buffer);
    expect(config().getUint16(CONFIG_COLS, true)).toBe(132);
    expect(config().getUint16(CONFIG_ROWS, true)).toBe(43);
    expect(config().getUint32(CONFIG_MAX_NR_PORTS, true)).toBe(1);
    const before = harness.interrupts.config;
    hosts[0]!.resize({ cols: 100, rows: 30 });
    expect(harness.interrupts.config).toBe(before + 1);
    expect(config().getUint16(CONFIG_COLS, true)).toBe(100);
    expect(config().getUint16(CONFIG_ROWS, true)).toBe(30);
  });

  it('signals one configuration change at activation with F_SIZE and no MULTIPORT (Linux reads the size only then)', async () => {
    const withSize = await startConsole();
    expect(withSize.harness.interrupts.config).toBe(1);
    const withoutSize = await startConsole({}, { withoutFeatures: VIRTIO_CONSOLE_F_SIZE });
    expect(withoutSize.harness.interrupts.config).toBe(0);
    const multiport = await startConsole({ maxPorts: 2, ports: [{ id: 0 }, { id: 1 }] });
    expect(multiport.harness.interrupts.config).toBe(0); // sizes travel as RESIZE messages
  });

  it('does not signal resizes the driver did not negotiate (no F_SIZE)', async () => {
    const { harness, hosts } = await startConsole({}, { withoutFeatures: VIRTIO_CONSOLE_F_SIZE });
    const before = harness.interrupts.config;
    hosts[0]!.resize({ cols: 100, rows: 30 });
    expect(harness.interrupts.config).toBe(before);
  });

  it('writes emerg_wr characters straight to port 0, even before DRIVER_OK', async () => {
    const host = new MemoryConsoleHost();
    const device = createConsoleDevice({}, { hosts: new Map([[0, host]]) });
    await device.open();
    const character = new Uint8Array(4);
    new DataView(character.buffer).setUint32(0, 'A'.charCodeAt(0), true);
    device.writeConfig(8, character); // as the controller passes a 32-bit write at emerg_wr
    const harness = activateForTest(device);
    running.push({ device, harness, hosts: [host] });
    new DataView(character.buffer).setUint32(0, 'Z'.charCodeAt(0), true);
    harness.controller.writeConfig(8, character);
    harness.controller.writeConfig(0, Uint8Array.of(1, 2)); // cols/rows are read-only
    expect(string(host.takeOutput())).toBe('AZ');
    expect(device.metrics().emergencyBytes).toBe(2);
  });

  it('ignores emerg_wr when EMERG_WRITE is not offered', async () => {
    const { harness, hosts, device } = await startConsole({ emergencyWrite: false });
    harness.controller.writeConfig(8, Uint8Array.of(65, 0, 0, 0));
    expect(hosts[0]!.outputBytes).toBe(0);
    expect(device.metrics().emergencyBytes).toBe(0);
  });
});

describe('ConsoleDevice flow control', () => {
  it('holds transmit buffers while the host is full and loses nothing (bounded host buffer)', async () => {
    const host = new MemoryConsoleHost({ capacity: 100 });
    const { harness, device } = await startConsole({}, { hosts: [host] });
    const sent: Uint8Array[] = [];
    for (let i = 0; i < 6; i++) {
      const chunk = new Uint8Array(60).fill(0x41 + i);
      sent.push(chunk);
      harness.queue(1).addChain([{ data: chunk }]);
    }
    harness.kick(1);
    // 60 fits, 120 >= capacity: the device stops completing after the second.
    expect(harness.queue(1).takeUsed()).toHaveLength(2);
    expect(host.outputBytes).toBe(120);
    harness.kick(1); // kicks while the host is full change nothing
    expect(harness.queue(1).takeUsed()).toHaveLength(0);
    const received: Uint8Array[] = [];
    let completed = 2;
    while (completed < 6) {
      received.push(host.takeOutput()); // the host drains: the device goes on
      completed += harness.queue(1).takeUsed().length;
      expect(host.outputBytes).toBeLessThanOrEqual(100 + 60);
    }
    received.push(host.takeOutput());
    expect(concat(received)).toEqual(concat(sent));
    expect(device.metrics()['port0.txWaits']).toBe(3);
  });

  it('a guest that never posts receive buffers: host input is paused at bufferBytes, no growth, nothing lost', async () => {
    const host = new MemoryConsoleHost();
    const { harness, device } = await startConsole({ bufferBytes: 4096 }, { hosts: [host] });
    const input = new Uint8Array(1 << 20);
    for (let i = 0; i < input.length; i++) input[i] = (i * 2654435761) >>> 24;
    for (let at = 0; at < input.length; at += 1000) host.input(input.subarray(at, at + 1000));
    expect(host.paused).toBe(true);
    const metrics = device.metrics();
    expect(metrics['port0.inboundBuffered']).toBeGreaterThanOrEqual(4096);
    expect(metrics['port0.inboundBuffered']).toBeLessThan(4096 + 1000);
    expect(metrics['port0.hostPauses']).toBe(1);
    expect(host.pendingInput).toBe(input.length - metrics['port0.inboundBuffered']!);
    // The guest finally reads: everything arrives, in order.
    const receive = new ReceiveDriver(harness, 0);
    const got: Uint8Array[] = [];
    let total = 0;
    while (total < input.length) {
      receive.post(16, 4096);
      for (const chunk of receive.take()) {
        got.push(chunk);
        total += chunk.length;
      }
    }
    expect(sha256(concat(got))).toBe(sha256(input));
    expect(host.paused).toBe(false);
    expect(device.metrics()['port0.inboundBuffered']).toBe(0);
  });
});

describe('ConsoleDevice host input bounds', () => {
  it('takes one host write larger than bufferBytes without dropping any of it', async () => {
    const host = new MemoryConsoleHost();
    const { harness, device } = await startConsole({ bufferBytes: 4096 }, { hosts: [host] });
    const input = Uint8Array.from({ length: 256 * 1024 }, (_, i) => (i * 31) & 0xff);
    expect(host.input(input)).toBe(false); // the device paused it: the rest waits in the host
    expect(device.metrics()['port0.inboundBuffered']).toBeLessThanOrEqual(64 * 1024);
    const receive = new ReceiveDriver(harness, 0);
    const got: Uint8Array[] = [];
    let total = 0;
    while (total < input.length) {
      receive.post(16, 4096);
      for (const chunk of receive.take()) {
        got.push(chunk);
        total += chunk.length;
      }
    }
    expect(sha256(concat(got))).toBe(sha256(input));
    expect(device.metrics()['port0.droppedBytes']).toBe(0);
  });

  it('drops and counts input from a host that ignores pause, past twice the limit', async () => {
    const host = new MemoryConsoleHost();
    host.pause = () => {}; // a broken host: never stops
    const { device } = await startConsole({ bufferBytes: 4096 }, { hosts: [host] });
    for (let i = 0; i < 1024; i++) host.input(new Uint8Array(1024));
    const metrics = device.metrics();
    expect(metrics['port0.inboundBuffered']).toBeLessThanOrEqual(2 * 4096 + 1024);
    expect(metrics['port0.droppedBytes']).toBe(1024 * 1024 - metrics['port0.inboundBuffered']!);
  });
});

describe('ConsoleDevice bad input', () => {
  it('completes a receive buffer with a readable part as a bad chain', async () => {
    const { harness, hosts, device } = await startConsole();
    hosts[0]!.input(text('data'));
    harness.request(0, [{ data: text('??') }, { writable: true, length: 8 }]);
    expect(await harness.waitForUsed(0)).toEqual([{ id: expect.any(Number), length: 0 }]);
    expect(device.metrics()['port0.badChains']).toBe(1);
    expect(harness.needsReset).toBe(false);
  });

  it('drops and counts a transmit chain above maxChainBytes', async () => {
    const { harness, hosts, device } = await startConsole({ maxChainBytes: 4096 });
    harness.request(1, [{ data: new Uint8Array(5000) }]);
    harness.request(1, [{ data: text('ok') }]);
    await harness.waitForUsed(1, 2);
    expect(string(hosts[0]!.takeOutput())).toBe('ok');
    expect(device.metrics()['port0.badChains']).toBe(1);
  });

  it('a host that disappears: guest output is dropped and counted, never held, the device keeps running', async () => {
    const host = new MemoryConsoleHost({ capacity: 10 });
    const { harness, device } = await startConsole({}, { hosts: [host] });
    harness.queue(1).addChain([{ data: new Uint8Array(20) }]);
    harness.queue(1).addChain([{ data: new Uint8Array(30) }]);
    harness.kick(1);
    expect(harness.queue(1).takeUsed()).toHaveLength(1); // host full: the second waits
    host.fail(new Error('peer vanished'));
    expect(harness.queue(1).takeUsed()).toHaveLength(1); // released, not held forever
    harness.request(1, [{ data: new Uint8Array(7) }]);
    await harness.waitForUsed(1);
    expect(device.metrics()).toMatchObject({
      'port0.hostErrors': 1,
      'port0.droppedBytes': 37,
      'port0.txBytes': 20,
    });
    expect(device.portState(0)?.hostGone).toBe(true);
    expect(harness.needsReset).toBe(false);
  });
});

describe('ConsoleDevice multiport', () => {
  const config: ConsoleConfigInput = {
    maxPorts: 4,
    ports: [
      { id: 0, console: true },
      { id: 1, name: 'org.xvio.one' },
      { id: 2, name: 'two' },
    ],
  };

  async function handshake(setup: Running) {
    const control = new ControlDriver(setup.harness);
    control.send(0, VIRTIO_CONSOLE_DEVICE_READY, 1);
    return control;
  }

  it('announces ports on DEVICE_READY and answers PORT_READY with console flag, size, name and open', async () => {
    const setup = await startConsole(config);
    const control = await handshake(setup);
    expect(control.take().map((m) => [m.event, m.id])).toEqual([
      [VIRTIO_CONSOLE_DEVICE_ADD, 0],
      [VIRTIO_CONSOLE_DEVICE_ADD, 1],
      [VIRTIO_CONSOLE_DEVICE_ADD, 2],
    ]);
    control.send(0, VIRTIO_CONSOLE_PORT_READY, 1);
    const console0 = control.take();
    expect(console0.map((m) => [m.event, m.id, m.value])).toEqual([
      [VIRTIO_CONSOLE_CONSOLE_PORT, 0, 1],
      [VIRTIO_CONSOLE_RESIZE, 0, 0],
      [VIRTIO_CONSOLE_PORT_OPEN, 0, 1],
    ]);
    expect(decodeResize(console0[1]!.payload)).toEqual({ cols: 132, rows: 43 });
    control.send(1, VIRTIO_CONSOLE_PORT_READY, 1);
    const port1 = control.take();
    expect(port1.map((m) => [m.event, m.id, m.value])).toEqual([
      [VIRTIO_CONSOLE_PORT_NAME, 1, 1],
      [VIRTIO_CONSOLE_PORT_OPEN, 1, 1],
    ]);
    expect(string(port1[0]!.payload)).toBe('org.xvio.one');
    expect(setup.device.metrics()).toMatchObject({ controlReceived: 3, badControl: 0 });
  });

  it('moves data on port 1 queues; input waits until the guest opens the port', async () => {
    const setup = await startConsole(config);
    const control = await handshake(setup);
    control.send(1, VIRTIO_CONSOLE_PORT_READY, 1);
    control.take();
    const { receive, transmit } = portQueues(1);
    expect([receive, transmit]).toEqual([4, 5]);
    const port1 = new ReceiveDriver(setup.harness, receive);
    port1.post(4, 64);
    setup.hosts[1]!.input(text('for port one'));
    // Linux discards input on a generic port nobody opened: the device holds it instead.
    expect(port1.take()).toEqual([]);
    control.send(1, VIRTIO_CONSOLE_PORT_OPEN, 1);
    expect(port1.take().map(string)).toEqual(['for port one']);
    setup.harness.request(transmit, [{ data: text('from the guest') }]);
    await setup.harness.waitForUsed(transmit);
    expect(string(setup.hosts[1]!.takeOutput())).toBe('from the guest');
    expect(setup.hosts[0]!.outputBytes).toBe(0);
    expect(setup.device.metrics()).toMatchObject({ 'port1.rxBytes': 12, 'port1.txBytes': 14 });
  });

  it('hot-adds and hot-removes ports', async () => {
    const hosts = [
      new MemoryConsoleHost({ size: { cols: 132, rows: 43 } }),
      new MemoryConsoleHost({ capacity: 4 }),
      new MemoryConsoleHost(),
    ];
    const setup = await startConsole(config, { hosts });
    const control = await handshake(setup);
    control.take();
    const hot = new MemoryConsoleHost();
    const id = await setup.device.addPort({ name: 'hot' }, hot);
    expect(id).toBe(3);
    expect(control.take().map((m) => [m.event, m.id])).toEqual([[VIRTIO_CONSOLE_DEVICE_ADD, 3]]);
    control.send(3, VIRTIO_CONSOLE_PORT_READY, 1);
    const ready = control.take();
    expect(ready.map((m) => m.event)).toEqual([VIRTIO_CONSOLE_PORT_NAME, VIRTIO_CONSOLE_PORT_OPEN]);
    expect(string(ready[0]!.payload)).toBe('hot');
    setup.harness.request(portQueues(3).transmit, [{ data: text('hi') }]);
    await setup.harness.waitForUsed(portQueues(3).transmit);
    expect(string(hot.takeOutput())).toBe('hi');
    await expect(setup.device.addPort({ name: 'full' })).rejects.toThrow(/maxPorts/);

    // Port 1's host is full (capacity 4): its second transmit buffer waits in the ring...
    control.send(1, VIRTIO_CONSOLE_PORT_READY, 1);
    control.take();
    const transmit1 = setup.harness.queue(portQueues(1).transmit);
    transmit1.addChain([{ data: text('first') }]);
    transmit1.addChain([{ data: text('pending') }]);
    setup.harness.kick(portQueues(1).transmit);
    expect(transmit1.takeUsed()).toHaveLength(1);
    await setup.device.removePort(1);
    // ...and is completed (dropped, counted) before DEVICE_REMOVE, so the driver can reclaim it.
    expect(transmit1.takeUsed()).toHaveLength(1);
    expect(setup.device.metrics()['port1.droppedBytes']).toBeUndefined(); // the port is gone
    expect(control.take().map((m) => [m.event, m.id])).toEqual([[VIRTIO_CONSOLE_DEVICE_REMOVE, 1]]);
    // The driver speaks of the removed port: counted and ignored.
    control.send(1, VIRTIO_CONSOLE_PORT_OPEN, 1);
    setup.harness.request(portQueues(1).transmit, [{ data: text('lost') }]);
    await setup.harness.waitForUsed(portQueues(1).transmit);
    expect(setup.device.metrics()).toMatchObject({ unknownPort: 2 });
    expect(setup.device.portIds()).toEqual([0, 2, 3]);
    expect(setup.harness.needsReset).toBe(false);
  });

  it('sends RESIZE for a console port, in spec order or rows first', async () => {
    for (const [order, expected] of [
      ['spec', [100, 30]],
      ['rows-first', [30, 100]],
    ] as const) {
      const setup = await startConsole({ ...config, resizeOrder: order });
      const control = await handshake(setup);
      control.send(0, VIRTIO_CONSOLE_PORT_READY, 1);
      control.take();
      setup.hosts[0]!.resize({ cols: 100, rows: 30 });
      const [message] = control.take();
      expect(message?.event).toBe(VIRTIO_CONSOLE_RESIZE);
      const view = new DataView(message!.payload.buffer, message!.payload.byteOffset);
      expect([view.getUint16(0, true), view.getUint16(2, true)]).toEqual(expected);
    }
  });

  it('tells the driver when a host peer attaches and leaves (PORT_OPEN)', async () => {
    const setup = await startConsole(config);
    const control = await handshake(setup);
    control.send(2, VIRTIO_CONSOLE_PORT_READY, 1);
    control.take();
    setup.hosts[2]!.setConnected(false);
    setup.hosts[2]!.setConnected(true);
    expect(control.take().map((m) => [m.event, m.id, m.value])).toEqual([
      [VIRTIO_CONSOLE_PORT_OPEN, 2, 0],
      [VIRTIO_CONSOLE_PORT_OPEN, 2, 1],
    ]);
    setup.hosts[2]!.fail(new Error('gone'));
    expect(control.take().map((m) => [m.event, m.id, m.value])).toEqual([[VIRTIO_CONSOLE_PORT_OPEN, 2, 0]]);
  });

  it('counts and ignores malformed control messages and unknown port ids', async () => {
    const setup = await startConsole(config);
    const control = await handshake(setup);
    control.take();
    setup.harness.request(CONTROL_TRANSMIT_QUEUE, [{ data: Uint8Array.of(1, 2, 3, 4) }]); // short
    control.send(0, 99, 1); // no such event
    control.send(0, VIRTIO_CONSOLE_DEVICE_ADD, 1); // the device's event, not the driver's
    control.send(0, VIRTIO_CONSOLE_RESIZE, 1);
    control.send(1000, VIRTIO_CONSOLE_PORT_READY, 1); // beyond max_nr_ports
    control.send(3, VIRTIO_CONSOLE_PORT_OPEN, 1); // never added
    control.send(0xffff_ffff, VIRTIO_CONSOLE_PORT_OPEN, 1);
    await setup.harness.waitForUsed(CONTROL_TRANSMIT_QUEUE, 8);
    expect(setup.device.metrics()).toMatchObject({ badControl: 4, unknownPort: 3 });
    expect(control.take()).toEqual([]);
    expect(setup.harness.needsReset).toBe(false);
    // And the device still works.
    control.send(0, VIRTIO_CONSOLE_PORT_READY, 1);
    expect(control.take().map((m) => m.event)).toContain(VIRTIO_CONSOLE_CONSOLE_PORT);
  });

  it('completes a control buffer too small for the next message with 0 and delivers it in the next', async () => {
    const setup = await startConsole(config);
    const small = new ReceiveDriver(setup.harness, CONTROL_RECEIVE_QUEUE);
    small.post(1, 4);
    setup.harness.request(CONTROL_TRANSMIT_QUEUE, [{ data: encodeControl({ id: 0, event: 0, value: 1 }) }]);
    expect(small.take().map((bytes) => bytes.length)).toEqual([0]);
    expect(setup.device.metrics().controlBufferTooSmall).toBe(1);
    const control = new ControlDriver(setup.harness);
    expect(control.take().map((m) => m.event)).toEqual([
      VIRTIO_CONSOLE_DEVICE_ADD,
      VIRTIO_CONSOLE_DEVICE_ADD,
      VIRTIO_CONSOLE_DEVICE_ADD,
    ]);
  });

  it('keeps the control outbox bounded when the driver posts no control buffers', async () => {
    const setup = await startConsole(config);
    setup.harness.request(CONTROL_TRANSMIT_QUEUE, [{ data: encodeControl({ id: 0, event: 0, value: 1 }) }]);
    setup.harness.request(CONTROL_TRANSMIT_QUEUE, [{ data: encodeControl({ id: 0, event: 3, value: 1 }) }]);
    const pending = setup.device.metrics().controlPending!;
    for (let i = 0; i < 1000; i++) {
      setup.hosts[0]!.resize({ cols: 80 + (i % 50), rows: 24 });
      setup.hosts[0]!.setConnected(i % 2 === 0);
    }
    // RESIZE and PORT_OPEN coalesce: at most one more of each is pending.
    expect(setup.device.metrics().controlPending).toBeLessThanOrEqual(pending + 1);
    const control = new ControlDriver(setup.harness);
    const messages = control.take();
    const resize = messages.filter((m) => m.event === VIRTIO_CONSOLE_RESIZE);
    expect(resize).toHaveLength(1);
    expect(decodeResize(resize[0]!.payload)).toEqual({ cols: 80 + (999 % 50), rows: 24 });
  });

  it('serves port 0 alone when the driver does not negotiate MULTIPORT', async () => {
    const setup = await startConsole(config, { withoutFeatures: VIRTIO_CONSOLE_F_MULTIPORT });
    setup.harness.request(1, [{ data: text('plain') }]);
    await setup.harness.waitForUsed(1);
    expect(string(setup.hosts[0]!.takeOutput())).toBe('plain');
    setup.hosts[1]!.input(text('ignored until multiport'));
    expect(setup.device.metrics()['port1.rxBytes']).toBe(0);
  });

  it('forgets the driver on reset and announces again after the next DEVICE_READY', async () => {
    const setup = await startConsole(config);
    let control = await handshake(setup);
    control.send(1, VIRTIO_CONSOLE_PORT_READY, 1);
    control.take();
    setup.harness.restart();
    expect(setup.device.portState(1)).toMatchObject({ announced: false, ready: false });
    control = await handshake(setup);
    expect(control.take().map((m) => m.event)).toEqual([
      VIRTIO_CONSOLE_DEVICE_ADD,
      VIRTIO_CONSOLE_DEVICE_ADD,
      VIRTIO_CONSOLE_DEVICE_ADD,
    ]);
  });
});
