// Simulated grant tables. Each domain's v1 grant entries live in its own memory (the
// frames after its RAM), exactly as the guest writes them; mapping checks and updates them
// the way Xen's __gnttab_map_grant_ref does (xen/common/grant_table.c).
import { GrantError, XenError } from './xen-errors.js';
import type {
  GrantCopyEndpoint,
  GrantCopySegment,
  GrantMapping,
  GrantMapRequest,
  GrantShareOptions,
  GrantTables,
  SharedGrantPages,
} from './xen-grant-tables.js';
import {
  GNTST_bad_copy_arg,
  GNTST_bad_domain,
  GNTST_bad_gntref,
  GNTST_bad_page,
  GNTST_okay,
  GNTST_permission_denied,
  GRANT_ENTRY_V1_FLAGS,
  GRANT_ENTRY_V1_SIZE,
  GTF_permit_access,
  GTF_reading,
  GTF_readonly,
  GTF_type_mask,
  GTF_writing,
  readGrantEntry,
  writeGrantEntry,
} from './xen-grant-wire.js';
import { mapScattered, SIM_PAGE_SIZE, type SimMemoryFile, type SimPageSource } from './xen-sim-memory.js';

/** Linux keeps the first 8 references for the toolstack (GNTTAB_NR_RESERVED_ENTRIES). */
export const GNTTAB_NR_RESERVED_ENTRIES = 8;

/** The part of a simulated domain the grant code needs. */
export interface SimGrantDomain {
  readonly domid: number;
  readonly memoryFile: SimMemoryFile;
  readonly ramPages: number;
  readonly grantEntries: number;
  /** Byte offset of entry 0 in `memory`. */
  readonly grantTableOffset: number;
  /** Xen's active-entry pin counts (struct active_grant_entry), by ref. */
  readonly active: Map<number, { readers: number; writers: number }>;
  /** Allocates `count` consecutive RAM frames for shared pages; returns the first. */
  allocatePages(count: number): number;
  freePages(first: number, count: number): void;
}

export interface SimGrantHost {
  /** The domain, or undefined when it does not exist (GNTST_bad_domain). */
  lookup(domid: number): SimGrantDomain | undefined;
}

/** Default per-handle mapping limit, like gntdev's default `limit` of 64Ki pages... kept smaller here. */
const DEFAULT_MAX_GRANTS = 16384;

export class SimGrantTables implements GrantTables {
  private live = new Set<SimGrantMapping>();
  private maxGrants = DEFAULT_MAX_GRANTS;
  private mappedPages = 0;
  private closed = false;
  /** Counters for tests and benchmarks. */
  readonly counters = { maps: 0, unmaps: 0, copies: 0, copiedBytes: 0, failedOps: 0 };

  constructor(
    private readonly host: SimGrantHost,
    readonly domid: number,
  ) {}

  private entryOffset(domain: SimGrantDomain, ref: number): number {
    return domain.grantTableOffset + ref * GRANT_ENTRY_V1_SIZE;
  }

  /** Validates one op against the granter's entry; GNTST_okay or the status Xen gives. */
  private check(
    granterId: number,
    ref: number,
    writable: boolean,
  ): { status: number; domain?: SimGrantDomain; frame?: number } {
    const domain = this.host.lookup(granterId);
    if (!domain) return { status: GNTST_bad_domain };
    if (!Number.isInteger(ref) || ref < 0 || ref >= domain.grantEntries) return { status: GNTST_bad_gntref };
    const entry = readGrantEntry(domain.memoryFile.dataView, this.entryOffset(domain, ref));
    if ((entry.flags & GTF_type_mask) !== GTF_permit_access || entry.domid !== this.domid) {
      return { status: GNTST_permission_denied };
    }
    if (writable && (entry.flags & GTF_readonly) !== 0) return { status: GNTST_permission_denied };
    if (entry.frame >= domain.ramPages) return { status: GNTST_bad_page };
    return { status: GNTST_okay, domain, frame: entry.frame };
  }

  map(request: GrantMapRequest): GrantMapping {
    if (this.closed) throw new XenError('EBADF', 'gnttab', 'map_grant_refs', 'handle is closed');
    const count = request.refs.length;
    const domids =
      typeof request.domid === 'number' ? new Array<number>(count).fill(request.domid) : [...request.domid];
    if (count === 0 || domids.length !== count) {
      throw new XenError(
        'EINVAL',
        'gnttab',
        'map_grant_refs',
        'refs and domids must be non-empty and the same length',
      );
    }
    if (this.mappedPages + count > this.maxGrants) {
      throw new XenError(
        'ENOMEM',
        'gnttab',
        'map_grant_refs',
        `mapping ${count} more pages exceeds the limit of ${this.maxGrants}`,
      );
    }
    const status: number[] = [];
    const sources: SimPageSource[] = [];
    const domains: SimGrantDomain[] = [];
    for (let i = 0; i < count; i++) {
      const result = this.check(domids[i] as number, request.refs[i] as number, request.writable);
      status.push(result.status);
      if (result.domain && result.frame !== undefined) {
        sources.push({ file: result.domain.memoryFile, frame: result.frame });
        domains.push(result.domain);
      }
    }
    if (status.some((s) => s !== GNTST_okay)) {
      this.counters.failedOps++;
      // gntdev: any failed op fails the whole mmap with EINVAL; the ones that succeeded are unmapped again.
      throw new GrantError('EINVAL', 'map_grant_refs', status, `status ${status.join(',')}`);
    }
    const pages = mapScattered(sources, request.writable);
    for (let i = 0; i < count; i++)
      this.pin(domains[i] as SimGrantDomain, request.refs[i] as number, request.writable);
    const mapping = new SimGrantMapping(
      this,
      domids,
      [...request.refs],
      request.writable,
      status,
      pages.bytes,
      () => {
        pages.unmap();
        for (let i = 0; i < count; i++)
          this.unpin(domains[i] as SimGrantDomain, request.refs[i] as number, request.writable);
      },
    );
    this.live.add(mapping);
    this.mappedPages += count;
    this.counters.maps++;
    return mapping;
  }

