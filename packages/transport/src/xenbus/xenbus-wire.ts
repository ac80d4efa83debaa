// The virtio-xenbus transport's xenstore keys and its configuration page
// (docs/spec/virtio-xenbus.md). Keys are relative to the device's backend or frontend
// directory; numbers are decimal unless the key says hex.

/** Device kind in xenstore paths: `backend/virtio-xenbus/<domid>/<devid>`, `device/virtio-xenbus/<devid>`. */
export const XENBUS_VIRTIO_KIND = 'virtio-xenbus';

// --- written by the backend (spec section "Backend directory") ---
export const KEY_DEVICE_ID = 'device-id';
/** Offered features, hex without 0x, up to 128 bits. */
export const KEY_DEVICE_FEATURES = 'device-features';
export const KEY_NUM_QUEUES = 'num-queues';
/** `queue-<n>/max-size`. */
export const KEY_QUEUE_MAX_SIZE = 'max-size';
export const KEY_CONFIG_SIZE = 'config-size';
/** Grant reference (granted by the backend, read-only) of the configuration page. */
export const KEY_CONFIG_REF = 'config-ref';
/** 1 when the backend accepts one event channel per queue. */
export const KEY_FEATURE_PER_QUEUE_EVENTS = 'feature-per-queue-event-channel';
/** 1 when the backend maps a persistent pool table (grant-pool's `persistent-pool-table`). */
export const KEY_FEATURE_PERSISTENT_POOL = 'feature-persistent-pool';
/** Why the backend refused the frontend's setup (with state Closing). */
export const KEY_ERROR = 'error';

// --- written by the frontend ---
export const KEY_DRIVER_FEATURES = 'driver-features';
/** The control event channel: configuration changes, and every queue without its own channel. */
export const KEY_EVENT_CHANNEL = 'event-channel';
/** `queue-<n>/...`: size, desc, driver, device (addresses as 0x-prefixed hex), optional event-channel. */
export const KEY_QUEUE_SIZE = 'size';
export const KEY_QUEUE_DESC = 'desc';
export const KEY_QUEUE_DRIVER = 'driver';
export const KEY_QUEUE_DEVICE = 'device';
/** `config-write`: "<offset> <hex bytes>", a driver write to configuration space. */
export const KEY_CONFIG_WRITE = 'config-write';
/** Same key and meaning as grant-pool's pool-table-wire (POOL_TABLE_XENSTORE_KEY). */
export const KEY_PERSISTENT_POOL_TABLE = 'persistent-pool-table';

export function queueKey(index: number, key: string): string {
  return `queue-${index}/${key}`;
}

// --- the configuration page (one 4 KiB page granted read-only to the frontend) ---
/** le32: even when stable, odd while the backend updates the page (a seqlock); bumps on every change. */
export const CONFIG_PAGE_GENERATION = 0;
/** le32: the device status as the backend sees it (DEVICE_NEEDS_RESET is how a fault is told). */
export const CONFIG_PAGE_STATUS = 4;
/** le32: bytes of configuration space that follow. */
export const CONFIG_PAGE_SIZE_FIELD = 8;
/** Configuration space starts here. */
export const CONFIG_PAGE_DATA = 64;
export const CONFIG_PAGE_BYTES = 4096;
export const CONFIG_PAGE_MAX_CONFIG = CONFIG_PAGE_BYTES - CONFIG_PAGE_DATA;

/** Hex feature bits as written in xenstore, bounded to 128 bits. Undefined when malformed. */
export function parseFeatures(value: string | undefined): bigint | undefined {
  if (value === undefined) return undefined;
  const text = value.trim().toLowerCase().replace(/^0x/, '');
  if (!/^[0-9a-f]{1,32}$/.test(text)) return undefined;
  return BigInt(`0x${text}`);
}

export function formatFeatures(features: bigint): string {
  return features.toString(16);
}

/** A 64-bit ring address in 0x-hex; undefined when malformed. */
export function parseAddress(value: string | undefined): bigint | undefined {
  if (value === undefined) return undefined;
  const text = value.trim().toLowerCase();
  if (!/^0x[0-9a-f]{1,16}$/.test(text)) return undefined;
  return BigInt(text);
}

/** A bounded decimal; undefined when malformed or above `max`. */
export function parseBoundedInt(value: string | undefined, max: number): number | undefined {
  if (value === undefined) return undefined;
  const text = value.trim();
  if (!/^[0-9]{1,10}$/.test(text)) return undefined;
  const number = Number(text);
  return number <= max ? number : undefined;
}
