// Split virtqueue layout, virtio spec 1.2 section 2.7. All fields little-endian.

/** struct virtq_desc { le64 addr; le32 len; le16 flags; le16 next; } (2.7.5) */
export const DESC_SIZE = 16;
export const DESC_ADDR = 0;
export const DESC_LEN = 8;
export const DESC_FLAGS = 12;
export const DESC_NEXT = 14;

export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;

/** struct virtq_avail { le16 flags; le16 idx; le16 ring[size]; le16 used_event; } (2.7.6) */
export const AVAIL_FLAGS = 0;
export const AVAIL_IDX = 2;
export const AVAIL_RING = 4;
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** Bytes of the avail ring for `size` entries, with the trailing used_event: 6 + 2 * size. */
export const availRingSize = (size: number): number => 6 + 2 * size;
/** Offset of used_event, after the ring entries. */
export const availUsedEventOffset = (size: number): number => AVAIL_RING + 2 * size;

/** struct virtq_used { le16 flags; le16 idx; struct virtq_used_elem ring[size]; le16 avail_event; } (2.7.8) */
export const USED_FLAGS = 0;
export const USED_IDX = 2;
export const USED_RING = 4;
/** struct virtq_used_elem { le32 id; le32 len; } */
export const USED_ELEM_SIZE = 8;
export const VIRTQ_USED_F_NO_NOTIFY = 1;
/** Bytes of the used ring for `size` entries, with the trailing avail_event: 6 + 8 * size. */
export const usedRingSize = (size: number): number => 6 + USED_ELEM_SIZE * size;
export const usedAvailEventOffset = (size: number): number => USED_RING + USED_ELEM_SIZE * size;

/** Alignment the driver must give each part (2.7 table "Virtqueue Part Alignment"). */
export const DESC_TABLE_ALIGN = 16;
export const AVAIL_ALIGN = 2;
export const USED_ALIGN = 4;

/** Largest queue size any ring can have (2.7: size is a 16-bit value, at most 32768). */
export const MAX_QUEUE_SIZE = 32768;

/**
 * Linux's vring_need_event (include/uapi/linux/virtio_ring.h): whether moving the index from
 * `old` to `newIdx` crossed `event`, all modulo 2^16. Used for both used_event and avail_event.
 */
export function vringNeedEvent(event: number, newIdx: number, old: number): boolean {
  return ((newIdx - event - 1) & 0xffff) < ((newIdx - old) & 0xffff);
}
