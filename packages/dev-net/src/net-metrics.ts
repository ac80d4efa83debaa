/** Counters of one network device. Guest faults are counted here, never thrown. */
export interface NetMetrics {
  txFrames: number;
  txBytes: number;
  /** Transmit chains whose header was shorter than the negotiated header length. */
  txDroppedBadHeader: number;
  /** Frames shorter than an Ethernet header. */
  txDroppedRunt: number;
  /** Frames longer than the MTU allows (non-GSO) or than 64 KiB of IP (GSO). */
  txDroppedOversize: number;
  /** Unknown or not negotiated GSO type, gso_size out of range, or a GSO frame that is not TCP/UDP over IP. */
  txDroppedBadGso: number;
  /** NEEDS_CSUM without CSUM negotiated, or csum_start + csum_offset past the frame. */
  txDroppedBadChecksum: number;
  /** Frames the host side refused (full TAP queue, closed socket, rate limit drop). */
  txDroppedHost: number;
  /** Times transmission paused because the host side could not take more. */
  txDeferred: number;
  rxFrames: number;
  rxBytes: number;
  /** Frames lost because the guest had no receive buffers and the host could not hold them. */
  rxDroppedNoBuffers: number;
  /** Frames the receive filter (MAC table, promisc, VLAN) rejected. */
  rxDroppedFiltered: number;
  /** Frames larger than the guest's receive buffers can hold. */
  rxDroppedTooBig: number;
  /** Frames that could not be segmented or checksummed for a guest without the offload. */
  rxDroppedOffload: number;
  /** Frames that arrived while the device was stopped or the link down. */
  rxDroppedStopped: number;
  checksumsFilled: number;
  framesSegmented: number;
  segmentsProduced: number;
  controlCommands: number;
  /** Control commands answered VIRTIO_NET_ERR (unknown, not negotiated, bad value). */
  controlErrors: number;
  /** Control commands whose data had the wrong size. */
  controlBadSize: number;
}

export function newNetMetrics(): NetMetrics {
  return {
    txFrames: 0,
    txBytes: 0,
    txDroppedBadHeader: 0,
    txDroppedRunt: 0,
    txDroppedOversize: 0,
    txDroppedBadGso: 0,
    txDroppedBadChecksum: 0,
    txDroppedHost: 0,
    txDeferred: 0,
    rxFrames: 0,
    rxBytes: 0,
    rxDroppedNoBuffers: 0,
    rxDroppedFiltered: 0,
    rxDroppedTooBig: 0,
    rxDroppedOffload: 0,
    rxDroppedStopped: 0,
    checksumsFilled: 0,
    framesSegmented: 0,
    segmentsProduced: 0,
    controlCommands: 0,
    controlErrors: 0,
    controlBadSize: 0,
  };
}

/** Flat snake_case names (`net_tx_frames`), as the metrics endpoint exposes them. */
export function flattenNetMetrics(metrics: NetMetrics, prefix = 'net'): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, value] of Object.entries(metrics)) {
    out[`${prefix}_${key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}`] = value;
  }
  return out;
}
