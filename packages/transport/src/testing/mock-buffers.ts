import type { TestMemory } from '@xvio/grant-pool';

/** A buffer a mock driver adds to a chain: readable (with data) or writable (with a length). */
export type MockBuffer =
  | { readonly writable?: false; readonly data: Uint8Array }
  | { readonly writable: true; readonly length: number };

export interface UsedElement {
  id: number;
  length: number;
}

/** A small deterministic PRNG (mulberry32), so that test layouts are reproducible from a seed. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Places buffers in test memory with random gaps between them, wrapping around when the
 * arena is full (older buffers are overwritten: tests keep few buffers in flight).
 */
export class BufferArena {
  private cursor = 0;
  private readonly random: () => number;

  constructor(
    readonly memory: TestMemory,
    readonly start: number,
    readonly size: number,
    seed: number,
  ) {
    if (size <= 0) throw new Error('mock queue: no room for buffers');
    this.random = seededRandom(seed);
  }

  /** Reserves `length` bytes aligned to `alignment` after a random gap; returns the offset in memory. */
  allocate(length: number, alignment = 1): number {
    const gap = Math.floor(this.random() * 64);
    let offset = alignUp(this.start + this.cursor + gap, alignment);
    if (offset + length > this.start + this.size) {
      offset = alignUp(this.start, alignment);
      if (offset + length > this.start + this.size)
        throw new Error(`mock queue: buffer of ${length} bytes does not fit`);
    }
    this.cursor = offset + length - this.start;
    return offset;
  }

  place(buffer: MockBuffer): { address: bigint; length: number; writable: boolean; offset: number } {
    if (buffer.writable) {
      const offset = this.allocate(buffer.length);
      this.memory.bytes.fill(0xee, offset, offset + buffer.length);
      return { address: this.memory.address(offset), length: buffer.length, writable: true, offset };
    }
    const offset = this.allocate(buffer.data.length);
    this.memory.bytes.set(buffer.data, offset);
    return { address: this.memory.address(offset), length: buffer.data.length, writable: false, offset };
  }
}

function alignUp(value: number, to: number): number {
  return Math.ceil(value / to) * to;
}
