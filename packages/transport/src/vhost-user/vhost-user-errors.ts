const marker = Symbol.for('xvio.transport.vhost-user-error');

/**
 * Why a vhost-user message or connection failed. Codes marked "protocol" end the
 * connection (the stream or the frontend cannot be trusted any more); the others are
 * refusals answered with a failure reply when the frontend asked for one.
 */
export type VhostUserErrorCode =
  /** protocol: payload size wrong for the request, or beyond the largest xvio accepts. */
  | 'invalid-size'
  /** protocol: a message carried fds it should not, or lacked the fds it needs. */
  | 'invalid-fds'
  /** protocol: more fds than a message may carry (the kernel dropped some). */
  | 'too-many-fds'
  /** protocol: a header with a version other than 1. */
  | 'invalid-version'
  /** A vring index beyond the device's queues. */
  | 'invalid-vring'
  /** A vring size, base or address the device cannot use. */
  | 'invalid-vring-config'
  /** A memory region that overlaps another, wraps, or cannot be mapped. */
  | 'invalid-region'
  /** A region flagged for Xen mapping while no Xen mapper is configured. */
  | 'xen-mapping-unavailable'
  /** Features the device did not offer, or refuses. */
  | 'invalid-features'
  /** A config space access out of range. */
  | 'invalid-config'
  /** A request xvio does not implement. */
  | 'unsupported-request'
  /** The inflight area is malformed or does not match the queues. */
  | 'invalid-inflight'
  /** host: a socket call failed. */
  | 'socket-failed'
  /** host: mmap, eventfd or memfd failed. */
  | 'host-failure'
  /** host: a handler threw something unexpected (kept as `cause`). */
  | 'handler-failed';

const protocolCodes = new Set<VhostUserErrorCode>([
  'invalid-size',
  'invalid-fds',
  'too-many-fds',
  'invalid-version',
  'socket-failed',
  'handler-failed',
]);

/** A typed vhost-user failure. `isInstance` recognises errors from any installed copy. */
export class VhostUserError extends Error {
  readonly [marker] = true;
  override readonly name = 'VhostUserError';
  readonly code: VhostUserErrorCode;
  /** Whether the connection must end (as opposed to a refusal the frontend is told about). */
  readonly isFatal: boolean;

  constructor(code: VhostUserErrorCode, message: string, options?: ErrorOptions & { fatal?: boolean }) {
    super(`${code}: ${message}`, options);
    this.code = code;
    this.isFatal = options?.fatal ?? protocolCodes.has(code);
  }

  static isInstance(value: unknown): value is VhostUserError {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[marker] === true;
  }
}
