// Grant table layouts of xen/grant_table.h and xengnttab.h (Xen 4.17), measured with offsetof
// against Debian's libxen-dev headers. Little-endian, as on every Xen architecture.

export const GRANT_PAGE_SIZE = 4096;

/** `struct grant_entry_v1`, 8 bytes, in the granting domain's memory. */
export const GRANT_ENTRY_V1_SIZE = 8;
export const GRANT_ENTRY_V1_FLAGS = 0; // u16
export const GRANT_ENTRY_V1_DOMID = 2; // u16: the domain allowed access
export const GRANT_ENTRY_V1_FRAME = 4; // u32: the granted guest frame number
/** 512 v1 entries per grant-table frame. */
export const GRANT_ENTRIES_PER_PAGE = GRANT_PAGE_SIZE / GRANT_ENTRY_V1_SIZE;

/** GTF_* flags. The type lives in bits 0-1. */
export const GTF_invalid = 0;
export const GTF_permit_access = 1;
export const GTF_accept_transfer = 2;
export const GTF_transitive = 3;
export const GTF_type_mask = 3;
/** Grantee may only map read-only and copy from (set by the guest). */
export const GTF_readonly = 1 << 2;
/** Set by Xen while the entry is mapped for reading. */
export const GTF_reading = 1 << 3;
/** Set by Xen while the entry is mapped for writing. */
export const GTF_writing = 1 << 4;
export const GTF_sub_page = 1 << 8;

/** GNTST_* results of grant operations. */
export const GNTST_okay = 0;
export const GNTST_general_error = -1;
export const GNTST_bad_domain = -2;
export const GNTST_bad_gntref = -3;
export const GNTST_bad_handle = -4;
export const GNTST_bad_virt_addr = -5;
export const GNTST_bad_dev_addr = -6;
export const GNTST_no_device_space = -7;
export const GNTST_permission_denied = -8;
export const GNTST_bad_page = -9;
export const GNTST_bad_copy_arg = -10;
export const GNTST_address_too_big = -11;
export const GNTST_eagain = -12;
export const GNTST_no_space = -13;

export const GNTST_NAMES: Readonly<Record<number, string>> = {
  0: 'okay',
  [-1]: 'general error',
  [-2]: 'bad domain',
  [-3]: 'bad gntref',
  [-4]: 'bad handle',
  [-5]: 'bad virt addr',
  [-6]: 'bad dev addr',
  [-7]: 'no device space',
  [-8]: 'permission denied',
  [-9]: 'bad page',
  [-10]: 'bad copy arg',
  [-11]: 'address too big',
  [-12]: 'eagain',
  [-13]: 'no space',
};

/**
 * `xengnttab_grant_copy_segment_t`, 24 bytes. `source` and `dest` are each a union of a
 * local virtual address (8 bytes) and `{u32 ref @0, u16 offset @4, u16 domid @6}`.
 */
export const GRANT_COPY_SEGMENT_SIZE = 24;
export const GRANT_COPY_SOURCE = 0;
export const GRANT_COPY_DEST = 8;
export const GRANT_COPY_FOREIGN_REF = 0;
export const GRANT_COPY_FOREIGN_OFFSET = 4;
export const GRANT_COPY_FOREIGN_DOMID = 6;
export const GRANT_COPY_LEN = 16; // u16
export const GRANT_COPY_FLAGS = 18; // u16
export const GRANT_COPY_STATUS = 20; // i16
/** The source (dest) is a grant reference rather than a local address. */
export const GNTCOPY_source_gref = 1;
export const GNTCOPY_dest_gref = 2;

export interface GrantEntryV1 {
  flags: number;
  domid: number;
  frame: number;
}

export function readGrantEntry(view: DataView, offset: number): GrantEntryV1 {
  return {
    flags: view.getUint16(offset + GRANT_ENTRY_V1_FLAGS, true),
    domid: view.getUint16(offset + GRANT_ENTRY_V1_DOMID, true),
    frame: view.getUint32(offset + GRANT_ENTRY_V1_FRAME, true),
  };
}

/** Writes domid and frame, then flags last: the grantee must never see flags before the frame (grant_table.h, "Introducing a valid entry"). */
export function writeGrantEntry(view: DataView, offset: number, entry: GrantEntryV1): void {
  view.setUint16(offset + GRANT_ENTRY_V1_DOMID, entry.domid, true);
  view.setUint32(offset + GRANT_ENTRY_V1_FRAME, entry.frame >>> 0, true);
  view.setUint16(offset + GRANT_ENTRY_V1_FLAGS, entry.flags, true);
}
