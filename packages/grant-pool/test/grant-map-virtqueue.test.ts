// The grant-map strategy under the real virtqueue code, against a frontend that behaves like
// Linux's xen-grant-dma: it grants every buffer page when it maps a request and ends access
// as soon as the used element appears, and would mark the device broken if a grant were
// still in use then. (The transport package depends on this one, so it is reached by path
// rather than as a dependency, which would make the workspace graph cyclic.)
import { XenError } from '@xvio/xen';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type DeviceContext, openChain, SplitQueue, serviceQueue } from '../../transport/src/index.js';
import { encodeGrantAddress, PAGE_SIZE } from '../src/grant-address.js';
import type { GrantMapMemory } from '../src/grant-map-memory.js';
import { createSimFixture } from '../src/memory-strategy-fixtures.js';

const QUEUE_SIZE = 16;
// Split ring layout (virtio spec 2.7): descriptors 16 bytes each, avail {flags, idx, ring[]},
// used {flags, idx, ring[{id u32, len u32}]}.
const DESC_ADDR = 0;
const DESC_LEN = 8;
const DESC_FLAGS = 12;
const DESC_NEXT = 14;
const F_NEXT = 1;
const F_WRITE = 2;

interface DriverBuffer {
  readonly length: number;
  readonly write: boolean;
  readonly readOnlyGrant?: boolean;
  /** Use this address instead of granting (a bogus descriptor). */
  readonly address?: bigint;
  readonly contents?: Uint8Array;
}

interface Mapped {
  readonly address: bigint;
  readonly length: number;
  readonly write: boolean;
  readonly refs: number[];
  readonly frames: number[];
}

