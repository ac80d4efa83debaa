/** Counters of one gpu device. Monotonic except the two gauges (`resources`, `resourceBytes`). */
export class GpuMetrics {
  /** Control and cursor commands completed. */
  commands = 0;
  /** Commands answered with a VIRTIO_GPU_RESP_ERR_* code. */
  errors = 0;
  /** Requests too short for their command or with no room for the response. */
  badRequests = 0;
  /** Requests whose buffers the device could not reach (read-only or revoked grant). */
  faults = 0;
  /** Pixel bytes copied from guest backing into resources. */
  transferBytes = 0;
  flushes = 0;
  fences = 0;
  cursorUpdates = 0;
  /** Gauge: resources alive. */
  resources = 0;
  /** Gauge: host bytes held by resources. */
  resourceBytes = 0;

  snapshot(): Readonly<Record<string, number>> {
    return {
      commands: this.commands,
      errors: this.errors,
      badRequests: this.badRequests,
      faults: this.faults,
      transferBytes: this.transferBytes,
      flushes: this.flushes,
      fences: this.fences,
      cursorUpdates: this.cursorUpdates,
      resources: this.resources,
      resourceBytes: this.resourceBytes,
    };
  }
}
