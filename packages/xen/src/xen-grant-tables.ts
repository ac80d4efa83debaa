/**
 * Grant tables (libxengnttab / libxengntshr; /dev/xen/gntdev and /dev/xen/gntalloc on Linux).
 * The backend side maps or copies pages another domain granted it; the frontend side grants
 * its own pages. All calls are synchronous: they are ioctls plus mmap, microseconds each.
 */

export const GRANT_PAGE_BYTES = 4096;

export interface GrantMapRequest {
  /** The granting domain, or one domain per ref (xengnttab_map_domain_grant_refs). */
  readonly domid: number | readonly number[];
  /** Grant references to map, in order; the pages appear in that order in `bytes`. */
  readonly refs: readonly number[];
  /** Map for writing (GNTMAP_host_map); false maps read-only (GNTMAP_readonly). */
  readonly writable: boolean;
}

/**
 * Pages mapped from another domain. `bytes` covers all pages of the batch contiguously
 * (`refs.length * 4096` bytes), as one gntdev mmap does, whether or not the refs are
 * consecutive. While mapped, the granting domain sees GTF_reading/GTF_writing in its entries
 * and cannot end access.
 */
export interface GrantMapping {
  readonly domids: readonly number[];
  readonly refs: readonly number[];
  readonly writable: boolean;
  /** GNTST_* per op: all GNTST_okay (0) for a mapping that exists. */
  readonly status: readonly number[];
  /** The mapped memory. Do not use after `unmap`. A read-only mapping must not be written. */
  readonly bytes: Uint8Array<ArrayBuffer>;
  /** Page `index` of the batch (a 4096-byte subarray of `bytes`). */
  page(index: number): Uint8Array<ArrayBuffer>;
  /** Unmaps the batch. A second call throws `XenError` `EINVAL`, as xengnttab_unmap does for an address it does not know. */
  unmap(): void;
  readonly mapped: boolean;
}

/** One side of a grant copy: a granted page, or local memory. */
export type GrantCopyEndpoint =
  | { readonly kind: 'grant'; readonly domid: number; readonly ref: number; readonly offset: number }
  | { readonly kind: 'local'; readonly bytes: Uint8Array };

/**
 * One GNTTABOP_copy segment (`xengnttab_grant_copy_segment_t`). At least one side is a
 * grant; `length` bytes, at most 4096, and a grant side must not cross its page
 * (`offset + length <= 4096`, else GNTST_bad_copy_arg). A local side needs `bytes.length >= length`.
 */
export interface GrantCopySegment {
  readonly source: GrantCopyEndpoint;
  readonly dest: GrantCopyEndpoint;
  readonly length: number;
}

export interface GrantShareOptions {
  /** Grant read-only (GTF_readonly): the grantee may map read-only and copy from only. */
  readonly readOnly?: boolean;
}

/** Pages we allocated and granted to another domain (xengntshr_share_pages). */
export interface SharedGrantPages {
  readonly grantee: number;
  /** One grant reference per page, consecutive pages in `bytes`. */
  readonly refs: readonly number[];
  readonly bytes: Uint8Array<ArrayBuffer>;
  /**
   * Ends access and frees the pages. The simulator throws `XenError` `EBUSY` while the
   * grantee still maps one (what a kernel frontend sees); Linux's gntalloc instead defers the
   * revocation until the grantee unmaps, so the native `unshare` returns.
   */
  unshare(): void;
}

/** A handle on the grant table service (backend `xengnttab_handle` plus frontend sharing). */
export interface GrantTables {
  /**
   * Maps a batch. Throws `GrantError` (code `EINVAL`, `status[i]` the GNTST_* of op i:
   * `bad_gntref` for a ref beyond the table, `permission_denied` when not granted to us or
   * granted read-only and mapped writable, `bad_domain`) and maps nothing when any op fails.
   */
  map(request: GrantMapRequest): GrantMapping;
  /**
   * GNTTABOP_copy of a batch. Returns GNTST_* per segment; a failed segment copies nothing
   * and does not stop the others. Throws `XenError` only when the whole call fails.
   */
  copy(segments: readonly GrantCopySegment[]): number[];
  /** Limits how many grants this handle may map at once (xengnttab_set_max_grants). */
  setMaxGrants(count: number): void;
  /** Mappings made by this handle and not yet unmapped. */
  liveMappings(): number;

  /**
   * Frontend: grants `grantee` access to our guest frame `frame` (a v1 entry with
   * GTF_permit_access, plus GTF_readonly when asked) and returns the grant reference.
   * Only a domain that owns its grant table can do this (the simulator; a Linux guest
   * kernel). From Linux user space it throws `EOPNOTSUPP`: use `share`.
   */
  grantAccess(grantee: number, frame: number, options?: GrantShareOptions): number;
  /**
   * Frontend: revokes a grant. Throws `XenError` `EBUSY` while the grantee maps it (Linux's
   * gnttab_end_foreign_access_ref fails the same way: "grant still in use"), `EINVAL` for a
   * ref that is not granted.
   */
  endAccess(ref: number): void;
  /** Frontend: allocates `count` pages and grants them to `grantee` (xengntshr_share_pages). */
  share(grantee: number, count: number, options?: GrantShareOptions): SharedGrantPages;

  /** Unmaps everything this handle mapped and releases it. */
  close(): void;
}
