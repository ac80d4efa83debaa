/** A buffer a guest driver posts: device-readable data, or room the device may write. */
export type DemoBuffer = { readonly data: Uint8Array } | { readonly writable: number };

/** One completed chain as the guest driver sees it. */
export interface Completion {
  /** The used element's length: bytes the device says it wrote. */
  readonly length: number;
  /** What the device wrote, one view per writable buffer. */
  readonly written: readonly Uint8Array[];
}

/** What a guest driver does on one queue: keeps `depth` chains posted and consumes completions. */
export interface QueueWorkload {
  readonly depth: number;
  /** The buffers of the next chain to post, or undefined when there is nothing to post now. */
  next(): DemoBuffer[] | undefined;
  complete(completion: Completion, request: readonly DemoBuffer[]): void;
}

/** What a guest's driver counted for one device (the guest's view, next to the device's own metrics). */
export interface GuestCounters {
  requests: number;
  bytes: number;
  /** Completions the guest found wrong (a used length beyond its buffers, a frame it never sent). */
  errors: number;
}

export function newGuestCounters(): GuestCounters {
  return { requests: 0, bytes: 0, errors: 0 };
}

function writableLength(request: readonly DemoBuffer[]): number {
  return request.reduce((sum, buffer) => sum + ('writable' in buffer ? buffer.writable : 0), 0);
}

function readableLength(request: readonly DemoBuffer[]): number {
  return request.reduce((sum, buffer) => sum + ('data' in buffer ? buffer.data.length : 0), 0);
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
      next: () => [{ writable: sizes[Math.floor(random() * sizes.length)]! }],
      complete: (completion, request) => {
        counters.requests++;
        if (completion.length > writableLength(request)) counters.errors++;
        else counters.bytes += completion.length;
      },
    },
  ];
}

/** virtio_net_hdr with VERSION_1 (spec 5.1.6): 12 bytes, num_buffers included. */
const NET_HEADER_SIZE = 12;
/** A local-experimental EtherType (IEEE 802): the demo's frames mean nothing to anyone else. */
const DEMO_ETHERTYPE = 0x88b5;
/** Device feature bits 0-23 the demo's net driver refuses: all but MAC (5) and STATUS (16). */
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
      next: () => [{ writable: NET_HEADER_SIZE + 1514 }],
      complete: (completion, request) => {
        counters.requests++;
        const first = completion.written[0];
        if (
          completion.length < NET_HEADER_SIZE + 14 ||
          completion.length > writableLength(request) ||
          !first
        ) {
          counters.errors++;
          return;
        }
        const ethertype = (first[NET_HEADER_SIZE + 12]! << 8) | first[NET_HEADER_SIZE + 13]!;
        if (ethertype !== DEMO_ETHERTYPE) counters.errors++;
        else counters.bytes += completion.length - NET_HEADER_SIZE;
      },
    },
    {
      depth: 32,
      next: () => [{ data: frame() }],
      complete: (_completion, request) => {
        sent.requests++;
        sent.bytes += readableLength(request) - NET_HEADER_SIZE;
      },
    },
  ];
}

/**
 * virtio-console's driver (Linux drivers/char/virtio_console.c, port 0 without MULTIPORT):
 * queue 0 keeps receive buffers posted for host input, queue 1 writes console lines.
 * `written` counts what the guest wrote; `input` what it read.
 */
export function consoleWorkloads(
  written: GuestCounters,
  input: GuestCounters,
  guest: string,
): QueueWorkload[] {
  const encoder = new TextEncoder();
  let line = 0;
  return [
    {
      depth: 4,
      next: () => [{ writable: 256 }],
      complete: (completion, request) => {
        input.requests++;
        if (completion.length > writableLength(request)) input.errors++;
        else input.bytes += completion.length;
      },
    },
    {
      depth: 16,
      next: () => [{ data: encoder.encode(`[${guest}] console line ${line++}: the quick brown fox\n`) }],
      complete: (_completion, request) => {
        written.requests++;
        written.bytes += readableLength(request);
      },
    },
  ];
}

/** Device feature bits 0-23: the demo's console driver uses port 0 only (no SIZE, MULTIPORT, EMERG_WRITE). */
export const CONSOLE_DEMO_REFUSED_FEATURES = (1n << 24n) - 1n;
