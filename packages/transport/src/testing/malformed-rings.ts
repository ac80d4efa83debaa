import type { TestMemory } from '@xvio/grant-pool';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../split-ring-wire.js';
import type { MockPackedQueue, RawPackedDescriptor } from './mock-packed-queue.js';
import type { MockSplitQueue, RawDescriptor } from './mock-split-queue.js';

/**
 * One way a driver can corrupt a ring, with the fault the device must report. `codes` lists
 * acceptable `code`s of the fault (a `VirtqueueError`, or a `GuestMemoryError` when the
 * device reaches a buffer outside guest memory).
 */
export interface MalformedRingCase<Queue> {
  readonly name: string;
  readonly codes: readonly string[];
  /** Only meaningful when VIRTIO_F_INDIRECT_DESC was (true) or was not (false) negotiated. */
  readonly indirect?: boolean;
  /** Writes the corruption and makes it available; the caller kicks. */
  corrupt(queue: Queue, memory: TestMemory): void;
}

/** An address just past the end of guest memory: no strategy may reach it. */
const outside = (memory: TestMemory) => memory.base + BigInt(memory.size) + 0x1000n;

/** A real buffer in the queue's arena. */
function buffer(
  queue: { arena: { allocate(length: number, alignment?: number): number } },
  memory: TestMemory,
) {
  return memory.address(queue.arena.allocate(64, 16));
}

/** Writes descriptors at table indices and makes `head` available. */
function splitChain(
  queue: MockSplitQueue,
  descriptors: readonly [number, RawDescriptor][],
  head: number,
): void {
  for (const [index, descriptor] of descriptors) queue.writeDescriptor(index, descriptor);
  queue.setAvailEntry(queue.availIndex, head);
  queue.setAvailIdx(queue.availIndex + 1);
}

/** Writes an indirect table in the arena; returns its guest address. */
function table(
  queue: MockSplitQueue | MockPackedQueue,
  memory: TestMemory,
  entries: readonly RawDescriptor[],
): bigint {
  const packed = queue.packed;
  const offset = queue.arena.allocate(Math.max(entries.length, 1) * 16, 16);
  entries.forEach((entry, i) => {
    const view = memory.dataView;
    const at = offset + i * 16;
    view.setBigUint64(at, entry.address, true);
    view.setUint32(at + 8, entry.length >>> 0, true);
    // Split: flags @12, next @14 (2.7.5); packed: id @12, flags @14 (2.8.13).
    view.setUint16(at + 12, packed ? 0 : entry.flags, true);
    view.setUint16(at + 14, packed ? entry.flags : entry.next, true);
  });
  return memory.address(offset);
}

