// Compiles a small C program against Debian's libxen-dev headers and compares every offset,
// size and constant it prints with this package's wire modules.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grant from './xen-grant-wire.js';
import * as ioreq from './xen-ioreq-wire.js';
import * as xs from './xenstore-wire.js';

const program = String.raw`
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <stdint.h>
#include <xengnttab.h>
#include <xen/hvm/ioreq.h>
#include <xen/hvm/dm_op.h>
#include <xen/hvm/hvm_op.h>
#include <xen/grant_table.h>
#include <xen/memory.h>
#include <xen/io/xs_wire.h>
#define V(name, value) printf("%s\"%s\":%lld", first ? "" : ",", name, (long long)(value)), first = 0
static int first = 1;
static int bit_byte(const unsigned char *p, size_t n) { for (size_t i = 0; i < n; i++) if (p[i]) return (int)i; return -1; }
static int bit_mask(const unsigned char *p, size_t n) { for (size_t i = 0; i < n; i++) if (p[i]) return p[i]; return 0; }
int main(void) {
  ioreq_t r; buf_ioreq_t b; unsigned char *p = (unsigned char *)&r;
  printf("{");
  V("ioreq.size", sizeof(ioreq_t));
  V("ioreq.addr", offsetof(ioreq_t, addr)); V("ioreq.data", offsetof(ioreq_t, data));
  V("ioreq.count", offsetof(ioreq_t, count)); V("ioreq.sizeField", offsetof(ioreq_t, size));
  V("ioreq.vp_eport", offsetof(ioreq_t, vp_eport)); V("ioreq.pad0", offsetof(ioreq_t, _pad0));
  V("ioreq.type", offsetof(ioreq_t, type));
  memset(&r, 0, sizeof r); r.state = 0xf; V("ioreq.state.byte", bit_byte(p, sizeof r)); V("ioreq.state.mask", bit_mask(p, sizeof r));
  memset(&r, 0, sizeof r); r.data_is_ptr = 1; V("ioreq.data_is_ptr.byte", bit_byte(p, sizeof r)); V("ioreq.data_is_ptr.mask", bit_mask(p, sizeof r));
  memset(&r, 0, sizeof r); r.dir = 1; V("ioreq.dir.byte", bit_byte(p, sizeof r)); V("ioreq.dir.mask", bit_mask(p, sizeof r));
  memset(&r, 0, sizeof r); r.df = 1; V("ioreq.df.byte", bit_byte(p, sizeof r)); V("ioreq.df.mask", bit_mask(p, sizeof r));
  V("STATE_IOREQ_NONE", STATE_IOREQ_NONE); V("STATE_IOREQ_READY", STATE_IOREQ_READY);
  V("STATE_IOREQ_INPROCESS", STATE_IOREQ_INPROCESS); V("STATE_IORESP_READY", STATE_IORESP_READY);
  V("IOREQ_TYPE_PIO", IOREQ_TYPE_PIO); V("IOREQ_TYPE_COPY", IOREQ_TYPE_COPY); V("IOREQ_TYPE_PCI_CONFIG", IOREQ_TYPE_PCI_CONFIG);
  V("IOREQ_TYPE_TIMEOFFSET", IOREQ_TYPE_TIMEOFFSET); V("IOREQ_TYPE_INVALIDATE", IOREQ_TYPE_INVALIDATE);
  V("shared_iopage.stride", sizeof(((shared_iopage_t *)0)->vcpu_ioreq[0]));
  V("buf_ioreq.size", sizeof(buf_ioreq_t)); V("buf_ioreq.data", offsetof(buf_ioreq_t, data));
  { uint32_t w; memset(&b, 0, sizeof b); b.type = 0xff; memcpy(&w, &b, 4); V("buf_ioreq.type.mask", w); }
  { uint32_t w; memset(&b, 0, sizeof b); b.dir = 1; memcpy(&w, &b, 4); V("buf_ioreq.dir.mask", w); }
  { uint32_t w; memset(&b, 0, sizeof b); b.size = 3; memcpy(&w, &b, 4); V("buf_ioreq.size.mask", w); }
  { uint32_t w; memset(&b, 0, sizeof b); b.addr = 0xfffff; memcpy(&w, &b, 4); V("buf_ioreq.addr.mask", w); }
  V("buffered_iopage.size", sizeof(buffered_iopage_t)); V("buffered_iopage.read_pointer", offsetof(buffered_iopage_t, read_pointer));
  V("buffered_iopage.write_pointer", offsetof(buffered_iopage_t, write_pointer)); V("buffered_iopage.buf_ioreq", offsetof(buffered_iopage_t, buf_ioreq));
  V("IOREQ_BUFFER_SLOT_NUM", IOREQ_BUFFER_SLOT_NUM);
  V("XENMEM_resource_ioreq_server", XENMEM_resource_ioreq_server);
  V("XENMEM_resource_ioreq_server_frame_bufioreq", XENMEM_resource_ioreq_server_frame_bufioreq);
  V("XENMEM_resource_ioreq_server_frame_ioreq0", XENMEM_resource_ioreq_server_frame_ioreq(0));
  V("HVM_IOREQSRV_BUFIOREQ_OFF", HVM_IOREQSRV_BUFIOREQ_OFF); V("HVM_IOREQSRV_BUFIOREQ_LEGACY", HVM_IOREQSRV_BUFIOREQ_LEGACY);
  V("HVM_IOREQSRV_BUFIOREQ_ATOMIC", HVM_IOREQSRV_BUFIOREQ_ATOMIC);
  V("XEN_DMOP_IO_RANGE_PORT", XEN_DMOP_IO_RANGE_PORT); V("XEN_DMOP_IO_RANGE_MEMORY", XEN_DMOP_IO_RANGE_MEMORY);
  V("XEN_DMOP_IO_RANGE_PCI", XEN_DMOP_IO_RANGE_PCI); V("XEN_DMOP_PCI_SBDF_0_0_5_0", XEN_DMOP_PCI_SBDF(0, 0, 5, 0));
  V("XEN_DMOP_PCI_SBDF_1_2_3_4", XEN_DMOP_PCI_SBDF(1, 2, 3, 4));
  V("grant_entry_v1.size", sizeof(grant_entry_v1_t)); V("grant_entry_v1.flags", offsetof(grant_entry_v1_t, flags));
  V("grant_entry_v1.domid", offsetof(grant_entry_v1_t, domid)); V("grant_entry_v1.frame", offsetof(grant_entry_v1_t, frame));
  V("GTF_permit_access", GTF_permit_access); V("GTF_readonly", GTF_readonly); V("GTF_reading", GTF_reading);
  V("GTF_writing", GTF_writing); V("GTF_type_mask", GTF_type_mask); V("GTF_sub_page", GTF_sub_page);
  V("GNTST_okay", GNTST_okay); V("GNTST_general_error", GNTST_general_error); V("GNTST_bad_domain", GNTST_bad_domain);
  V("GNTST_bad_gntref", GNTST_bad_gntref); V("GNTST_permission_denied", GNTST_permission_denied);
  V("GNTST_bad_page", GNTST_bad_page); V("GNTST_bad_copy_arg", GNTST_bad_copy_arg); V("GNTST_eagain", GNTST_eagain);
  V("copy.size", sizeof(xengnttab_grant_copy_segment_t));
  V("copy.source", offsetof(xengnttab_grant_copy_segment_t, source));
  V("copy.source.ref", offsetof(xengnttab_grant_copy_segment_t, source.foreign.ref));
  V("copy.source.offset", offsetof(xengnttab_grant_copy_segment_t, source.foreign.offset));
  V("copy.source.domid", offsetof(xengnttab_grant_copy_segment_t, source.foreign.domid));
  V("copy.dest", offsetof(xengnttab_grant_copy_segment_t, dest));
  V("copy.len", offsetof(xengnttab_grant_copy_segment_t, len)); V("copy.flags", offsetof(xengnttab_grant_copy_segment_t, flags));
  V("copy.status", offsetof(xengnttab_grant_copy_segment_t, status));
  V("GNTCOPY_source_gref", GNTCOPY_source_gref); V("GNTCOPY_dest_gref", GNTCOPY_dest_gref);
  V("xsd_sockmsg.size", sizeof(struct xsd_sockmsg)); V("xsd_sockmsg.type", offsetof(struct xsd_sockmsg, type));
  V("xsd_sockmsg.req_id", offsetof(struct xsd_sockmsg, req_id)); V("xsd_sockmsg.tx_id", offsetof(struct xsd_sockmsg, tx_id));
  V("xsd_sockmsg.len", offsetof(struct xsd_sockmsg, len));
  V("XENSTORE_PAYLOAD_MAX", XENSTORE_PAYLOAD_MAX); V("XENSTORE_ABS_PATH_MAX", XENSTORE_ABS_PATH_MAX);
  V("XENSTORE_REL_PATH_MAX", XENSTORE_REL_PATH_MAX); V("XS_TYPE_COUNT", XS_TYPE_COUNT);
  V("XS_CONTROL", XS_CONTROL); V("XS_DIRECTORY", XS_DIRECTORY); V("XS_READ", XS_READ); V("XS_GET_PERMS", XS_GET_PERMS);
  V("XS_WATCH", XS_WATCH); V("XS_UNWATCH", XS_UNWATCH); V("XS_TRANSACTION_START", XS_TRANSACTION_START);
  V("XS_TRANSACTION_END", XS_TRANSACTION_END); V("XS_INTRODUCE", XS_INTRODUCE); V("XS_RELEASE", XS_RELEASE);
  V("XS_GET_DOMAIN_PATH", XS_GET_DOMAIN_PATH); V("XS_WRITE", XS_WRITE); V("XS_MKDIR", XS_MKDIR); V("XS_RM", XS_RM);
  V("XS_SET_PERMS", XS_SET_PERMS); V("XS_WATCH_EVENT", XS_WATCH_EVENT); V("XS_ERROR", XS_ERROR);
  V("XS_IS_DOMAIN_INTRODUCED", XS_IS_DOMAIN_INTRODUCED); V("XS_RESUME", XS_RESUME); V("XS_SET_TARGET", XS_SET_TARGET);
  V("XS_RESET_WATCHES", XS_RESET_WATCHES); V("XS_DIRECTORY_PART", XS_DIRECTORY_PART);
  printf("}\n");
  return 0;
}
`;

