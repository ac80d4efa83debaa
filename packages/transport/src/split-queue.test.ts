import { createTestMemory } from '@xvio/grant-pool';
import { describe, expect, it } from 'vitest';
import { openChain } from './chain-io.js';
import { SplitQueue } from './split-queue.js';
import {
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
} from './split-ring-wire.js';
import { MockSplitQueue } from './testing/mock-split-queue.js';
import { VirtqueueError } from './virtio-errors.js';

function setup(options: { size?: number; eventIdx?: boolean; indirect?: boolean } = {}) {
  const memory = createTestMemory(1 << 20);
  const driver = new MockSplitQueue(memory, { size: options.size ?? 16, ...options });
  const queue = new SplitQueue(memory, driver.config);
  return { memory, driver, queue };
}

const bytes = (...values: number[]) => Uint8Array.from(values);

describe('SplitQueue', () => {
  it('pops a chain with readable then writable buffers and returns its used element', () => {
    const { memory, driver, queue } = setup();
    const { head } = driver.addChain([{ data: bytes(1, 2, 3) }, { writable: true, length: 8 }]);
    const chain = queue.pop()!;
    expect(chain.head).toBe(head);
    expect(chain.count).toBe(2);
    expect(chain.readableLength).toBe(3);
    expect(chain.writableLength).toBe(8);
    const io = openChain(memory, chain);
    expect(io.reader.readExact(3)).toEqual(bytes(1, 2, 3));
    io.writer.write(bytes(9, 9));
    queue.addUsed(chain, io.close());
    expect(driver.takeUsed()).toEqual([]); // staged only
    expect(queue.publishUsed()).toBe(1);
    expect(driver.takeUsed()).toEqual([{ id: head, length: 2 }]);
    expect(queue.pop()).toBeUndefined();
  });

  it('walks an indirect table when negotiated', () => {
    const { driver, queue } = setup({ indirect: true });
    driver.addChain([{ data: bytes(1) }, { data: bytes(2, 3) }, { writable: true, length: 4 }], {
      indirect: true,
    });
    const chain = queue.pop()!;
    expect(chain.count).toBe(3);
    expect(chain.readableLength).toBe(3);
    expect(chain.writableLength).toBe(4);
  });

  it('undoPop gives the same chain again', () => {
    const { driver, queue } = setup();
    const { head } = driver.addChain([{ writable: true, length: 4 }]);
    expect(queue.pop()!.head).toBe(head);
    queue.undoPop();
    expect(queue.pop()!.head).toBe(head);
  });

  it.each([
    ['invalid-avail-idx', (d: MockSplitQueue) => d.setAvailIdx(17)],
    [
      'descriptor-out-of-range',
      (d: MockSplitQueue) => {
        d.setAvailEntry(0, 16);
        d.setAvailIdx(1);
      },
    ],
    [
      'chain-too-long',
      (d: MockSplitQueue) => {
        d.writeDescriptor(0, { address: 0x9000n, length: 4, flags: VIRTQ_DESC_F_NEXT, next: 1 });
        d.writeDescriptor(1, { address: 0x9000n, length: 4, flags: VIRTQ_DESC_F_NEXT, next: 0 });
        d.setAvailEntry(0, 0);
        d.setAvailIdx(1);
      },
    ],
    [
      'indirect-not-negotiated',
      (d: MockSplitQueue) => {
        d.writeDescriptor(0, { address: 0x9000n, length: 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
        d.setAvailEntry(0, 0);
        d.setAvailIdx(1);
      },
    ],
    [
      'readable-after-writable',
      (d: MockSplitQueue) => {
        d.writeDescriptor(0, {
          address: 0x9000n,
          length: 4,
          flags: VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT,
          next: 1,
        });
        d.writeDescriptor(1, { address: 0x9000n, length: 4, flags: 0, next: 0 });
        d.setAvailEntry(0, 0);
        d.setAvailIdx(1);
      },
    ],
    [
      'chain-length-overflow',
      (d: MockSplitQueue) => {
        d.writeDescriptor(0, { address: 0x9000n, length: 0xffff_ffff, flags: VIRTQ_DESC_F_NEXT, next: 1 });
        d.writeDescriptor(1, { address: 0x9000n, length: 1, flags: 0, next: 0 });
        d.setAvailEntry(0, 0);
        d.setAvailIdx(1);
      },
    ],
  ])('breaks the queue with %s', (code, corrupt) => {
    const { driver, queue } = setup();
    corrupt(driver);
    let caught: unknown;
    try {
      queue.pop();
    } catch (error) {
      caught = error;
    }
    expect(VirtqueueError.isInstance(caught)).toBe(true);
    expect((caught as VirtqueueError).code).toBe(code);
    expect(queue.broken?.code).toBe(code);
    expect(queue.pop()).toBeUndefined();
  });

  it('rejects nested indirect tables and bad indirect lengths', () => {
    for (const [flags, length, code] of [
      [VIRTQ_DESC_F_INDIRECT, 16, 'nested-indirect'],
      [0, 16, undefined],
    ] as const) {
      const { memory, driver, queue } = setup({ indirect: true });
      const tableOffset = 0x8000;
      driver.writeDescriptorAt(tableOffset, { address: 0x9000n, length, flags, next: 0 });
      driver.writeDescriptor(0, {
        address: memory.address(tableOffset),
        length: 16,
        flags: VIRTQ_DESC_F_INDIRECT,
        next: 0,
      });
      driver.setAvailEntry(0, 0);
      driver.setAvailIdx(1);
      if (code) expect(() => queue.pop()).toThrow(code);
      else expect(queue.pop()!.count).toBe(1);
    }
    const { driver, queue } = setup({ indirect: true });
    driver.writeDescriptor(0, { address: 0x8000n, length: 20, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    driver.setAvailEntry(0, 0);
    driver.setAvailIdx(1);
    expect(() => queue.pop()).toThrow('invalid-indirect-length');
  });

  it('rejects bad sizes and misaligned rings at setup', () => {
    const memory = createTestMemory(1 << 16);
    const base = {
      size: 16,
      maxSize: 16,
      desc: 0n,
      driver: 0x200n,
      device: 0x400n,
      eventIdx: false,
      indirect: false,
    };
    expect(() => new SplitQueue(memory, { ...base, size: 12 })).toThrow('invalid-queue-size');
    expect(() => new SplitQueue(memory, { ...base, size: 32 })).toThrow('invalid-queue-size');
    expect(() => new SplitQueue(memory, { ...base, desc: 8n })).toThrow('misaligned-ring');
    expect(() => new SplitQueue(memory, { ...base, device: 0x402n })).toThrow('misaligned-ring');
    expect(() => new SplitQueue(memory, { ...base, device: 0x1_0000n })).toThrow('ring-unreachable');
  });

  it('honours NO_INTERRUPT and sets NO_NOTIFY without EVENT_IDX', () => {
    const { driver, queue } = setup();
    driver.addChain([{ writable: true, length: 1 }]);
    queue.disableNotification();
    expect(driver.usedFlags & VIRTQ_USED_F_NO_NOTIFY).toBe(VIRTQ_USED_F_NO_NOTIFY);
    queue.addUsed(queue.pop()!, 1);
    queue.publishUsed();
    driver.setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
    expect(queue.needsNotification()).toBe(false);
    expect(queue.enableNotification()).toBe(false);
    expect(driver.usedFlags & VIRTQ_USED_F_NO_NOTIFY).toBe(0);
  });

  it('follows used_event and maintains avail_event with EVENT_IDX', () => {
    const { driver, queue } = setup({ eventIdx: true });
    for (let i = 0; i < 4; i++) driver.addChain([{ writable: true, length: 1 }]);
    driver.setUsedEvent(2); // interrupt when used idx passes 2 (i.e. reaches 3)
    queue.addUsed(queue.pop()!, 1);
    queue.publishUsed();
    expect(queue.needsNotification()).toBe(true); // first notification always goes out
    queue.addUsed(queue.pop()!, 1);
    queue.publishUsed();
    expect(queue.needsNotification()).toBe(false); // used idx 2 has not passed 2
    queue.addUsed(queue.pop()!, 1);
    queue.publishUsed();
    expect(queue.needsNotification()).toBe(true); // 3 crossed used_event 2
    expect(queue.enableNotification()).toBe(true); // one chain still available
    expect(driver.availEvent).toBe(3);
  });

  it('with EVENT_IDX, disableNotification keeps avail_event one behind so the driver does not kick', () => {
    const { driver, queue } = setup({ eventIdx: true });
    // Linux's vring_need_event(event, new, old): kick when event lies in [old, new).
    const driverKicks = (old: number, added: number) =>
      ((old + added - driver.availEvent - 1) & 0xffff) < added;
    driver.addChain([{ writable: true, length: 1 }]);
    queue.addUsed(queue.pop()!, 1);
    queue.publishUsed();
    expect(queue.enableNotification()).toBe(false);
    expect(driverKicks(1, 1)).toBe(true); // enabled: the next publish kicks
    queue.disableNotification();
    expect(driver.availEvent).toBe(0);
    expect(driverKicks(1, 1)).toBe(false);
    expect(driverKicks(1, 5)).toBe(false); // nor does a batch
    expect(queue.enableNotification()).toBe(false);
    expect(driver.availEvent).toBe(1);
  });
});