  private pin(domain: SimGrantDomain, ref: number, writable: boolean): void {
    let active = domain.active.get(ref);
    if (!active) {
      active = { readers: 0, writers: 0 };
      domain.active.set(ref, active);
    }
    if (writable) active.writers++;
    else active.readers++;
    this.syncFlags(domain, ref, active);
  }

  private unpin(domain: SimGrantDomain, ref: number, writable: boolean): void {
    const active = domain.active.get(ref);
    if (!active) return;
    if (writable) active.writers--;
    else active.readers--;
    if (active.readers <= 0 && active.writers <= 0) domain.active.delete(ref);
    this.syncFlags(domain, ref, active);
  }

  /** GTF_reading/GTF_writing mirror the pin counts in the guest-visible entry. */
  private syncFlags(domain: SimGrantDomain, ref: number, active: { readers: number; writers: number }): void {
    const offset = this.entryOffset(domain, ref) + GRANT_ENTRY_V1_FLAGS;
    const view = domain.memoryFile.dataView;
    let flags = view.getUint16(offset, true) & ~(GTF_reading | GTF_writing);
    if (active.readers > 0) flags |= GTF_reading;
    if (active.writers > 0) flags |= GTF_writing | GTF_reading;
    view.setUint16(offset, flags, true);
  }

  /** Called by a mapping's `unmap`. */
  release(mapping: SimGrantMapping): void {
    this.live.delete(mapping);
    this.mappedPages -= mapping.refs.length;
    this.counters.unmaps++;
  }

  copy(segments: readonly GrantCopySegment[]): number[] {
    if (this.closed) throw new XenError('EBADF', 'gnttab', 'grant_copy', 'handle is closed');
    const status: number[] = [];
    for (const segment of segments) {
      const result = this.copyOne(segment);
      if (result !== GNTST_okay) this.counters.failedOps++;
      status.push(result);
    }
    this.counters.copies += segments.length;
    return status;
  }

  private resolve(
    endpoint: GrantCopyEndpoint,
    length: number,
    writable: boolean,
  ): { status: number; bytes?: Uint8Array } {
    if (endpoint.kind === 'local') {
      if (!(endpoint.bytes instanceof Uint8Array) || endpoint.bytes.length < length)
        return { status: GNTST_bad_copy_arg };
      return { status: GNTST_okay, bytes: endpoint.bytes.subarray(0, length) };
    }
    const { offset } = endpoint;
    if (!Number.isInteger(offset) || offset < 0 || offset + length > SIM_PAGE_SIZE)
      return { status: GNTST_bad_copy_arg };
    const checked = this.check(endpoint.domid, endpoint.ref, writable);
    if (checked.status !== GNTST_okay || !checked.domain || checked.frame === undefined)
      return { status: checked.status };
    const start = checked.frame * SIM_PAGE_SIZE + offset;
    return { status: GNTST_okay, bytes: checked.domain.memoryFile.bytes.subarray(start, start + length) };
  }

  private copyOne(segment: GrantCopySegment): number {
    const { length } = segment;
    if (!Number.isInteger(length) || length < 0 || length > SIM_PAGE_SIZE) return GNTST_bad_copy_arg;
    if (segment.source.kind !== 'grant' && segment.dest.kind !== 'grant') return GNTST_bad_copy_arg;
    const source = this.resolve(segment.source, length, false);
    if (source.status !== GNTST_okay || !source.bytes) return source.status;
    const dest = this.resolve(segment.dest, length, true);
    if (dest.status !== GNTST_okay || !dest.bytes) return dest.status;
    dest.bytes.set(source.bytes);
    this.counters.copiedBytes += length;
    return GNTST_okay;
  }

  setMaxGrants(count: number): void {
    if (!Number.isInteger(count) || count < 1)
      throw new XenError('EINVAL', 'gnttab', 'set_max_grants', `bad count ${count}`);
    this.maxGrants = count;
  }

  liveMappings(): number {
    return this.live.size;
  }

  private own(operation: string): SimGrantDomain {
    const domain = this.host.lookup(this.domid);
    if (!domain) throw new XenError('ESRCH', 'gnttab', operation, `no domain ${this.domid}`);
    return domain;
  }

