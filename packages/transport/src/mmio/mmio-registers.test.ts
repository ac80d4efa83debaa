import { createTestMemory } from '@xvio/grant-pool';
import { describe, expect, it } from 'vitest';
import { DeviceController } from '../device-controller.js';
import type { VirtioDevice } from '../virtio-device.js';
import { VIRTIO_F_VERSION_1 } from '../virtio-features.js';
import { MmioRegisters } from './mmio-registers.js';
import * as R from './mmio-wire.js';

/** A device with two queues and an 8-byte config space (0x11..0x18). */
function smallDevice(): VirtioDevice {
  const config = Uint8Array.from([0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]);
  return {
    deviceType: 4,
    name: 'small',
    queueMaxSizes: [16, 32],
    features: 1n << 3n,
    configSize: config.length,
    readConfig: (offset, target) => target.set(config.subarray(offset, offset + target.length)),
    writeConfig: () => {},
    activate: () => {},
    notify: () => {},
    reset: () => {},
  };
}

function registers() {
  const lines: string[] = [];
  const controller = new DeviceController(smallDevice(), {
    memory: createTestMemory(1 << 20),
    hooks: {
      interruptQueue: () => registersFile.interruptQueue(),
      interruptConfig: () => registersFile.interruptConfig(),
    },
  });
  const registersFile = new MmioRegisters(controller, {
    raise: () => lines.push('raise'),
    lower: () => lines.push('lower'),
  });
  return { controller, registers: registersFile, lines };
}

describe('MmioRegisters', () => {
  it('identifies the device and pages the 64-bit feature word', () => {
    const { registers: r } = registers();
    expect(r.read(R.MMIO_MAGIC_VALUE, 4)).toBe(BigInt(R.MMIO_MAGIC));
    expect(r.read(R.MMIO_VERSION, 4)).toBe(2n);
    expect(r.read(R.MMIO_DEVICE_ID, 4)).toBe(4n);
    expect(r.read(R.MMIO_DEVICE_FEATURES, 4)).toBe(1n << 3n);
    r.write(R.MMIO_DEVICE_FEATURES_SEL, 4, 1n);
    expect(r.read(R.MMIO_DEVICE_FEATURES, 4)).toBe(VIRTIO_F_VERSION_1 >> 32n);
    r.write(R.MMIO_DEVICE_FEATURES_SEL, 4, 7n);
    expect(r.read(R.MMIO_DEVICE_FEATURES, 4)).toBe(0n);
  });

  it('reads configuration space at any width, little-endian, zero beyond the device', () => {
    const { registers: r } = registers();
    expect(r.read(R.MMIO_CONFIG, 1)).toBe(0x11n);
    expect(r.read(R.MMIO_CONFIG + 1, 2)).toBe(0x1312n);
    expect(r.read(R.MMIO_CONFIG, 4)).toBe(0x14131211n);
    expect(r.read(R.MMIO_CONFIG, 8)).toBe(0x1817161514131211n);
    expect(r.read(R.MMIO_CONFIG + 6, 4)).toBe(0x1817n);
    expect(r.counters.configOutOfRange).toBe(1);
  });

  it('reports absent shared memory regions and ignores QueueReset without VIRTIO_F_RING_RESET', () => {
    const { registers: r } = registers();
    r.write(R.MMIO_SHM_SEL, 4, 0n);
    expect(r.read(R.MMIO_SHM_LEN_LOW, 4)).toBe(0xffff_ffffn);
    expect(r.read(R.MMIO_SHM_LEN_HIGH, 4)).toBe(0xffff_ffffn);
    r.write(R.MMIO_QUEUE_RESET, 4, 1n);
    expect(r.read(R.MMIO_QUEUE_RESET, 4)).toBe(0n);
    expect(r.counters.ignoredWrites).toBe(1);
  });

  it('holds the line while any InterruptStatus bit is unacknowledged', () => {
    const { registers: r, lines } = registers();
    r.interruptQueue();
    r.interruptConfig();
    expect(r.read(R.MMIO_INTERRUPT_STATUS, 4)).toBe(3n);
    r.write(R.MMIO_INTERRUPT_ACK, 4, 1n);
    expect(lines).toEqual(['raise', 'raise']);
    r.write(R.MMIO_INTERRUPT_ACK, 4, 2n);
    expect(lines.at(-1)).toBe('lower');
    expect(r.read(R.MMIO_INTERRUPT_STATUS, 4)).toBe(0n);
  });

  it('counts reads of write-only and writes of read-only registers', () => {
    const { registers: r, controller } = registers();
    expect(r.read(R.MMIO_QUEUE_NOTIFY, 4)).toBe(0n);
    r.write(R.MMIO_DEVICE_ID, 4, 9n);
    expect(r.read(R.MMIO_DEVICE_ID, 4)).toBe(4n);
    expect(r.counters.wrongDirection).toBe(2);
    expect(controller.status).toBe(0);
  });
});
