import { closeSync, openSync, writeSync } from 'node:fs';

// pcap file format (the classic libpcap format, draft-ietf-opsawg-pcap): a 24-byte global
// header then one 16-byte record header per packet. We write little-endian, which readers
// detect from the magic number.
export const PCAP_MAGIC_MICROSECONDS = 0xa1b2c3d4;
export const PCAP_VERSION_MAJOR = 2;
export const PCAP_VERSION_MINOR = 4;
export const PCAP_LINKTYPE_ETHERNET = 1;
export const PCAP_GLOBAL_HEADER_SIZE = 24;
export const PCAP_RECORD_HEADER_SIZE = 16;
/** GSO frames reach 64 KiB plus headers; tcpdump's default snap length covers them. */
export const PCAP_SNAPLEN = 262_144;
const FLUSH_AT = 256 * 1024;

/** Encodes the pcap global header. */
export function pcapGlobalHeader(snaplen = PCAP_SNAPLEN, linktype = PCAP_LINKTYPE_ETHERNET): Uint8Array {
  const bytes = new Uint8Array(PCAP_GLOBAL_HEADER_SIZE);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, PCAP_MAGIC_MICROSECONDS, true);
  view.setUint16(4, PCAP_VERSION_MAJOR, true);
  view.setUint16(6, PCAP_VERSION_MINOR, true);
  view.setInt32(8, 0, true); // thiszone: timestamps are UTC
  view.setUint32(12, 0, true); // sigfigs
  view.setUint32(16, snaplen, true);
  view.setUint32(20, linktype, true);
  return bytes;
}

/**
 * Writes the frames of one port to a pcap file Wireshark, tshark and tcpdump open. Frames are
 * recorded as they cross the port (a GSO frame as one large frame, like a capture on a TAP).
 * Writes are buffered and synchronous: capture is a debugging aid, not a fast path.
 */
export class PcapWriter {
  private fd: number | undefined;
  private buffer = new Uint8Array(FLUSH_AT + PCAP_RECORD_HEADER_SIZE + PCAP_SNAPLEN);
  private view = new DataView(this.buffer.buffer);
  private used = 0;
  private recordedCount = 0;

  constructor(
    readonly path: string,
    private readonly now: () => number = () => Date.now() * 1000,
  ) {
    this.fd = openSync(path, 'w');
    const header = pcapGlobalHeader();
    this.buffer.set(header);
    this.used = header.length;
  }

  get recorded(): number {
    return this.recordedCount;
  }

  /** Records one frame held in segments. */
  record(segments: readonly Uint8Array[], length: number): void {
    if (this.fd === undefined) return;
    const captured = Math.min(length, PCAP_SNAPLEN);
    const microseconds = this.now();
    const view = this.view;
    view.setUint32(this.used, Math.floor(microseconds / 1e6), true);
    view.setUint32(this.used + 4, microseconds % 1e6, true);
    view.setUint32(this.used + 8, captured, true);
    view.setUint32(this.used + 12, length, true);
    this.used += PCAP_RECORD_HEADER_SIZE;
    let remaining = captured;
    for (const segment of segments) {
      if (remaining === 0) break;
      const n = Math.min(segment.length, remaining);
      this.buffer.set(n === segment.length ? segment : segment.subarray(0, n), this.used);
      this.used += n;
      remaining -= n;
    }
    this.recordedCount++;
    if (this.used >= FLUSH_AT) this.flush();
  }

  flush(): void {
    if (this.fd === undefined || this.used === 0) return;
    let offset = 0;
    while (offset < this.used) offset += writeSync(this.fd, this.buffer, offset, this.used - offset);
    this.used = 0;
  }

  close(): void {
    if (this.fd === undefined) return;
    this.flush();
    closeSync(this.fd);
    this.fd = undefined;
  }
}
