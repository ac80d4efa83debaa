/** Counters of the template device, exported flat (`template_requests`, ...) for Prometheus. */
export class TemplateMetrics {
  /** Requests answered TEMPLATE_STATUS_OK. */
  requests = 0;
  bytesIn = 0;
  bytesOut = 0;
  /** Requests the guest got wrong (too large, no room): answered with an error status. */
  badRequests = 0;
  /** Chains whose buffers the device could not reach (completed with length 0). */
  guestFaults = 0;
  /** Host failures (answered TEMPLATE_STATUS_HOST_ERROR). */
  hostErrors = 0;

  snapshot(): Readonly<Record<string, number>> {
    return {
      template_requests: this.requests,
      template_bytes_in: this.bytesIn,
      template_bytes_out: this.bytesOut,
      template_bad_requests: this.badRequests,
      template_guest_faults: this.guestFaults,
      template_host_errors: this.hostErrors,
    };
  }
}
