// Packed virtqueue layout, virtio spec 1.2 section 2.8. All fields little-endian.

/** struct pvirtq_desc { le64 addr; le32 len; le16 id; le16 flags; } (2.8.13) */
export const PACKED_DESC_SIZE = 16;
export const PACKED_DESC_ADDR = 0;
export const PACKED_DESC_LEN = 8;
export const PACKED_DESC_ID = 12;
export const PACKED_DESC_FLAGS = 14;

export const VIRTQ_DESC_F_AVAIL = 1 << 7;
export const VIRTQ_DESC_F_USED = 1 << 15;

/** struct pvirtq_event_suppress { le16 desc; le16 flags; } (2.8.14); desc = offset:15 | wrap:1 */
export const EVENT_SUPPRESS_SIZE = 4;
export const EVENT_DESC = 0;
export const EVENT_FLAGS = 2;
export const RING_EVENT_FLAGS_ENABLE = 0;
export const RING_EVENT_FLAGS_DISABLE = 1;
export const RING_EVENT_FLAGS_DESC = 2;

/** Alignment (2.8.10.1 table): descriptor ring 16, event suppression structures 4. */
export const PACKED_DESC_ALIGN = 16;
export const PACKED_EVENT_ALIGN = 4;