let directory: string;
let c: Record<string, number>;

beforeAll(() => {
  directory = mkdtempSync(join(tmpdir(), 'xvio-layouts-'));
  writeFileSync(join(directory, 'layouts.c'), program);
  execFileSync(
    'cc',
    ['-std=gnu11', '-D__XEN_TOOLS__', '-o', join(directory, 'layouts'), join(directory, 'layouts.c')],
    {
      stdio: 'pipe',
    },
  );
  c = JSON.parse(execFileSync(join(directory, 'layouts'), { encoding: 'utf8' })) as Record<string, number>;
});

afterAll(() => {
  rmSync(directory, { recursive: true, force: true });
});

describe('layouts against libxen-dev headers', () => {
  it('struct ioreq and shared_iopage', () => {
    expect(c['ioreq.size']).toBe(ioreq.IOREQ_SIZE);
    expect(c['ioreq.addr']).toBe(ioreq.IOREQ_ADDR);
    expect(c['ioreq.data']).toBe(ioreq.IOREQ_DATA);
    expect(c['ioreq.count']).toBe(ioreq.IOREQ_COUNT);
    expect(c['ioreq.sizeField']).toBe(ioreq.IOREQ_SIZE_FIELD);
    expect(c['ioreq.vp_eport']).toBe(ioreq.IOREQ_VP_EPORT);
    expect(c['ioreq.pad0']).toBe(ioreq.IOREQ_PAD0);
    expect(c['ioreq.type']).toBe(ioreq.IOREQ_TYPE);
    for (const field of ['state', 'data_is_ptr', 'dir', 'df'])
      expect(c[`ioreq.${field}.byte`]).toBe(ioreq.IOREQ_FLAGS);
    expect(c['ioreq.state.mask']).toBe(ioreq.IOREQ_STATE_MASK);
    expect(c['ioreq.data_is_ptr.mask']).toBe(ioreq.IOREQ_DATA_IS_PTR);
    expect(c['ioreq.dir.mask']).toBe(ioreq.IOREQ_DIR_READ);
    expect(c['ioreq.df.mask']).toBe(ioreq.IOREQ_DF);
    expect(c['shared_iopage.stride']).toBe(ioreq.SHARED_IOPAGE_STRIDE);
    expect([c.STATE_IOREQ_NONE, c.STATE_IOREQ_READY, c.STATE_IOREQ_INPROCESS, c.STATE_IORESP_READY]).toEqual([
      ioreq.STATE_IOREQ_NONE,
      ioreq.STATE_IOREQ_READY,
      ioreq.STATE_IOREQ_INPROCESS,
      ioreq.STATE_IORESP_READY,
    ]);
    expect([
      c.IOREQ_TYPE_PIO,
      c.IOREQ_TYPE_COPY,
      c.IOREQ_TYPE_PCI_CONFIG,
      c.IOREQ_TYPE_TIMEOFFSET,
      c.IOREQ_TYPE_INVALIDATE,
    ]).toEqual([
      ioreq.IOREQ_TYPE_PIO,
      ioreq.IOREQ_TYPE_COPY,
      ioreq.IOREQ_TYPE_PCI_CONFIG,
      ioreq.IOREQ_TYPE_TIMEOFFSET,
      ioreq.IOREQ_TYPE_INVALIDATE,
    ]);
  });

  it('buf_ioreq and buffered_iopage, bit for bit', () => {
    expect(c['buf_ioreq.size']).toBe(ioreq.BUF_IOREQ_SIZE);
    expect(c['buf_ioreq.data']).toBe(ioreq.BUF_IOREQ_DATA);
    expect(c['buf_ioreq.type.mask']).toBe(0xff << ioreq.BUF_IOREQ_TYPE);
    expect(c['buf_ioreq.dir.mask']).toBe(1 << ioreq.BUF_IOREQ_DIR_SHIFT);
    expect(c['buf_ioreq.size.mask']).toBe(3 << ioreq.BUF_IOREQ_SIZE_SHIFT);
    expect(c['buf_ioreq.addr.mask']).toBe((ioreq.BUF_IOREQ_ADDR_MASK << ioreq.BUF_IOREQ_ADDR_SHIFT) >>> 0);
    expect(c['buffered_iopage.size']).toBe(4096);
    expect(c['buffered_iopage.read_pointer']).toBe(ioreq.BUFFERED_IOPAGE_READ_POINTER);
    expect(c['buffered_iopage.write_pointer']).toBe(ioreq.BUFFERED_IOPAGE_WRITE_POINTER);
    expect(c['buffered_iopage.buf_ioreq']).toBe(ioreq.BUFFERED_IOPAGE_SLOTS);
    expect(c.IOREQ_BUFFER_SLOT_NUM).toBe(ioreq.IOREQ_BUFFER_SLOT_NUM);
  });

  it('ioreq server resources, modes, ranges and SBDF encoding', () => {
    expect(c.XENMEM_resource_ioreq_server).toBe(ioreq.XENMEM_RESOURCE_IOREQ_SERVER);
    expect(c.XENMEM_resource_ioreq_server_frame_bufioreq).toBe(
      ioreq.XENMEM_RESOURCE_IOREQ_SERVER_FRAME_BUFIOREQ,
    );
    expect(c.XENMEM_resource_ioreq_server_frame_ioreq0).toBe(ioreq.resourceFrameIoreq(0));
    expect([
      c.HVM_IOREQSRV_BUFIOREQ_OFF,
      c.HVM_IOREQSRV_BUFIOREQ_LEGACY,
      c.HVM_IOREQSRV_BUFIOREQ_ATOMIC,
    ]).toEqual([
      ioreq.HVM_IOREQSRV_BUFIOREQ_OFF,
      ioreq.HVM_IOREQSRV_BUFIOREQ_LEGACY,
      ioreq.HVM_IOREQSRV_BUFIOREQ_ATOMIC,
    ]);
    expect([c.XEN_DMOP_IO_RANGE_PORT, c.XEN_DMOP_IO_RANGE_MEMORY, c.XEN_DMOP_IO_RANGE_PCI]).toEqual([
      ioreq.XEN_DMOP_IO_RANGE_PORT,
      ioreq.XEN_DMOP_IO_RANGE_MEMORY,
      ioreq.XEN_DMOP_IO_RANGE_PCI,
    ]);
    expect(c.XEN_DMOP_PCI_SBDF_0_0_5_0).toBe(ioreq.pciSbdf(0, 0, 5, 0));
    expect(c.XEN_DMOP_PCI_SBDF_1_2_3_4).toBe(ioreq.pciSbdf(1, 2, 3, 4));
  });

  it('grant_entry_v1, GTF flags, GNTST codes and the grant copy segment', () => {
    expect(c['grant_entry_v1.size']).toBe(grant.GRANT_ENTRY_V1_SIZE);
    expect(c['grant_entry_v1.flags']).toBe(grant.GRANT_ENTRY_V1_FLAGS);
    expect(c['grant_entry_v1.domid']).toBe(grant.GRANT_ENTRY_V1_DOMID);
    expect(c['grant_entry_v1.frame']).toBe(grant.GRANT_ENTRY_V1_FRAME);
    expect([
      c.GTF_permit_access,
      c.GTF_readonly,
      c.GTF_reading,
      c.GTF_writing,
      c.GTF_type_mask,
      c.GTF_sub_page,
    ]).toEqual([
      grant.GTF_permit_access,
      grant.GTF_readonly,
      grant.GTF_reading,
      grant.GTF_writing,
      grant.GTF_type_mask,
      grant.GTF_sub_page,
    ]);
    expect(c.GNTST_okay).toBe(grant.GNTST_okay);
    expect(c.GNTST_general_error).toBe(grant.GNTST_general_error);
    expect(c.GNTST_bad_domain).toBe(grant.GNTST_bad_domain);
    expect(c.GNTST_bad_gntref).toBe(grant.GNTST_bad_gntref);
    expect(c.GNTST_permission_denied).toBe(grant.GNTST_permission_denied);
    expect(c.GNTST_bad_page).toBe(grant.GNTST_bad_page);
    expect(c.GNTST_bad_copy_arg).toBe(grant.GNTST_bad_copy_arg);
    expect(c.GNTST_eagain).toBe(grant.GNTST_eagain);
    expect(c['copy.size']).toBe(grant.GRANT_COPY_SEGMENT_SIZE);
    expect(c['copy.source']).toBe(grant.GRANT_COPY_SOURCE);
    expect(c['copy.source.ref']).toBe(grant.GRANT_COPY_SOURCE + grant.GRANT_COPY_FOREIGN_REF);
    expect(c['copy.source.offset']).toBe(grant.GRANT_COPY_SOURCE + grant.GRANT_COPY_FOREIGN_OFFSET);
    expect(c['copy.source.domid']).toBe(grant.GRANT_COPY_SOURCE + grant.GRANT_COPY_FOREIGN_DOMID);
    expect(c['copy.dest']).toBe(grant.GRANT_COPY_DEST);
    expect(c['copy.len']).toBe(grant.GRANT_COPY_LEN);
    expect(c['copy.flags']).toBe(grant.GRANT_COPY_FLAGS);
    expect(c['copy.status']).toBe(grant.GRANT_COPY_STATUS);
    expect([c.GNTCOPY_source_gref, c.GNTCOPY_dest_gref]).toEqual([
      grant.GNTCOPY_source_gref,
      grant.GNTCOPY_dest_gref,
    ]);
  });

  it('xsd_sockmsg, limits and every message type', () => {
    expect(c['xsd_sockmsg.size']).toBe(xs.XSD_SOCKMSG_SIZE);
    expect(c['xsd_sockmsg.type']).toBe(xs.XSD_SOCKMSG_TYPE);
    expect(c['xsd_sockmsg.req_id']).toBe(xs.XSD_SOCKMSG_REQ_ID);
    expect(c['xsd_sockmsg.tx_id']).toBe(xs.XSD_SOCKMSG_TX_ID);
    expect(c['xsd_sockmsg.len']).toBe(xs.XSD_SOCKMSG_LEN);
    expect(c.XENSTORE_PAYLOAD_MAX).toBe(xs.XENSTORE_PAYLOAD_MAX);
    expect(c.XENSTORE_ABS_PATH_MAX).toBe(xs.XENSTORE_ABS_PATH_MAX);
    expect(c.XENSTORE_REL_PATH_MAX).toBe(xs.XENSTORE_REL_PATH_MAX);
    expect(c.XS_TYPE_COUNT).toBe(xs.XS_TYPE_COUNT);
    for (const [name, value] of Object.entries(xs.XsType))
      expect([name, c[`XS_${name}`]]).toEqual([name, value]);
  });
});
