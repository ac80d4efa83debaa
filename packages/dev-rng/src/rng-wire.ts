// The entropy device as the VirtIO 1.2 specification defines it, section 5.4.

/** Device ID 4, "Entropy source" (spec 5, table of device IDs; 5.4.1). */
export const VIRTIO_ID_ENTROPY = 4;

/** The only queue, requestq (spec 5.4.2): the driver posts device-writable buffers to fill. */
export const RNG_REQUEST_QUEUE = 0;

/** Number of virtqueues (spec 5.4.2). */
export const RNG_QUEUE_COUNT = 1;

/** The device has no feature bits of its own (spec 5.4.3). */
export const RNG_DEVICE_FEATURES = 0n;

/** The device has no configuration space (spec 5.4.4). */
export const RNG_CONFIG_SIZE = 0;