/** Every split-ring corruption of spec 2.7 the device must survive (NEEDS_RESET, no throw). */
export const splitMalformedCases: readonly MalformedRingCase<MockSplitQueue>[] = [
  {
    name: 'avail.idx more than queue size ahead (2.7.13.3)',
    codes: ['invalid-avail-idx'],
    corrupt: (q) => q.setAvailIdx(q.availIndex + q.size + 1),
  },
  {
    name: 'head index out of range (2.7.5)',
    codes: ['descriptor-out-of-range'],
    corrupt: (q) => {
      q.setAvailEntry(q.availIndex, q.size);
      q.setAvailIdx(q.availIndex + 1);
    },
  },
  {
    name: 'next index out of range (2.7.5)',
    codes: ['descriptor-out-of-range'],
    corrupt: (q, m) =>
      splitChain(
        q,
        [[0, { address: buffer(q, m), length: 16, flags: VIRTQ_DESC_F_NEXT, next: q.size + 3 }]],
        0,
      ),
  },
  {
    name: 'descriptor loop (2.7.5.3.1)',
    codes: ['chain-too-long'],
    corrupt: (q, m) => {
      const a = buffer(q, m);
      splitChain(
        q,
        [
          [0, { address: a, length: 16, flags: VIRTQ_DESC_F_NEXT, next: 1 }],
          [1, { address: a, length: 16, flags: VIRTQ_DESC_F_NEXT, next: 0 }],
        ],
        0,
      );
    },
  },
  {
    name: 'total length of 2^32 or more (2.7.5)',
    codes: ['chain-length-overflow'],
    corrupt: (q, m) => {
      const a = buffer(q, m);
      splitChain(
        q,
        [
          [0, { address: a, length: 0xffff_ffff, flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, next: 1 }],
          [1, { address: a, length: 16, flags: VIRTQ_DESC_F_WRITE, next: 0 }],
        ],
        0,
      );
    },
  },
  {
    name: 'readable descriptor after a writable one (2.7.4.2)',
    codes: ['readable-after-writable'],
    corrupt: (q, m) => {
      const a = buffer(q, m);
      splitChain(
        q,
        [
          [0, { address: a, length: 16, flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, next: 1 }],
          [1, { address: a, length: 16, flags: 0, next: 0 }],
        ],
        0,
      );
    },
  },
  {
    name: 'buffer outside guest memory (2.7.5)',
    codes: ['unmapped', 'descriptor-address-invalid'],
    corrupt: (q, m) => {
      splitChain(
        q,
        [
          [0, { address: outside(m), length: 16, flags: VIRTQ_DESC_F_NEXT, next: 1 }],
          [1, { address: outside(m), length: 64, flags: VIRTQ_DESC_F_WRITE, next: 0 }],
        ],
        0,
      );
    },
  },
  {
    name: 'indirect descriptor without VIRTIO_F_INDIRECT_DESC (2.7.5.3.1)',
    codes: ['indirect-not-negotiated'],
    indirect: false,
    corrupt: (q, m) =>
      splitChain(q, [[0, { address: buffer(q, m), length: 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 }]], 0),
  },
  {
    name: 'indirect table inside an indirect table (2.7.5.3.1)',
    codes: ['nested-indirect'],
    indirect: true,
    corrupt: (q, m) => {
      const inner = table(q, m, [{ address: buffer(q, m), length: 16, flags: VIRTQ_DESC_F_WRITE, next: 0 }]);
      const outer = table(q, m, [{ address: inner, length: 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 }]);
      splitChain(q, [[0, { address: outer, length: 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 }]], 0);
    },
  },
  {
    name: 'indirect together with next (2.7.5.3.1)',
    codes: ['indirect-with-next'],
    indirect: true,
    corrupt: (q, m) => {
      const inner = table(q, m, [{ address: buffer(q, m), length: 16, flags: VIRTQ_DESC_F_WRITE, next: 0 }]);
      splitChain(
        q,
        [
          [0, { address: inner, length: 16, flags: VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, next: 1 }],
          [1, { address: buffer(q, m), length: 16, flags: VIRTQ_DESC_F_WRITE, next: 0 }],
        ],
        0,
      );
    },
  },
  {
    name: 'indirect table length not a multiple of 16 (2.7.5.3.1)',
    codes: ['invalid-indirect-length'],
    indirect: true,
    corrupt: (q, m) => {
      const inner = table(q, m, [{ address: buffer(q, m), length: 16, flags: VIRTQ_DESC_F_WRITE, next: 0 }]);
      splitChain(q, [[0, { address: inner, length: 20, flags: VIRTQ_DESC_F_INDIRECT, next: 0 }]], 0);
    },
  },
  {
    name: 'indirect table outside guest memory (2.7.5.3.1)',
    codes: ['descriptor-address-invalid'],
    indirect: true,
    corrupt: (q, m) =>
      splitChain(q, [[0, { address: outside(m), length: 32, flags: VIRTQ_DESC_F_INDIRECT, next: 0 }]], 0),
  },
];

function packedChain(queue: MockPackedQueue, descriptors: readonly RawPackedDescriptor[]): void {
  queue.writeChain(descriptors);
}

