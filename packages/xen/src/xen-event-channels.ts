/**
 * Event channels (libxenevtchn; /dev/xen/evtchn on Linux). A port is an edge-triggered
 * doorbell between two domains with a pending bit and a mask bit: notifications while a
 * port is pending coalesce into one event, and a masked port stays pending without being
 * delivered until it is unmasked.
 */

export interface EventChannelBindOptions {
  /**
   * Unmask the port before calling listeners (default true). Linux's evtchn device masks a
   * port as it delivers it; unmasking before handling means a notification that arrives
   * during handling is delivered again rather than lost (the order the ioreq protocol uses:
   * pending -> unmask -> handle). With `false` the owner calls `unmask()` itself.
   */
  autoUnmask?: boolean;
}

/** One bound local port. */
export interface EventChannel extends AsyncIterable<number> {
  /** Our port number. */
  readonly localPort: number;
  /** The domain at the other end. */
  readonly remoteDomid: number;
  /** The other end's port, when known (an unbound port learns it only when the remote binds). */
  readonly remotePort: number | undefined;
  /** EVTCHNOP_send: raises the remote port's pending bit. Never blocks. */
  notify(): void;
  /** Clears our port's mask; a pending event is then delivered. */
  unmask(): void;
  /**
   * Adds a listener called asynchronously (never inside `notify`) once per delivered event,
   * with the local port. Returns a function that removes it.
   */
  onEvent(listener: (port: number) => void): () => void;
  /** Events delivered and not yet consumed by listeners (for the iterator). Iterating yields the local port per delivery. */
  [Symbol.asyncIterator](): AsyncIterator<number>;
  /** EVTCHNOP_close for our port. Ends iterators. Idempotent. */
  close(): void;
  readonly closed: boolean;
}

/** A handle on the event channel service (`xenevtchn_handle`). */
export interface EventChannels {
  /** EVTCHNOP_bind_interdomain: connects to `remotePort`, which `remoteDomid` allocated for us. Throws `XenError` (`EINVAL` bad port, `ESRCH` no such domain). */
  bindInterdomain(remoteDomid: number, remotePort: number, options?: EventChannelBindOptions): EventChannel;
  /** EVTCHNOP_alloc_unbound: a port `remoteDomid` may bind to. */
  bindUnboundPort(remoteDomid: number, options?: EventChannelBindOptions): EventChannel;
  /** Unbinds every port and releases the handle. */
  close(): void;
}
