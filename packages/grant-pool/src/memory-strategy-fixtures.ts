// Simulated guests for the shared strategy suite, the pool tests and the benchmark: a Xen
// simulator with a guest domain whose "kernel" grants pages the way Linux's xen-grant-dma
// does (consecutive references for a multi-page buffer, scattered frames behind them).
import {
  createXenSimulator,
  type ForeignMapping,
  GRANT_ENTRIES_PER_PAGE,
  GRANT_ENTRY_V1_FLAGS,
  GRANT_ENTRY_V1_SIZE,
  GTF_permit_access,
  GTF_readonly,
  type SimDomain,
  writeGrantEntry,
  type XenServices,
  type XenSimulator,
} from '@xvio/xen';
import { ForeignMappingMemory } from './foreign-mapping-memory.js';
import { encodeGrantAddress, PAGE_SIZE } from './grant-address.js';
import { GrantCopyMemory } from './grant-copy-memory.js';
import { GrantMapMemory } from './grant-map-memory.js';
import type { GuestMemory } from './guest-memory.js';
import type { MemoryFaultCode } from './memory-errors.js';
import { PersistentPoolMemory } from './persistent-pool-memory.js';
import { createRegionsMemory } from './regions-memory.js';

/** Linux keeps the first 8 references for the toolstack (GNTTAB_NR_RESERVED_ENTRIES). */
const FIRST_FREE_REF = 8;

/**
 * The guest kernel's side of grant DMA: it writes its own v1 grant table (reached here as
 * the grant-table resource, which is the guest's memory) and ends access through the
 * simulator, which refuses while the backend still maps the page, like Linux's
 * gnttab_end_foreign_access_ref.
 */
export class SimGrantFrontend {
  private readonly table: ForeignMapping;
  private readonly view: DataView;
  private readonly guestServices: XenServices;
  private readonly reserved = new Set<number>();

  constructor(
    sim: XenSimulator,
    readonly guest: SimDomain,
    readonly backendDomid: number,
  ) {
    this.guestServices = guest.services();
    this.table = sim
      .services(0)
      .foreignMemory.mapResource(
        guest.domid,
        { type: 1, id: 0, frame: 0, pages: guest.grantEntries / GRANT_ENTRIES_PER_PAGE },
        { writable: true },
      );
    this.view = new DataView(
      this.table.bytes.buffer,
      this.table.bytes.byteOffset,
      this.table.bytes.byteLength,
    );
  }

  private free(ref: number): boolean {
    return (
      !this.reserved.has(ref) &&
      this.view.getUint16(ref * GRANT_ENTRY_V1_SIZE + GRANT_ENTRY_V1_FLAGS, true) === 0
    );
  }

  /** Grants `frames` under consecutive references (gnttab_alloc_grant_reference_seq); returns the first. */
  grant(frames: readonly number[], readOnly = false): number {
    const count = frames.length;
    for (let first = FIRST_FREE_REF; first + count <= this.guest.grantEntries; first++) {
      let run = 0;
      while (run < count && this.free(first + run)) run++;
      if (run < count) {
        first += run;
        continue;
      }
      frames.forEach((frame, i) => {
        writeGrantEntry(this.view, (first + i) * GRANT_ENTRY_V1_SIZE, {
          domid: this.backendDomid,
          frame,
          flags: GTF_permit_access | (readOnly ? GTF_readonly : 0),
        });
      });
      return first;
    }
    throw new Error(`no ${count} consecutive free grant references`);
  }

  /** Ends access to one reference; throws `XenError` EBUSY while the backend maps it. */
  endAccess(ref: number): void {
    this.guestServices.grants.endAccess(ref);
  }

  /** The guest-visible flags of `ref` (GTF_reading/GTF_writing show the backend's use). */
  flags(ref: number): number {
    return this.view.getUint16(ref * GRANT_ENTRY_V1_SIZE + GRANT_ENTRY_V1_FLAGS, true);
  }

  /** Frees nothing the backend maps: call after it unmapped. */
  close(): void {
    if (this.table.mapped) this.table.unmap();
  }
}

