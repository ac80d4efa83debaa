import type { TestMemory } from '@xvio/grant-pool';
import type { MockBuffer, PlacedBuffer, UsedElement } from '@xvio/transport/testing';
import type { QueueWorkload } from './demo-guest-driver.js';

/** What a guest's driver counted for one device (the guest's view, next to the device's own metrics). */
export interface GuestCounters {
  requests: number;
  bytes: number;
  /** Completions the guest found wrong (e.g. a used length beyond its buffer). */
  errors: number;
}

export function newGuestCounters(): GuestCounters {
  return { requests: 0, bytes: 0, errors: 0 };
}

function writableLength(buffers: readonly PlacedBuffer[]): number {
  return buffers.reduce((sum, buffer) => sum + (buffer.writable ? buffer.length : 0), 0);
}

/**
 * virtio-rng's driver (Linux drivers/char/hw_random/virtio-rng.c): one queue, a writable
 * buffer per request, the device fills it with entropy. Sizes vary like `dd bs=`.
 */
export function rngWorkloads(counters: GuestCounters, random: () => number): QueueWorkload[] {
  const sizes = [64, 256, 1024, 4096];
  return [
    {
      depth: 16,
      next: (): MockBuffer[] => [{ writable: true, length: sizes[Math.floor(random() * sizes.length)]! }],
      complete: (used: UsedElement, buffers: readonly PlacedBuffer[], _memory: TestMemory) => {
        counters.requests++;
        if (used.length > writableLength(buffers)) counters.errors++;
        else counters.bytes += used.length;
      },
    },
  ];
}

/** virtio_net_hdr with VERSION_1 (spec 5.1.6): 12 bytes, num_buffers included. */
const NET_HEADER_SIZE = 12;
/** A local-experimental EtherType (IEEE 802): the demo's frames mean nothing to anyone else. */
const DEMO_ETHERTYPE = 0x88b5;
/** Device feature bits 0-23 the demo's driver leaves alone except MAC (5) and STATUS (16). */
export const NET_DEMO_REFUSED_FEATURES = ((1n << 24n) - 1n) & ~((1n << 5n) | (1n << 16n));

export function macBytes(text: string): Uint8Array {
  return Uint8Array.from(text.split(':').map((part) => Number.parseInt(part, 16)));
}

/**
 * virtio-net's driver (Linux drivers/net/virtio_net.c, no offloads): queue 0 keeps receive
 * buffers posted, queue 1 sends Ethernet frames from `mac` to `peer` through the switch.
 * `sent` counts frames the device took; `counters.bytes` counts bytes received.
 */
export function netWorkloads(
  counters: GuestCounters,
  sent: GuestCounters,
  mac: string,
  peer: string,
  random: () => number,
): QueueWorkload[] {
  const source = macBytes(mac);
  const destination = macBytes(peer);
  let sequence = 0;
  const frame = (): Uint8Array => {
    const payload = 64 + Math.floor(random() * 1400);
    const bytes = new Uint8Array(NET_HEADER_SIZE + 14 + payload);
    const view = new DataView(bytes.buffer);
    bytes.set(destination, NET_HEADER_SIZE);
    bytes.set(source, NET_HEADER_SIZE + 6);
    view.setUint16(NET_HEADER_SIZE + 12, DEMO_ETHERTYPE); // network byte order
    view.setUint32(NET_HEADER_SIZE + 14, sequence++ >>> 0);
    return bytes;
  };
  return [
    {
      depth: 64,
      next: (): MockBuffer[] => [{ writable: true, length: NET_HEADER_SIZE + 1514 }],
      complete: (used: UsedElement, buffers: readonly PlacedBuffer[], memory: TestMemory) => {
        counters.requests++;
        if (used.length < NET_HEADER_SIZE + 14 || used.length > writableLength(buffers)) {
          counters.errors++;
          return;
        }
        const first = buffers[0]!;
        const ethertype = memory.dataView.getUint16(first.offset + NET_HEADER_SIZE + 12);
        if (ethertype !== DEMO_ETHERTYPE) counters.errors++;
        else counters.bytes += used.length - NET_HEADER_SIZE;
      },
    },
    {
      depth: 32,
      next: (): MockBuffer[] => [{ data: frame() }],
      complete: (_used: UsedElement, buffers: readonly PlacedBuffer[]) => {
        sent.requests++;
        sent.bytes += (buffers[0]?.length ?? NET_HEADER_SIZE) - NET_HEADER_SIZE;
      },
    },
  ];
}

/**
 * virtio-console's driver (Linux drivers/char/virtio_console.c, port 0 without MULTIPORT):
 * queue 0 keeps receive buffers posted for host input, queue 1 writes console lines.
 * `counters` counts what the guest wrote (`bytes` out); `input` what it read.
 */
export function consoleWorkloads(
  counters: GuestCounters,
  input: GuestCounters,
  guest: string,
): QueueWorkload[] {
  const encoder = new TextEncoder();
  let line = 0;
  return [
    {
      depth: 4,
      next: (): MockBuffer[] => [{ writable: true, length: 256 }],
      complete: (used: UsedElement, buffers: readonly PlacedBuffer[]) => {
        input.requests++;
        if (used.length > writableLength(buffers)) input.errors++;
        else input.bytes += used.length;
      },
    },
    {
      depth: 16,
      next: (): MockBuffer[] => [
        { data: encoder.encode(`[${guest}] console line ${line++}: the quick brown fox\n`) },
      ],
      complete: (_used: UsedElement, buffers: readonly PlacedBuffer[]) => {
        counters.requests++;
        counters.bytes += buffers[0]?.length ?? 0;
      },
    },
  ];
}

/** Device feature bits 0-23: the demo's console driver uses port 0 only (no SIZE, MULTIPORT, EMERG_WRITE). */
export const CONSOLE_DEMO_REFUSED_FEATURES = (1n << 24n) - 1n;