describe('grant-map strategy under SplitQueue and serviceQueue with a Linux-like frontend', () => {
  let fixture: ReturnType<typeof createSimFixture>;

  beforeEach(() => {
    fixture = createSimFixture('grant-map');
  });

  afterEach(async () => {
    await fixture.close();
  });

  function setup() {
    const { guest, frontend } = fixture;
    const memory = fixture.memory as GrantMapMemory;
    const view = guest.memoryView;
    // The rings: dma_alloc_coherent pages, granted for the device's lifetime.
    const ringFrames = [guest.allocatePages(1), guest.allocatePages(1), guest.allocatePages(1)];
    const ringRefs = ringFrames.map((frame) => frontend.grant([frame]));
    const [descBase, availBase, usedBase] = ringFrames.map((frame) => frame * PAGE_SIZE) as [
      number,
      number,
      number,
    ];
    const free = Array.from({ length: QUEUE_SIZE }, (_, i) => i);
    const inFlight = new Map<number, { descriptors: number[]; buffers: Mapped[] }>();
    let availIdx = 0;
    let lastUsed = 0;
    const revokeFailures: unknown[] = [];
    const completions: { head: number; length: number; reply: Uint8Array }[] = [];
    let revoked = 0;

    const driver = {
      /** dma_map_single per buffer: grant each page (consecutive refs), then make the chain available. */
      submit(buffers: readonly DriverBuffer[]): number {
        const descriptors = buffers.map(() => free.shift() as number);
        const mapped: Mapped[] = buffers.map((buffer) => {
          if (buffer.address !== undefined) {
            return {
              address: buffer.address,
              length: buffer.length,
              write: buffer.write,
              refs: [],
              frames: [],
            };
          }
          const pages = Math.ceil(buffer.length / PAGE_SIZE);
          const frames = Array.from({ length: pages }, () => guest.allocatePages(1));
          frames.forEach((frame, i) => {
            const page = guest.memory.subarray(frame * PAGE_SIZE, (frame + 1) * PAGE_SIZE);
            page.fill(0);
            if (buffer.contents) page.set(buffer.contents.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE));
          });
          const first = frontend.grant(frames, buffer.readOnlyGrant ?? false);
          const refs = frames.map((_, i) => first + i);
          return {
            address: encodeGrantAddress(first),
            length: buffer.length,
            write: buffer.write,
            refs,
            frames,
          };
        });
        mapped.forEach((buffer, i) => {
          const at = descBase + (descriptors[i] as number) * 16;
          view.setBigUint64(at + DESC_ADDR, buffer.address, true);
          view.setUint32(at + DESC_LEN, buffer.length, true);
          const last = i === mapped.length - 1;
          view.setUint16(at + DESC_FLAGS, (last ? 0 : F_NEXT) | (buffer.write ? F_WRITE : 0), true);
          view.setUint16(at + DESC_NEXT, last ? 0 : (descriptors[i + 1] as number), true);
        });
        const head = descriptors[0] as number;
        inFlight.set(head, { descriptors, buffers: mapped });
        view.setUint16(availBase + 4 + 2 * (availIdx % QUEUE_SIZE), head, true);
        availIdx = (availIdx + 1) & 0xffff;
        view.setUint16(availBase + 2, availIdx, true);
        return head;
      },
      /** The interrupt handler: reap used elements and dma_unmap each buffer, ending access at once. */
      reap(): void {
        const usedIdx = view.getUint16(usedBase + 2, true);
        while (lastUsed !== usedIdx) {
          const slot = usedBase + 4 + 8 * (lastUsed % QUEUE_SIZE);
          const head = view.getUint32(slot, true);
          const length = view.getUint32(slot + 4, true);
          lastUsed = (lastUsed + 1) & 0xffff;
          const request = inFlight.get(head);
          if (!request) throw new Error(`device returned unknown head ${head}`);
          inFlight.delete(head);
          let reply = new Uint8Array(0);
          for (const buffer of request.buffers) {
            if (buffer.write && buffer.frames.length > 0) {
              reply = new Uint8Array(buffer.length);
              buffer.frames.forEach((frame, i) => {
                reply.set(
                  guest.memory.subarray(
                    frame * PAGE_SIZE,
                    frame * PAGE_SIZE + Math.min(PAGE_SIZE, buffer.length - i * PAGE_SIZE),
                  ),
                  i * PAGE_SIZE,
                );
              });
            }
            for (const ref of buffer.refs) {
              try {
                frontend.endAccess(ref);
                revoked++;
              } catch (error) {
                // Linux: "grant still in use", the device is broken for good.
                revokeFailures.push(error);
              }
            }
            for (const frame of buffer.frames) guest.freePages(frame, 1);
          }
          free.push(...request.descriptors);
          completions.push({ head, length, reply });
        }
      },
      get revoked() {
        return revoked;
      },
      revokeFailures,
      completions,
    };

    const failures: unknown[] = [];
    const queue = new SplitQueue(memory, {
      size: QUEUE_SIZE,
      maxSize: QUEUE_SIZE,
      desc: encodeGrantAddress(ringRefs[0] as number),
      driver: encodeGrantAddress(ringRefs[1] as number),
      device: encodeGrantAddress(ringRefs[2] as number),
      eventIdx: false,
      indirect: false,
    });
    let liveAtInterrupt = -1;
    const context: DeviceContext = {
      memory,
      features: 0n,
      queues: [queue],
      interrupt: () => {
        // The earliest the guest can see the used elements: nothing but the rings may be mapped.
        liveAtInterrupt = memory.liveMappings();
        driver.reap();
      },
      configChanged: () => {},
      fail: (error) => failures.push(error),
      signal: new AbortController().signal,
    };
    // A small device: reads the request, writes it back upper-cased, repeated to fill the reply.
    const serve = () =>
      serviceQueue(context, 0, (chain) => {
        const io = openChain(memory, chain);
        try {
          const request = io.reader.readExact(io.reader.remaining) ?? new Uint8Array(0);
          const reply = new Uint8Array(io.writer.remaining);
          for (let i = 0; i < reply.length; i++) {
            const byte = request[i % Math.max(request.length, 1)] ?? 0;
            reply[i] = byte >= 0x61 && byte <= 0x7a ? byte - 0x20 : byte;
          }
          io.writer.write(reply);
        } finally {
          io.close();
        }
        return io.writer.written;
      });
    return { memory, driver, serve, failures, liveAtInterrupt: () => liveAtInterrupt, ringRefs };
  }

  it('never leaves a grant mapped when the used element is published, so every revocation succeeds', () => {
    const { driver, serve, failures, memory, liveAtInterrupt } = setup();
    const text = new TextEncoder().encode('hello, xen grant dma');
    for (let round = 0; round < 20; round++) {
      driver.submit([
        { length: text.length, write: false, contents: text },
        { length: 3 * PAGE_SIZE + 17, write: true },
      ]);
      if (round % 3 === 0)
        driver.submit([
          { length: 64, write: false, contents: text },
          { length: 100, write: true },
        ]);
      const result = serve();
      expect(result.faulted).toBe(0);
    }
    expect(failures).toEqual([]);
    expect(driver.revokeFailures).toEqual([]);
    expect(driver.completions).toHaveLength(27);
    // Pages per chain: 1 + 4 (big) or 1 + 1 (small); every one was revoked after completion.
    expect(driver.revoked).toBe(20 * 5 + 7 * 2);
    const big = driver.completions.find((completion) => completion.reply.length === 3 * PAGE_SIZE + 17);
    expect(big?.length).toBe(3 * PAGE_SIZE + 17);
    expect(new TextDecoder().decode(big?.reply.subarray(0, text.length))).toBe('HELLO, XEN GRANT DMA');
    // The three rings stay mapped (views); nothing else.
    expect(liveAtInterrupt()).toBe(3);
    expect(memory.liveMappings()).toBe(3);
    expect(fixture.hostMappings()).toBe(3);
    memory.unmapAll();
    expect(fixture.hostMappings()).toBe(0);
  });

  it('fails a request on a read-only or revoked grant with length 0 and goes on', () => {
    const { driver, serve, failures, memory } = setup();
    const text = new TextEncoder().encode('abc');
    driver.submit([
      { length: 3, write: false, contents: text },
      { length: 64, write: true, readOnlyGrant: true },
    ]);
    driver.submit([
      { length: 3, write: false, contents: text },
      { length: 64, write: true, address: encodeGrantAddress(fixture.guest.grantEntries - 1) },
    ]);
    driver.submit([
      { length: 3, write: false, contents: text },
      { length: 8, write: true },
    ]);
    const result = serve();
    expect(result.faulted).toBe(2);
    expect(failures).toEqual([]);
    expect(driver.completions.map((completion) => completion.length)).toEqual([0, 0, 8]);
    expect(new TextDecoder().decode(driver.completions[2]?.reply.subarray(0, 3))).toBe('ABC');
    expect(driver.revokeFailures).toEqual([]);
    expect(memory.counters.faults).toBe(2);
    expect(memory.liveMappings()).toBe(3);
  });

  it('marks the device for reset when a descriptor is not a grant address', () => {
    const { driver, serve, failures, memory } = setup();
    driver.submit([{ length: 16, write: false, address: 0x1000n }]);
    serve();
    expect(failures).toHaveLength(1);
    expect((failures[0] as { code?: string }).code).toBe('unmapped');
    expect(driver.completions).toEqual([]);
    // Nothing of the bad chain stays mapped: only the rings.
    expect(memory.liveMappings()).toBe(3);
    expect(fixture.hostMappings()).toBe(3);
  });

  it('shows why: a grant mapped across completion cannot be revoked', () => {
    const { memory } = setup();
    const frame = fixture.guest.allocatePages(1);
    const ref = fixture.frontend.grant([frame]);
    const mapped = memory.map([{ address: encodeGrantAddress(ref), length: 10, access: 'write' }]);
    let error: unknown;
    try {
      fixture.frontend.endAccess(ref);
    } catch (caught) {
      error = caught;
    }
    expect(XenError.isInstance(error) && error.code).toBe('EBUSY');
    mapped.release([10]);
    fixture.frontend.endAccess(ref);
  });
});