/** A guest buffer as the driver sees it. */
export interface FixtureBuffer {
  /** The address the device gets on the ring. */
  readonly address: bigint;
  readonly length: number;
  /** The driver's view of its bytes. */
  guestRead(): Uint8Array;
  guestWrite(bytes: Uint8Array): void;
  /** The grant references behind it (grant strategies). */
  readonly refs: readonly number[];
}

export interface BufferOptions {
  /** Make the buffer cross a page (and chunk or region) boundary. */
  readonly straddle?: boolean;
  /** Grant it read-only. */
  readonly readOnly?: boolean;
  /** Start it at a page boundary (benchmarks). */
  readonly aligned?: boolean;
}

/** One strategy over a simulated (or plain) guest, for the shared suite. */
export interface StrategyFixture {
  readonly name: string;
  readonly memory: GuestMemory;
  buffer(length: number, options?: BufferOptions): FixtureBuffer;
  /** An address the guest never made reachable, and the faults that may name it. */
  readonly inaccessible: { readonly address: bigint; readonly codes: readonly MemoryFaultCode[] };
  /** An address beyond anything the guest has (a reference beyond its table, a frame beyond RAM). */
  readonly outOfRange: { readonly address: bigint; readonly codes: readonly MemoryFaultCode[] };
  /** An address no guest can form (checked without asking the hypervisor). */
  readonly malformed: { readonly address: bigint; readonly codes: readonly MemoryFaultCode[] };
  /** Whether buffers can be read-only (grants). */
  readonly readOnlyBuffers: boolean;
  /** Whether a view of a straddling buffer is contiguous. */
  readonly contiguousViews: boolean;
  /**
   * How revocation behaves: `busy` while a request maps the buffer and allowed after
   * release (grant-map); allowed at any time, the copy-back faulting (grant-copy); busy until
   * `unmapAll` (persistent pool); undefined when the guest cannot revoke.
   */
  readonly revoke?: 'busy-until-release' | 'allowed' | 'busy-until-unmap-all';
  revokeBuffer?(buffer: FixtureBuffer): void;
  /** Grant flags the guest sees for a buffer's first page. */
  grantFlags?(buffer: FixtureBuffer): number;
  /** Host mappings of the guest's memory the simulator counts (undefined without a simulator). */
  hostMappings(): number | undefined;
  /** Mappings the strategy keeps on purpose between requests (caches). */
  retained(): number;
  close(): Promise<void>;
}

export type SimStrategyName = 'grant-map' | 'grant-copy' | 'persistent-pool' | 'foreign';

export interface SimFixtureOptions {
  readonly guestMemoryBytes?: number;
  /** Persistent pool: pages granted for the pool. */
  readonly poolPages?: number;
  readonly maxPersistentPages?: number;
  /** Foreign: pages per chunk (small by default so buffers cross chunks). */
  readonly chunkPages?: number;
  readonly maxChunks?: number;
}

/** The memory file of a simulated domain, for its live-mapping count (the simulator's own bookkeeping). */
function simMappingCount(domain: SimDomain): number {
  return (domain as unknown as { memoryFile: { liveMappings: number } }).memoryFile.liveMappings;
}

