// Reserved feature bits, virtio spec 1.2 section 6. Device-specific bits (0-23, 50-127) live
// in each device package's wire module. Features are bigint: bits above 31 matter.

export const VIRTIO_F_INDIRECT_DESC = 1n << 28n;
export const VIRTIO_F_EVENT_IDX = 1n << 29n;
export const VIRTIO_F_VERSION_1 = 1n << 32n;
export const VIRTIO_F_ACCESS_PLATFORM = 1n << 33n;
export const VIRTIO_F_RING_PACKED = 1n << 34n;
export const VIRTIO_F_IN_ORDER = 1n << 35n;
export const VIRTIO_F_ORDER_PLATFORM = 1n << 36n;
export const VIRTIO_F_SR_IOV = 1n << 37n;
export const VIRTIO_F_NOTIFICATION_DATA = 1n << 38n;
export const VIRTIO_F_NOTIF_CONFIG_DATA = 1n << 39n;
export const VIRTIO_F_RING_RESET = 1n << 40n;

/** The transport/ring features xvio's core implements and may offer on behalf of any device. */
export const CORE_FEATURES =
  VIRTIO_F_INDIRECT_DESC |
  VIRTIO_F_EVENT_IDX |
  VIRTIO_F_VERSION_1 |
  VIRTIO_F_ACCESS_PLATFORM |
  VIRTIO_F_RING_PACKED;

/** Reserved bits (24..49) xvio does not implement: masked out of any device's offer. */
export const RESERVED_FEATURE_MASK = ((1n << 50n) - 1n) & ~((1n << 24n) - 1n);

export function hasFeature(features: bigint, bit: bigint): boolean {
  return (features & bit) === bit;
}

/** The 32-bit half of a feature word selected by `select` (virtio-pci/mmio feature select registers). */
export function featureWord(features: bigint, select: number): number {
  if (select < 0 || select > 3) return 0;
  return Number((features >> BigInt(select * 32)) & 0xffff_ffffn);
}

export function setFeatureWord(features: bigint, select: number, value: number): bigint {
  if (select < 0 || select > 3) return features;
  const shift = BigInt(select * 32);
  return (features & ~(0xffff_ffffn << shift)) | (BigInt(value >>> 0) << shift);
}
