const marker = Symbol.for('xvio.transport.virtio-error');

/**
 * Why a virtqueue was found corrupted. Each is a rule the driver broke; the clause named in
 * the message is from the VirtIO 1.2 specification.
 */
export type VirtqueueErrorCode =
  | 'invalid-avail-idx' // 2.7.13: avail.idx moved more than queue size past what we consumed
  | 'descriptor-out-of-range' // 2.7.5: a head or next index >= queue size
  | 'chain-too-long' // 2.7.5.3.1 / 2.7.13.1: chain longer than the queue size (or a loop)
  | 'nested-indirect' // 2.7.5.3.1: VIRTQ_DESC_F_INDIRECT inside an indirect table
  | 'indirect-with-next' // 2.7.5.3.1: INDIRECT and NEXT both set
  | 'invalid-indirect-length' // 2.7.5.3.1: table length zero or not a multiple of 16
  | 'indirect-not-negotiated' // 2.7.5.3.1: INDIRECT used without VIRTIO_F_INDIRECT_DESC
  | 'chain-length-overflow' // 2.7.5: the chain's total length is 2^32 or more
  | 'readable-after-writable' // 2.7.4.2: a device-readable descriptor after a writable one
  | 'descriptor-address-invalid' // 2.7.5: a buffer outside guest memory or not accessible
  | 'invalid-queue-size' // 2.7: size zero, not a power of two (split), or above the maximum
  | 'misaligned-ring' // 2.7 table: desc 16, avail 2, used 4 (split); 16/4/4 (packed)
  | 'ring-unreachable' // the ring's own memory is not accessible guest memory
  | 'invalid-used-element' // device bug guard: addUsed for a head we did not pop
  | 'invalid-packed-descriptor'; // 2.8: a packed ring descriptor the spec forbids

/** Base of xvio's transport errors. `isInstance` recognises errors from any installed copy. */
export class VirtioError extends Error {
  readonly [marker] = true;
  readonly code: string;

  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }

  static isInstance(value: unknown): value is VirtioError {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[marker] === true;
  }
}

/** A queue the driver corrupted. The queue is broken from then on; the device needs a reset. */
export class VirtqueueError extends VirtioError {
  override readonly name = 'VirtqueueError';
  declare readonly code: VirtqueueErrorCode;

  constructor(code: VirtqueueErrorCode, message: string, options?: ErrorOptions) {
    super(code, `${code}: ${message}`, options);
  }

  static override isInstance(value: unknown): value is VirtqueueError {
    return VirtioError.isInstance(value) && (value as Error).name === 'VirtqueueError';
  }
}

export type DeviceErrorCode =
  | 'invalid-status-transition' // 2.1.1 / 3.1.1: status written out of order
  | 'features-rejected' // 3.1.1 step 5: FEATURES_OK refused
  | 'activation-failed' // the device could not start with the driver's setup
  | 'invalid-config-access'; // config space access out of range

/** A failure of the device or its setup, as opposed to a corrupted ring. */
export class DeviceError extends VirtioError {
  override readonly name = 'DeviceError';
  declare readonly code: DeviceErrorCode;

  constructor(code: DeviceErrorCode, message: string, options?: ErrorOptions) {
    super(code, `${code}: ${message}`, options);
  }

  static override isInstance(value: unknown): value is DeviceError {
    return VirtioError.isInstance(value) && (value as Error).name === 'DeviceError';
  }
}