/** A simulator, a guest and one strategy in dom0 reaching the guest's memory. */
export function createSimFixture(
  strategy: SimStrategyName,
  options: SimFixtureOptions = {},
): StrategyFixture & {
  readonly sim: XenSimulator;
  readonly guest: SimDomain;
  readonly frontend: SimGrantFrontend;
  readonly backend: XenServices;
} {
  const sim = createXenSimulator();
  const guestMemoryBytes = options.guestMemoryBytes ?? 8 * 1024 * 1024;
  const guest = sim.createDomain({ memoryBytes: guestMemoryBytes, grantFrames: 8 });
  const backend = sim.services(0);
  const frontend = new SimGrantFrontend(sim, guest, 0);
  const baseline = simMappingCount(guest);
  const common = { grants: backend.grants, domid: guest.domid };
  let memory: GuestMemory;
  let poolRefs: number[] = [];
  /** Frames behind pool references, for the driver's view. */
  const poolFrames = new Map<number, number>();
  let poolNext = 0;
  if (strategy === 'grant-map') memory = new GrantMapMemory(common);
  else if (strategy === 'grant-copy') memory = new GrantCopyMemory(common);
  else if (strategy === 'persistent-pool') {
    const pages = options.poolPages ?? 256;
    const frames = Array.from({ length: pages }, () => guest.allocatePages(1));
    const first = frontend.grant(frames);
    poolRefs = frames.map((_, i) => first + i);
    frames.forEach((frame, i) => {
      poolFrames.set(first + i, frame);
    });
    memory = new PersistentPoolMemory({
      ...common,
      poolRefs,
      maxPersistentPages: options.maxPersistentPages ?? 1056,
    });
  } else {
    memory = new ForeignMappingMemory({
      foreignMemory: backend.foreignMemory,
      domid: guest.domid,
      chunkPages: options.chunkPages ?? 4,
      maxChunks: options.maxChunks ?? 8,
    });
  }

  const grantedBuffer = (frames: number[], first: number, offset: number, length: number): FixtureBuffer => {
    const pages = frames.map((frame) => guest.memory.subarray(frame * PAGE_SIZE, (frame + 1) * PAGE_SIZE));
    const gather = (): Uint8Array => {
      const out = new Uint8Array(length);
      let done = 0;
      let skip = offset;
      for (const page of pages) {
        const n = Math.min(PAGE_SIZE - skip, length - done);
        out.set(page.subarray(skip, skip + n), done);
        done += n;
        skip = 0;
      }
      return out;
    };
    return {
      address: encodeGrantAddress(first, offset),
      length,
      refs: frames.map((_, i) => first + i),
      guestRead: gather,
      guestWrite: (bytes) => {
        let done = 0;
        let skip = offset;
        for (const page of pages) {
          const n = Math.min(PAGE_SIZE - skip, bytes.length - done);
          page.set(bytes.subarray(done, done + n), skip);
          done += n;
          skip = 0;
        }
      },
    };
  };

  let physicalNext = 1024 * 1024;
  const chunkBytes = (options.chunkPages ?? 4) * PAGE_SIZE;
  const buffer = (length: number, bufferOptions: BufferOptions = {}): FixtureBuffer => {
    const offset = bufferOptions.straddle
      ? PAGE_SIZE - Math.min(100, Math.max(1, Math.floor(length / 2)))
      : bufferOptions.aligned
        ? 0
        : 64;
    const pages = Math.max(1, Math.ceil((offset + length) / PAGE_SIZE));
    if (strategy === 'foreign') {
      // The guest uses its RAM as it likes: place the buffer across a chunk boundary when asked.
      let start = physicalNext;
      if (bufferOptions.straddle)
        start = Math.ceil((start + PAGE_SIZE) / chunkBytes) * chunkBytes - (PAGE_SIZE - offset);
      else start += offset;
      physicalNext = Math.ceil((start + length + PAGE_SIZE) / PAGE_SIZE) * PAGE_SIZE;
      if (physicalNext > guestMemoryBytes) throw new Error('fixture guest memory exhausted');
      return {
        address: BigInt(start),
        length,
        refs: [],
        guestRead: () => guest.memory.slice(start, start + length),
        guestWrite: (bytes) => guest.memory.set(bytes, start),
      };
    }
    if (strategy === 'persistent-pool' && !bufferOptions.readOnly && poolNext + pages <= poolRefs.length) {
      const first = poolRefs[poolNext] as number;
      const frames = poolRefs.slice(poolNext, poolNext + pages).map((ref) => poolFrames.get(ref) as number);
      poolNext += pages;
      return grantedBuffer(frames, first, offset, length);
    }
    // Scattered frames (allocated one by one from the top of RAM) behind consecutive refs.
    const frames = Array.from({ length: pages }, () => guest.allocatePages(1));
    const first = frontend.grant(frames, bufferOptions.readOnly ?? false);
    return grantedBuffer(frames, first, offset, length);
  };

  const isGrant = strategy !== 'foreign';
  return {
    name: strategy,
    sim,
    guest,
    frontend,
    backend,
    memory,
    buffer,
    inaccessible: isGrant
      ? { address: encodeGrantAddress(guest.grantEntries - 1), codes: ['grant-not-permitted'] }
      : { address: BigInt(guestMemoryBytes) + 3n * BigInt(PAGE_SIZE), codes: ['unmapped'] },
    outOfRange: isGrant
      ? { address: encodeGrantAddress(guest.grantEntries + 5000), codes: ['grant-out-of-range'] }
      : { address: 1n << 45n, codes: ['unmapped'] },
    malformed: isGrant
      ? { address: (1n << 63n) | (0x1_0000_0000n << 12n), codes: ['grant-out-of-range'] }
      : { address: 1n << 64n, codes: ['invalid-range'] },
    readOnlyBuffers: isGrant,
    contiguousViews: true,
    ...(isGrant
      ? {
          revoke:
            strategy === 'grant-map'
              ? ('busy-until-release' as const)
              : strategy === 'grant-copy'
                ? ('allowed' as const)
                : ('busy-until-unmap-all' as const),
          revokeBuffer: (target: FixtureBuffer) => {
            for (const ref of target.refs) frontend.endAccess(ref);
          },
          grantFlags: (target: FixtureBuffer) => frontend.flags(target.refs[0] as number),
        }
      : {}),
    // The frontend's own grant-table mapping is not the strategy's.
    hostMappings: () => simMappingCount(guest) - baseline,
    retained: () => {
      if (memory instanceof PersistentPoolMemory) return memory.liveMappings();
      if (memory instanceof ForeignMappingMemory) return memory.cachedChunks();
      return 0;
    },
    close: async () => {
      memory.unmapAll();
      frontend.close();
      await sim.close();
    },
  };
}

