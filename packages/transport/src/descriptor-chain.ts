import type { MemoryAccess, MemoryRange } from '@xvio/grant-pool';

/** Assembles a 64-bit address from its halves (see `DescriptorChain.address`). */
const addressScratch = new DataView(new ArrayBuffer(8));

/**
 * One address from its 32-bit halves: one conversion while it fits a double exactly (high <
 * 2^21); else (grant addresses, bit 63) the halves are stored and read back as one u64, which
 * allocates one BigInt instead of four.
 */
function joinAddress(low: number, high: number): bigint {
  if (high < 0x20_0000) return BigInt(high * 0x1_0000_0000 + low);
  addressScratch.setUint32(0, low, true);
  addressScratch.setUint32(4, high, true);
  return addressScratch.getBigUint64(0, true);
}

/**
 * A descriptor's buffer as a `MemoryRange` that also carries its address as the two 32-bit
 * numbers the ring held (`addressLow`, `addressHigh`): a strategy that decodes addresses
 * (grant references, page offsets) reads those with no BigInt arithmetic, and `address` is
 * made only when something asks for it.
 */
export class DescriptorRange implements MemoryRange {
  private joined: bigint | undefined = undefined;

  constructor(
    readonly addressLow: number,
    readonly addressHigh: number,
    readonly length: number,
    readonly access: MemoryAccess,
  ) {}

  get address(): bigint {
    if (this.joined === undefined) this.joined = joinAddress(this.addressLow, this.addressHigh);
    return this.joined;
  }
}

/**
 * One request: the descriptors of a chain as they were read from the ring, once. The fields
 * are copies (never re-read from guest memory), so what the device validates is what it uses.
 *
 * Descriptors are stored flat, four numbers each: address low 32 bits, address high 32 bits,
 * length, and 1 when device-writable. Readable descriptors all come before writable ones
 * (the queue rejects other orders, spec 2.7.4.2 / 2.8.17).
 *
 * Chains a queue pops may be recycled: after `queue.recycle(chain)` (which `serviceQueue`
 * calls once a handler completed a chain) the queue reuses the object for a later `pop`, so
 * a device must not keep a recycled chain. A chain nobody recycles is an ordinary object.
 */
export class DescriptorChain {
  /** The id to return in the used element: the head index (split) or the buffer id (packed). */
  readonly head: number;
  readonly readableLength: number;
  readonly writableLength: number;
  /** Ring slots the chain used (packed rings advance the used index by it; 1 for indirect). */
  readonly ringSlots: number;
  /** Number of descriptors. */
  readonly count: number;
  /** Flat descriptor fields, see the class comment; entries past `count * 4` are stale. */
  private readonly fields: number[];
  /** The pool that may reuse this object (@internal). */
  poolOwner: object | undefined;
  /** Whether it sits in that pool now (@internal). */
  pooled: boolean;

  constructor(
    head: number,
    fields: number[],
    readableLength: number,
    writableLength: number,
    ringSlots: number,
  ) {
    this.head = head;
    this.readableLength = readableLength;
    this.writableLength = writableLength;
    this.ringSlots = ringSlots;
    this.count = fields.length >> 2;
    this.fields = fields;
    this.poolOwner = undefined;
    this.pooled = false;
  }

  /** Number of device-readable descriptors (they come first). */
  get readableCount(): number {
    let n = 0;
    for (let i = 0; i < this.count; i++) if (this.fields[(i << 2) + 3] === 0) n++;
    return n;
  }

  address(index: number): bigint {
    const base = index << 2;
    return joinAddress(this.fields[base]!, this.fields[base + 1]!);
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

  /**
   * The chain's buffers as `DescriptorRange`s, readable first: the same ranges as `ranges()`,
   * with the address halves for strategies that decode them (no BigInt per buffer).
   */
  descriptorRanges(): DescriptorRange[] {
    const count = this.count;
    const fields = this.fields;
    const ranges = new Array<DescriptorRange>(count);
    for (let i = 0; i < count; i++) {
      const base = i << 2;
      ranges[i] = new DescriptorRange(
        fields[base]!,
        fields[base + 1]!,
        fields[base + 2]!,
        fields[base + 3] === 1 ? 'write' : 'read',
      );
    }
    return ranges;
  }
}

/** The fields a queue fills when it (re)uses a chain object. @internal */
export interface ChainFields {
  head: number;
  readableLength: number;
  writableLength: number;
  ringSlots: number;
  count: number;
  fields: number[];
  poolOwner: object | undefined;
  pooled: boolean;
}

/**
 * A queue's pool of chain objects. `take` gives a chain to fill (the last one given back,
 * or new); `give` takes back a chain of this pool, once, keeping at most `limit`.
 * @internal
 */
export class ChainPool {
  /** The most recently given chain: a device that completes chains as it pops them never touches `free`. */
  private spare: ChainFields | undefined = undefined;
  private readonly free: ChainFields[] = [];

  constructor(private readonly limit: number) {}

  take(): ChainFields {
    let chain = this.spare;
    if (chain !== undefined) {
      this.spare = undefined;
    } else {
      chain = this.free.pop();
      if (chain === undefined) {
        chain = new DescriptorChain(0, [], 0, 0, 0) as unknown as ChainFields;
        chain.poolOwner = this;
      }
    }
    chain.pooled = false;
    return chain;
  }

  give(given: DescriptorChain): void {
    const chain = given as unknown as ChainFields;
    if (chain.poolOwner !== this || chain.pooled) return;
    if (this.spare === undefined) {
      chain.pooled = true;
      this.spare = chain;
    } else if (this.free.length < this.limit) {
      chain.pooled = true;
      this.free.push(chain);
    }
  }
}