  grantAccess(grantee: number, frame: number, options?: GrantShareOptions): number {
    const domain = this.own('grant_access');
    if (!Number.isInteger(grantee) || grantee < 0 || grantee > 0x7fef) {
      throw new XenError('EINVAL', 'gnttab', 'grant_access', `bad grantee ${grantee}`);
    }
    if (!Number.isInteger(frame) || frame < 0 || frame >= domain.ramPages) {
      throw new XenError('EINVAL', 'gnttab', 'grant_access', `frame ${frame} is not guest RAM`);
    }
    const view = domain.memoryFile.dataView;
    for (let ref = GNTTAB_NR_RESERVED_ENTRIES; ref < domain.grantEntries; ref++) {
      const offset = this.entryOffset(domain, ref);
      if (view.getUint16(offset + GRANT_ENTRY_V1_FLAGS, true) === 0 && !domain.active.has(ref)) {
        writeGrantEntry(view, offset, {
          domid: grantee,
          frame,
          flags: GTF_permit_access | (options?.readOnly ? GTF_readonly : 0),
        });
        return ref;
      }
    }
    throw new XenError('ENOSPC', 'gnttab', 'grant_access', `grant table of domain ${this.domid} is full`);
  }

  endAccess(ref: number): void {
    const domain = this.own('end_access');
    if (!Number.isInteger(ref) || ref < 0 || ref >= domain.grantEntries) {
      throw new XenError('EINVAL', 'gnttab', 'end_access', `ref ${ref} is beyond the grant table`);
    }
    const offset = this.entryOffset(domain, ref) + GRANT_ENTRY_V1_FLAGS;
    const flags = domain.memoryFile.dataView.getUint16(offset, true);
    if ((flags & GTF_type_mask) === 0)
      throw new XenError('EINVAL', 'gnttab', 'end_access', `ref ${ref} is not granted`);
    // gnttab_end_foreign_access_ref_v1: the cmpxchg fails while Xen has the entry mapped.
    if ((flags & (GTF_reading | GTF_writing)) !== 0) {
      throw new XenError(
        'EBUSY',
        'gnttab',
        'end_access',
        `ref ${ref} is still in use by domain ${readGrantEntry(domain.memoryFile.dataView, offset - GRANT_ENTRY_V1_FLAGS).domid}`,
      );
    }
    domain.memoryFile.dataView.setUint16(offset, 0, true);
  }

  share(grantee: number, count: number, options?: GrantShareOptions): SharedGrantPages {
    const domain = this.own('share_pages');
    if (!Number.isInteger(count) || count < 1)
      throw new XenError('EINVAL', 'gntshr', 'share_pages', `bad count ${count}`);
    const first = domain.allocatePages(count);
    const refs: number[] = [];
    try {
      for (let i = 0; i < count; i++) refs.push(this.grantAccess(grantee, first + i, options));
    } catch (error) {
      for (const ref of refs) this.endAccess(ref);
      domain.freePages(first, count);
      throw error;
    }
    const start = first * SIM_PAGE_SIZE;
    const bytes = domain.memoryFile.bytes.subarray(start, start + count * SIM_PAGE_SIZE);
    bytes.fill(0);
    let shared = true;
    return {
      grantee,
      refs,
      bytes,
      unshare: () => {
        if (!shared) throw new XenError('EINVAL', 'gntshr', 'unshare', 'pages are not shared');
        for (const ref of refs) {
          const flags = domain.memoryFile.dataView.getUint16(
            this.entryOffset(domain, ref) + GRANT_ENTRY_V1_FLAGS,
            true,
          );
          if ((flags & (GTF_reading | GTF_writing)) !== 0) {
            throw new XenError(
              'EBUSY',
              'gntshr',
              'unshare',
              `ref ${ref} is still in use by domain ${grantee}`,
            );
          }
        }
        for (const ref of refs) this.endAccess(ref);
        domain.freePages(first, count);
        shared = false;
      },
    };
  }

  close(): void {
    for (const mapping of [...this.live]) mapping.unmap();
    this.closed = true;
  }
}

class SimGrantMapping implements GrantMapping {
  mapped = true;

  constructor(
    private readonly owner: SimGrantTables,
    readonly domids: readonly number[],
    readonly refs: readonly number[],
    readonly writable: boolean,
    readonly status: readonly number[],
    readonly bytes: Uint8Array<ArrayBuffer>,
    private readonly undo: () => void,
  ) {}

  page(index: number): Uint8Array<ArrayBuffer> {
    if (!Number.isInteger(index) || index < 0 || index >= this.refs.length) {
      throw new RangeError(`page ${index} is outside a mapping of ${this.refs.length} pages`);
    }
    return this.bytes.subarray(index * SIM_PAGE_SIZE, (index + 1) * SIM_PAGE_SIZE);
  }

  unmap(): void {
    // xengnttab_unmap looks the address up with IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR: EINVAL when gone.
    if (!this.mapped) throw new XenError('EINVAL', 'gnttab', 'unmap', 'address is not mapped');
    this.mapped = false;
    this.undo();
    this.owner.release(this);
  }
}
