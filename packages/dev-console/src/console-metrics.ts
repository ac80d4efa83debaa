/** Counters of one console port. Monotonic except `inboundBuffered` (a gauge). */
export class ConsolePortMetrics {
  /** Host input bytes written into guest receive buffers. */
  rxBytes = 0;
  /** Receive buffers completed. */
  rxChains = 0;
  /** Guest output bytes handed to the host. */
  txBytes = 0;
  /** Transmit buffers completed. */
  txChains = 0;
  /** Host input bytes accepted from the host side. */
  hostInputBytes = 0;
  /** Host input held for the guest right now (bounded by bufferBytes plus one host chunk). */
  inboundBuffered = 0;
  /** Times host input was paused because the guest supplied no receive buffers. */
  hostPauses = 0;
  /** Times transmit waited because the host's buffer was full. */
  txWaits = 0;
  /** Guest output dropped because the host was gone (counted, never silent). */
  droppedBytes = 0;
  /** Buffers the spec forbids (readable receive buffers, oversized transmit chains), completed with 0. */
  badChains = 0;
  /** Host failures (the host side disappeared). */
  hostErrors = 0;

  snapshot(prefix: string): Record<string, number> {
    return {
      [`${prefix}.rxBytes`]: this.rxBytes,
      [`${prefix}.rxChains`]: this.rxChains,
      [`${prefix}.txBytes`]: this.txBytes,
      [`${prefix}.txChains`]: this.txChains,
      [`${prefix}.hostInputBytes`]: this.hostInputBytes,
      [`${prefix}.inboundBuffered`]: this.inboundBuffered,
      [`${prefix}.hostPauses`]: this.hostPauses,
      [`${prefix}.txWaits`]: this.txWaits,
      [`${prefix}.droppedBytes`]: this.droppedBytes,
      [`${prefix}.badChains`]: this.badChains,
      [`${prefix}.hostErrors`]: this.hostErrors,
    };
  }
}

/** Counters of the device as a whole (control queues, emergency writes, faults). */
export class ConsoleMetrics {
  /** Control messages received from the driver and acted on. */
  controlReceived = 0;
  /** Control messages delivered to the driver. */
  controlSent = 0;
  /** Malformed control messages (short, unknown or device-only event), ignored. */
  badControl = 0;
  /** Control messages or data naming a port that does not exist, ignored. */
  unknownPort = 0;
  /** Control receive buffers too small for the next message, completed with 0. */
  controlBufferTooSmall = 0;
  /** Control messages dropped because the driver left the bounded outbox full. */
  controlDropped = 0;
  /** Driver reports of failure (DEVICE_READY 0, PORT_READY 0). */
  driverErrors = 0;
  /** Characters written through emerg_wr. */
  emergencyBytes = 0;
  /** Buffers the device could not reach (read-only or revoked grant), completed with 0. */
  faults = 0;

  snapshot(): Record<string, number> {
    return {
      controlReceived: this.controlReceived,
      controlSent: this.controlSent,
      badControl: this.badControl,
      unknownPort: this.unknownPort,
      controlBufferTooSmall: this.controlBufferTooSmall,
      controlDropped: this.controlDropped,
      driverErrors: this.driverErrors,
      emergencyBytes: this.emergencyBytes,
      faults: this.faults,
    };
  }
}
