import type { MemoryRange } from '@xvio/grant-pool';

/**
 * One request: the descriptors of a chain as they were read from the ring, once. The fields
 * are copies (never re-read from guest memory), so what the device validates is what it uses.
 *
 * Descriptors are stored flat, four numbers each: address low 32 bits, address high 32 bits,
 * length, and 1 when device-writable. Readable descriptors all come before writable ones
 * (the queue rejects other orders, spec 2.7.4.2).
 */
export class DescriptorChain {
  constructor(
    /** The id to return in the used element: the head index (split) or the buffer id (packed). */
    readonly head: number,
    /** Flat descriptor fields, see the class comment. */
    private readonly fields: number[],
    readonly readableLength: number,
    readonly writableLength: number,
    /** Ring slots the chain used (packed rings advance the used index by it; 1 for indirect). */
    readonly ringSlots: number,
  ) {}

  get count(): number {
    return this.fields.length >> 2;
  }

  /** Number of device-readable descriptors (they come first). */
  get readableCount(): number {
    let n = 0;
    for (let i = 3; i < this.fields.length; i += 4) if (this.fields[i] === 0) n++;
    return n;
  }

  address(index: number): bigint {
    const base = index << 2;
    return (BigInt(this.fields[base + 1]!) << 32n) | BigInt(this.fields[base]!);
  }

  length(index: number): number {
    return this.fields[(index << 2) + 2]!;
  }

  isWritable(index: number): boolean {
    return this.fields[(index << 2) + 3] === 1;
  }

  /** The chain's buffers as memory ranges, readable first. */
  ranges(): MemoryRange[] {
    const ranges: MemoryRange[] = [];
    for (let i = 0; i < this.count; i++) {
      ranges.push({
        address: this.address(i),
        length: this.length(i),
        access: this.isWritable(i) ? 'write' : 'read',
      });
    }
    return ranges;
  }
}
