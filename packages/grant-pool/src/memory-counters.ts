import type { MemoryCounters } from './guest-memory.js';

/**
 * Counters every Xen strategy keeps, in the same shape so that metrics and the benchmark
 * can compare them. `maps`/`unmaps` count pages (one grant or foreign frame each), not calls.
 */
export interface StrategyCounters extends MemoryCounters {
  /**
   * Calls into the hypervisor service: map batches, unmaps, copy batches. On a real Xen
   * each is at least one ioctl and one hypercall; unmaps also cost a TLB shootdown.
   */
  calls: number;
  /** Pages (persistent pool) or chunks (foreign mapping) found already mapped. */
  cacheHits: number;
  /** Pages or chunks that had to be mapped. */
  cacheMisses: number;
  /** Cached mappings dropped to stay within the configured bound. */
  evictions: number;
  /** Buffers a cache could not serve and that were mapped for the request only. */
  fallbacks: number;
}

export function newStrategyCounters(): StrategyCounters {
  return {
    maps: 0,
    unmaps: 0,
    copies: 0,
    bytesRead: 0,
    bytesWritten: 0,
    faults: 0,
    calls: 0,
    cacheHits: 0,
    cacheMisses: 0,
    evictions: 0,
    fallbacks: 0,
  };
}