/** Every packed-ring corruption of spec 2.8 the device must survive (NEEDS_RESET, no throw). */
export const packedMalformedCases: readonly MalformedRingCase<MockPackedQueue>[] = [
  {
    name: 'buffer id out of range (2.8.13)',
    codes: ['descriptor-out-of-range'],
    corrupt: (q, m) =>
      packedChain(q, [{ address: buffer(q, m), length: 16, id: q.size, flags: VIRTQ_DESC_F_WRITE }]),
  },
  {
    name: 'list as long as the ring still asking for more (2.8.17)',
    codes: ['chain-too-long'],
    corrupt: (q, m) => {
      const a = buffer(q, m);
      packedChain(
        q,
        Array.from({ length: q.size }, () => ({
          address: a,
          length: 16,
          id: 0,
          flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE,
        })),
      );
    },
  },
  {
    name: 'list continuing into a descriptor that is not available (2.8.17)',
    codes: ['invalid-packed-descriptor'],
    corrupt: (q, m) =>
      packedChain(q, [
        { address: buffer(q, m), length: 16, id: 0, flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE },
      ]),
  },
  {
    name: 'total length of 2^32 or more (2.8.4)',
    codes: ['chain-length-overflow'],
    corrupt: (q, m) => {
      const a = buffer(q, m);
      packedChain(q, [
        { address: a, length: 0xffff_ffff, id: 0, flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE },
        { address: a, length: 16, id: 0, flags: VIRTQ_DESC_F_WRITE },
      ]);
    },
  },
  {
    name: 'readable descriptor after a writable one (2.8.17)',
    codes: ['readable-after-writable'],
    corrupt: (q, m) => {
      const a = buffer(q, m);
      packedChain(q, [
        { address: a, length: 16, id: 0, flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE },
        { address: a, length: 16, id: 0, flags: 0 },
      ]);
    },
  },
  {
    name: 'buffer outside guest memory (2.8.4)',
    codes: ['unmapped', 'descriptor-address-invalid'],
    corrupt: (q, m) =>
      packedChain(q, [
        { address: outside(m), length: 16, id: 0, flags: VIRTQ_DESC_F_NEXT },
        { address: outside(m), length: 64, id: 0, flags: VIRTQ_DESC_F_WRITE },
      ]),
  },
  {
    name: 'indirect descriptor without VIRTIO_F_INDIRECT_DESC (2.8.19)',
    codes: ['indirect-not-negotiated'],
    indirect: false,
    corrupt: (q, m) =>
      packedChain(q, [{ address: buffer(q, m), length: 16, id: 0, flags: VIRTQ_DESC_F_INDIRECT }]),
  },
  {
    name: 'indirect table inside an indirect table (2.8.19)',
    codes: ['nested-indirect'],
    indirect: true,
    corrupt: (q, m) => {
      const inner = table(q, m, [{ address: buffer(q, m), length: 16, flags: VIRTQ_DESC_F_WRITE, next: 0 }]);
      const outer = table(q, m, [{ address: inner, length: 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 }]);
      packedChain(q, [{ address: outer, length: 16, id: 0, flags: VIRTQ_DESC_F_INDIRECT }]);
    },
  },
  {
    name: 'indirect together with next (2.8.19)',
    codes: ['indirect-with-next'],
    indirect: true,
    corrupt: (q, m) => {
      const inner = table(q, m, [{ address: buffer(q, m), length: 16, flags: VIRTQ_DESC_F_WRITE, next: 0 }]);
      packedChain(q, [
        { address: inner, length: 16, id: 0, flags: VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT },
        { address: buffer(q, m), length: 16, id: 0, flags: VIRTQ_DESC_F_WRITE },
      ]);
    },
  },
  {
    name: 'indirect descriptor inside a list linked by next (2.8.19)',
    codes: ['invalid-packed-descriptor'],
    indirect: true,
    corrupt: (q, m) => {
      const inner = table(q, m, [{ address: buffer(q, m), length: 16, flags: VIRTQ_DESC_F_WRITE, next: 0 }]);
      packedChain(q, [
        { address: buffer(q, m), length: 16, id: 0, flags: VIRTQ_DESC_F_NEXT },
        { address: inner, length: 16, id: 0, flags: VIRTQ_DESC_F_INDIRECT },
      ]);
    },
  },
  {
    name: 'indirect table length not a multiple of 16 (2.8.19)',
    codes: ['invalid-indirect-length'],
    indirect: true,
    corrupt: (q, m) => {
      const inner = table(q, m, [{ address: buffer(q, m), length: 16, flags: VIRTQ_DESC_F_WRITE, next: 0 }]);
      packedChain(q, [{ address: inner, length: 20, id: 0, flags: VIRTQ_DESC_F_INDIRECT }]);
    },
  },
  {
    name: 'indirect table outside guest memory (2.8.19)',
    codes: ['descriptor-address-invalid'],
    indirect: true,
    corrupt: (q, m) =>
      packedChain(q, [{ address: outside(m), length: 32, id: 0, flags: VIRTQ_DESC_F_INDIRECT }]),
  },
];
