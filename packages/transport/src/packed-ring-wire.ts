// Packed virtqueue layout, virtio spec 1.2 section 2.8. All fields little-endian.

/** struct pvirtq_desc { le64 addr; le32 len; le16 id; le16 flags; } (2.8.13) */
export const PACKED_DESC_SIZE = 16;
export const PACKED_DESC_ADDR = 0;
export const PACKED_DESC_LEN = 8;
export const PACKED_DESC_ID = 12;
export const PACKED_DESC_FLAGS = 14;

/** The same bit values as the split ring's (2.8.6, 2.8.3, 2.8.7). */
export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
/** 2.8.1: a descriptor is available when AVAIL equals the driver's wrap counter and USED does not. */
export const VIRTQ_DESC_F_AVAIL = 1 << 7;
/** 2.8.1: a descriptor is used when AVAIL and USED both equal the device's wrap counter. */
export const VIRTQ_DESC_F_USED = 1 << 15;
/** Flags of a used descriptor for wrap counter 1 and 0 (2.8.1, 2.8.22). */
export const USED_FLAGS_WRAP_1 = VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED;
export const USED_FLAGS_WRAP_0 = 0;

/** struct pvirtq_event_suppress { le16 desc; le16 flags; } (2.8.14); desc = offset:15 | wrap:1 */
export const EVENT_SUPPRESS_SIZE = 4;
export const EVENT_DESC = 0;
export const EVENT_FLAGS = 2;
export const RING_EVENT_FLAGS_ENABLE = 0;
export const RING_EVENT_FLAGS_DISABLE = 1;
/** Only valid with VIRTIO_F_RING_EVENT_IDX (2.8.10): notify when the ring passes `desc`. */
export const RING_EVENT_FLAGS_DESC = 2;
/** Bit 15 of an event suppression `desc` is the wrap counter, bits 0-14 the ring offset (2.8.14). */
export const EVENT_WRAP_SHIFT = 15;
export const EVENT_OFFSET_MASK = 0x7fff;

/** Alignment (2.8.10.1 table): descriptor ring 16, event suppression structures 4. */
export const PACKED_DESC_ALIGN = 16;
export const PACKED_EVENT_ALIGN = 4;

/** Bytes of a descriptor ring of `size` entries: 16 * size (2.8.10.1). */
export const packedRingSize = (size: number): number => PACKED_DESC_SIZE * size;

/** Whether a descriptor's flags make it available for the driver's wrap counter `wrap` (0 or 1), 2.8.1. */
export function isAvailable(flags: number, wrap: number): boolean {
  return ((flags >> 7) & 1) === wrap && ((flags >> 15) & 1) !== wrap;
}

/** Whether a descriptor's flags mark it used for the device's wrap counter `wrap` (0 or 1), 2.8.1. */
export function isUsed(flags: number, wrap: number): boolean {
  return ((flags >> 7) & 1) === wrap && ((flags >> 15) & 1) === wrap;
}

/** An event suppression `desc` value: ring offset plus wrap counter (2.8.14). */
export function encodeEventDesc(offset: number, wrap: number): number {
  return (offset & EVENT_OFFSET_MASK) | ((wrap & 1) << EVENT_WRAP_SHIFT);
}

/**
 * Whether moving the used position from `old` to `newIdx` (ring offsets, the current wrap
 * counter `wrap`) crossed the driver's event `offWrap` (2.8.10). When the event's wrap
 * counter differs from ours, the event lies one lap behind, so its offset is taken minus
 * the ring size; then it is Linux's vring_need_event modulo 2^16 (as QEMU does it).
 */
export function packedNeedEvent(
  size: number,
  wrap: number,
  offWrap: number,
  newIdx: number,
  old: number,
): boolean {
  let offset = offWrap & EVENT_OFFSET_MASK;
  if (offWrap >> EVENT_WRAP_SHIFT !== wrap) offset -= size;
  return ((newIdx - offset - 1) & 0xffff) < ((newIdx - old) & 0xffff);
}