/** The regions strategy (vhost-user) over plain memory: two adjacent regions, no hypervisor. */
export function createRegionsFixture(): StrategyFixture {
  const regionBytes = 1024 * 1024;
  const backing = [new Uint8Array(regionBytes), new Uint8Array(regionBytes)];
  const memory = createRegionsMemory([
    { guestAddress: 0n, userAddress: 0x7f00_0000_0000n, bytes: backing[0] as Uint8Array },
    { guestAddress: BigInt(regionBytes), userAddress: 0x7f00_1000_0000n, bytes: backing[1] as Uint8Array },
  ]);
  let next = 64 * 1024;
  const read = (start: number, length: number) => {
    const out = new Uint8Array(length);
    for (let i = 0; i < length; i++) {
      const at = start + i;
      out[i] = (backing[at < regionBytes ? 0 : 1] as Uint8Array)[at % regionBytes] as number;
    }
    return out;
  };
  return {
    name: 'regions',
    memory,
    buffer: (length, options = {}) => {
      const start = options.straddle
        ? regionBytes - Math.min(100, Math.max(1, Math.floor(length / 2)))
        : next;
      if (!options.straddle) next += Math.ceil((length + 64) / 64) * 64;
      return {
        address: BigInt(start),
        length,
        refs: [],
        guestRead: () => read(start, length),
        guestWrite: (bytes) => {
          bytes.forEach((value, i) => {
            const at = start + i;
            (backing[at < regionBytes ? 0 : 1] as Uint8Array)[at % regionBytes] = value;
          });
        },
      };
    },
    inaccessible: { address: 4n * BigInt(regionBytes), codes: ['unmapped'] },
    outOfRange: { address: 1n << 45n, codes: ['unmapped'] },
    malformed: { address: 1n << 64n, codes: ['invalid-range', 'unmapped'] },
    readOnlyBuffers: false,
    contiguousViews: false,
    hostMappings: () => undefined,
    retained: () => 0,
    close: async () => {
      memory.unmapAll();
    },
  };
}
