import { createTestMemory } from '@xvio/grant-pool';
import { describe, expect, it } from 'vitest';
import { openChain } from './chain-io.js';
import { PackedQueue } from './packed-queue.js';
import {
  packedNeedEvent,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from './packed-ring-wire.js';
import { MockPackedQueue } from './testing/mock-packed-queue.js';
import { VirtqueueError } from './virtio-errors.js';

function setup(options: { size?: number; eventIdx?: boolean; indirect?: boolean } = {}) {
  const memory = createTestMemory(1 << 20);
  const driver = new MockPackedQueue(memory, { size: options.size ?? 16, ...options });
  const queue = new PackedQueue(memory, driver.config);
  return { memory, driver, queue };
}

const bytes = (...values: number[]) => Uint8Array.from(values);

function popError(queue: PackedQueue): VirtqueueError {
  let caught: unknown;
  try {
    queue.pop();
  } catch (error) {
    caught = error;
  }
  expect(VirtqueueError.isInstance(caught)).toBe(true);
  return caught as VirtqueueError;
}

describe('PackedQueue', () => {
  it('pops a chain with readable then writable buffers and returns its used descriptor', () => {
    const { memory, driver, queue } = setup();
    const { head } = driver.addChain([{ data: bytes(1, 2, 3) }, { writable: true, length: 8 }]);
    expect(queue.hasAvailable()).toBe(true);
    const chain = queue.pop()!;
    expect(chain.head).toBe(head);
    expect(chain.count).toBe(2);
    expect(chain.ringSlots).toBe(2);
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
    expect(queue.hasAvailable()).toBe(false);
  });

  it('does not see a chain whose head flags are not stored yet', () => {
    const { driver, queue } = setup();
    driver.addChain(
      [
        { writable: true, length: 4 },
        { writable: true, length: 4 },
      ],
      { noPublish: true },
    );
    expect(queue.pop()).toBeUndefined();
    driver.publishPending();
    expect(queue.pop()!.count).toBe(2);
  });

  it('wraps around the ring many times, flipping both wrap counters, with out-of-order completion', () => {
    const { driver, queue } = setup({ size: 5 });
    for (let round = 0; round < 40; round++) {
      const a = driver.addChain([{ data: bytes(round) }, { writable: true, length: 2 }]);
      const b = driver.addChain([{ writable: true, length: 3 }]);
      const first = queue.pop()!;
      const second = queue.pop()!;
      expect([first.head, second.head]).toEqual([a.head, b.head]);
      queue.addUsed(second, 3);
      queue.addUsed(first, 1);
      expect(queue.publishUsed()).toBe(2);
      expect(driver.takeUsed()).toEqual([
        { id: b.head, length: 3 },
        { id: a.head, length: 1 },
      ]);
    }
    const state = queue.getState();
    expect(state.nextAvail).toBe((40 * 3) % 5);
    expect(state.availWrap).toBe(Math.floor((40 * 3) / 5) % 2 === 0);
    expect(state.usedWrap).toBe(state.availWrap);
  });

  it('pops chains longer than the read-ahead window and batches across a wrap', () => {
    const { driver, queue } = setup({ size: 128 });
    const long = driver.addChain(Array.from({ length: 70 }, () => ({ writable: true as const, length: 1 })));
    const short = driver.addChain([{ writable: true, length: 3 }]);
    const chain = queue.pop()!;
    expect(chain.head).toBe(long.head);
    expect(chain.count).toBe(70);
    expect(chain.writableLength).toBe(70);
    expect(queue.pop()!.head).toBe(short.head);
    expect(queue.pop()).toBeUndefined();
    // A window made before the driver adds more: new chains are seen on the next pop.
    const { queue: small, driver: smallDriver } = setup({ size: 4 });
    for (let round = 0; round < 10; round++) {
      const heads = [0, 1, 2].map(() => smallDriver.addChain([{ writable: true, length: 1 }]).head);
      expect(small.hasAvailable()).toBe(true);
      const popped = [small.pop()!, small.pop()!];
      small.undoPop();
      popped[1] = small.pop()!;
      popped.push(small.pop()!);
      expect(popped.map((c) => c.head)).toEqual(heads);
      for (const c of popped) small.addUsed(c, 1);
      small.publishUsed();
      expect(smallDriver.takeUsed().map((u) => u.id)).toEqual(heads);
    }
  });

  it('walks an indirect table as one ring slot', () => {
    const { driver, queue } = setup({ indirect: true });
    const { head } = driver.addChain(
      [{ data: bytes(1) }, { data: bytes(2, 3) }, { writable: true, length: 4 }],
      {
        indirect: true,
      },
    );
    const chain = queue.pop()!;
    expect(chain.head).toBe(head);
    expect(chain.count).toBe(3);
    expect(chain.ringSlots).toBe(1);
    expect(chain.readableLength).toBe(3);
    expect(chain.writableLength).toBe(4);
  });

  it('undoPop gives the same chain again', () => {
    const { driver, queue } = setup({ size: 3 });
    driver.addChain([{ writable: true, length: 4 }]);
    const { head } = driver.addChain([
      { writable: true, length: 4 },
      { writable: true, length: 4 },
    ]);
    queue.pop();
    expect(queue.pop()!.head).toBe(head);
    queue.undoPop();
    const again = queue.pop()!;
    expect(again.head).toBe(head);
    expect(again.count).toBe(2);
  });

  it('restores its position and wrap counters from a saved state', () => {
    const { memory, driver, queue } = setup({ size: 4 });
    for (let i = 0; i < 3; i++) {
      driver.addChain([
        { writable: true, length: 1 },
        { writable: true, length: 1 },
      ]);
      queue.addUsed(queue.pop()!, 2);
      queue.publishUsed();
      driver.takeUsed();
    }
    const state = queue.getState();
    expect(state).toEqual({ nextAvail: 2, nextUsed: 2, availWrap: false, usedWrap: false });
    const restored = new PackedQueue(memory, driver.config, state);
    const { head } = driver.addChain([{ writable: true, length: 5 }]);
    const chain = restored.pop()!;
    expect(chain.head).toBe(head);
    restored.addUsed(chain, 5);
    restored.publishUsed();
    expect(driver.takeUsed()).toEqual([{ id: head, length: 5 }]);
    expect(() => new PackedQueue(memory, driver.config, { nextAvail: 4, nextUsed: 0 })).toThrow(
      'invalid-avail-idx',
    );
  });

  it('publishes a batch by storing the first used flags last', () => {
    const { driver, queue } = setup();
    const heads = [0, 1, 2].map(() => driver.addChain([{ writable: true, length: 1 }]).head);
    for (let i = 0; i < 3; i++) queue.addUsed(queue.pop()!, 1);
    // The later used descriptors are written, but the driver polls the first one.
    expect(driver.takeUsed()).toEqual([]);
    queue.publishUsed();
    expect(driver.takeUsed().map((u) => u.id)).toEqual(heads);
  });

  it('clamps the used length to the writable bytes', () => {
    const { driver, queue } = setup();
    driver.addChain([{ data: bytes(1, 2) }, { writable: true, length: 4 }]);
    queue.addUsed(queue.pop()!, 1000);
    queue.publishUsed();
    expect(driver.takeUsed()[0]!.length).toBe(4);
  });

  it('honours the driver event flags ENABLE and DISABLE', () => {
    const { driver, queue } = setup();
    driver.addChain([{ writable: true, length: 1 }]);
    driver.addChain([{ writable: true, length: 1 }]);
    driver.setDriverEvent(RING_EVENT_FLAGS_DISABLE);
    queue.addUsed(queue.pop()!, 1);
    queue.publishUsed();
    expect(queue.needsNotification()).toBe(false);
    expect(queue.needsNotification()).toBe(false); // nothing new
    driver.setDriverEvent(RING_EVENT_FLAGS_ENABLE);
    queue.addUsed(queue.pop()!, 1);
    queue.publishUsed();
    expect(queue.needsNotification()).toBe(true);
    expect(queue.stats.notificationsSuppressed).toBe(1);
    expect(queue.stats.notificationsNeeded).toBe(1);
  });

  it('follows the driver event offset and wrap with RING_EVENT_IDX', () => {
    const { driver, queue } = setup({ size: 4, eventIdx: true });
    const complete = () => {
      driver.addChain([{ writable: true, length: 1 }]);
      queue.addUsed(queue.pop()!, 1);
      queue.publishUsed();
      driver.takeUsed();
    };
    // Interrupt once the device has written the used descriptor at offset 2 (wrap 1).
    driver.setDriverEvent(RING_EVENT_FLAGS_DESC, 2, 1);
    complete(); // used position 0 -> 1: the first check always notifies
    expect(queue.needsNotification()).toBe(true);
    complete(); // 1 -> 2: has not passed 2
    expect(queue.needsNotification()).toBe(false);
    complete(); // 2 -> 3: passed 2
    expect(queue.needsNotification()).toBe(true);
    // Event at offset 1 of the next lap (wrap 0): reached only after wrapping.
    driver.setDriverEvent(RING_EVENT_FLAGS_DESC, 1, 0);
    complete(); // 3 -> 0 (wrap 0)
    expect(queue.needsNotification()).toBe(false);
    complete(); // 0 -> 1
    expect(queue.needsNotification()).toBe(false);
    complete(); // 1 -> 2
    expect(queue.needsNotification()).toBe(true);
  });

  it('asks for kicks with the device event structure', () => {
    const { driver, queue } = setup({ size: 4, eventIdx: true });
    queue.disableNotification();
    expect(driver.deviceEvent.flags).toBe(RING_EVENT_FLAGS_DISABLE);
    driver.addChain([
      { writable: true, length: 1 },
      { writable: true, length: 1 },
      { writable: true, length: 1 },
    ]);
    queue.pop();
    expect(queue.enableNotification()).toBe(false);
    expect(driver.deviceEvent).toEqual({ flags: RING_EVENT_FLAGS_DESC, offset: 3, wrap: 1 });
    driver.addChain([{ writable: true, length: 1 }]);
    expect(queue.enableNotification()).toBe(true);
    const plain = setup();
    plain.queue.disableNotification();
    plain.queue.enableNotification();
    expect(plain.driver.deviceEvent.flags).toBe(RING_EVENT_FLAGS_ENABLE);
  });

  it('packedNeedEvent handles an event one lap behind', () => {
    // size 8, event at offset 7 of wrap 1; we moved from 6 (wrap 1) to 2 (wrap 0).
    expect(packedNeedEvent(8, 0, (1 << 15) | 7, 2, (2 - 4) & 0xffff)).toBe(true);
    expect(packedNeedEvent(8, 1, (1 << 15) | 7, 6, 3)).toBe(false);
  });

  it('rejects bad sizes and misaligned rings at setup', () => {
    const memory = createTestMemory(1 << 16);
    const base = {
      size: 12,
      maxSize: 16,
      desc: 0n,
      driver: 0x200n,
      device: 0x204n,
      eventIdx: false,
      indirect: false,
    };
    expect(new PackedQueue(memory, base).size).toBe(12); // any size, not only powers of two
    expect(() => new PackedQueue(memory, { ...base, size: 0 })).toThrow('invalid-queue-size');
    expect(() => new PackedQueue(memory, { ...base, size: 17 })).toThrow('invalid-queue-size');
    expect(() => new PackedQueue(memory, { ...base, desc: 8n })).toThrow('misaligned-ring');
    expect(() => new PackedQueue(memory, { ...base, driver: 0x202n })).toThrow('misaligned-ring');
    expect(() => new PackedQueue(memory, { ...base, device: 0x1_0000n })).toThrow('ring-unreachable');
  });

  describe('hostile rings', () => {
    const cases: [string, (d: MockPackedQueue, address: bigint) => void, { indirect?: boolean }?][] = [
      ['descriptor-out-of-range', (d, a) => d.writeChain([{ address: a, length: 4, id: 16, flags: 0 }])],
      [
        'chain-too-long',
        (d, a) =>
          d.writeChain(
            Array.from({ length: 16 }, () => ({ address: a, length: 4, id: 0, flags: VIRTQ_DESC_F_NEXT })),
          ),
      ],
      [
        'invalid-packed-descriptor', // the chain continues into a descriptor that is not available
        (d, a) => {
          d.writeChain([{ address: a, length: 4, id: 0, flags: VIRTQ_DESC_F_NEXT }]);
        },
      ],
      [
        'indirect-not-negotiated',
        (d, a) => d.writeChain([{ address: a, length: 16, id: 0, flags: VIRTQ_DESC_F_INDIRECT }]),
      ],
      [
        'indirect-with-next',
        (d, a) =>
          d.writeChain([
            { address: a, length: 16, id: 0, flags: VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT },
            { address: a, length: 4, id: 0, flags: 0 },
          ]),
        { indirect: true },
      ],
      [
        'invalid-packed-descriptor', // indirect inside a list linked by NEXT
        (d, a) =>
          d.writeChain([
            { address: a, length: 4, id: 0, flags: VIRTQ_DESC_F_NEXT },
            { address: a, length: 16, id: 0, flags: VIRTQ_DESC_F_INDIRECT },
          ]),
        { indirect: true },
      ],
      [
        'invalid-indirect-length',
        (d, a) => d.writeChain([{ address: a, length: 20, id: 0, flags: VIRTQ_DESC_F_INDIRECT }]),
        { indirect: true },
      ],
      [
        'chain-too-long',
        (d, a) => d.writeChain([{ address: a, length: 17 * 16, id: 0, flags: VIRTQ_DESC_F_INDIRECT }]),
        { indirect: true },
      ],
      [
        'descriptor-address-invalid',
        (d) => d.writeChain([{ address: 1n << 40n, length: 16, id: 0, flags: VIRTQ_DESC_F_INDIRECT }]),
        { indirect: true },
      ],
      [
        'readable-after-writable',
        (d, a) =>
          d.writeChain([
            { address: a, length: 4, id: 0, flags: VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT },
            { address: a, length: 4, id: 0, flags: 0 },
          ]),
      ],
      [
        'chain-length-overflow',
        (d, a) =>
          d.writeChain([
            { address: a, length: 0xffff_ffff, id: 0, flags: VIRTQ_DESC_F_NEXT },
            { address: a, length: 1, id: 0, flags: 0 },
          ]),
      ],
    ];
    it.each(cases)('breaks the queue with %s', (code, corrupt, options) => {
      const { memory, driver, queue } = setup({ indirect: options?.indirect ?? false });
      corrupt(driver, memory.address(0x9000));
      const error = popError(queue);
      expect(error.code).toBe(code);
      expect(queue.broken?.code).toBe(code);
      expect(queue.pop()).toBeUndefined();
      expect(queue.hasAvailable()).toBe(false);
      expect(queue.publishUsed()).toBe(0);
    });

    it('rejects nested indirect tables and readable-after-writable inside a table', () => {
      for (const [inner, code] of [
        [[{ flags: VIRTQ_DESC_F_INDIRECT }], 'nested-indirect'],
        [[{ flags: VIRTQ_DESC_F_WRITE }, { flags: 0 }], 'readable-after-writable'],
      ] as const) {
        const { memory, driver, queue } = setup({ indirect: true });
        for (const [i, d] of inner.entries()) {
          driver.writeDescriptorAt(0x8000 + 16 * i, { address: 0x9000n, length: 16, id: 0, flags: d.flags });
        }
        driver.writeChain([
          { address: memory.address(0x8000), length: 16 * inner.length, id: 0, flags: VIRTQ_DESC_F_INDIRECT },
        ]);
        expect(popError(queue).code).toBe(code);
      }
    });
  });
});
