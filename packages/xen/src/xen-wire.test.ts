import { describe, expect, it } from 'vitest';
import { GTF_permit_access, GTF_readonly, readGrantEntry, writeGrantEntry } from './xen-grant-wire.js';
import {
  IOREQ_TYPE_COPY,
  pciSbdf,
  readBufIoreq,
  readIoreq,
  readIoreqState,
  STATE_IOREQ_READY,
  STATE_IORESP_READY,
  splitSbdf,
  writeBufIoreq,
  writeIoreq,
  writeIoreqState,
} from './xen-ioreq-wire.js';
import {
  encodeXsMessage,
  isValidXenStorePath,
  joinNulTerminated,
  parsePermission,
  readXsHeader,
  splitNulTerminated,
  XsType,
  xsTypeName,
} from './xenstore-wire.js';

describe('ioreq wire', () => {
  it('round-trips an ioreq and changes only the state nibble', () => {
    const view = new DataView(new ArrayBuffer(64));
    const fields = {
      addr: 0x28_0000_000an,
      data: 0xffff_ffff_ffff_fffen,
      count: 1,
      size: 4,
      vpEport: 17,
      state: STATE_IOREQ_READY,
      dataIsPtr: true,
      dirRead: true,
      df: true,
      type: IOREQ_TYPE_COPY,
    };
    writeIoreq(view, 32, fields);
    expect(readIoreq(view, 32)).toEqual(fields);
    writeIoreqState(view, 32, STATE_IORESP_READY);
    expect(readIoreqState(view, 32)).toBe(STATE_IORESP_READY);
    expect(readIoreq(view, 32)).toEqual({ ...fields, state: STATE_IORESP_READY });
  });

  it('round-trips buffered ioreqs of every size', () => {
    const view = new DataView(new ArrayBuffer(8));
    for (const size of [1, 2, 4, 8]) {
      const fields = { type: 0, dirRead: false, size, addr: 0xa_bcde, data: 0xdead_beef };
      writeBufIoreq(view, 0, fields);
      expect(readBufIoreq(view, 0)).toEqual(fields);
    }
  });

  it('encodes SBDF as XEN_DMOP_PCI_SBDF does', () => {
    expect(pciSbdf(0, 0, 5, 0)).toBe(0x28);
    expect(splitSbdf(pciSbdf(0xffff, 0xff, 31, 7))).toEqual({
      segment: 0xffff,
      bus: 0xff,
      device: 31,
      function: 7,
    });
  });
});

describe('grant wire', () => {
  it('round-trips a v1 entry', () => {
    const view = new DataView(new ArrayBuffer(16));
    writeGrantEntry(view, 8, { flags: GTF_permit_access | GTF_readonly, domid: 0x7fef, frame: 0xffff_ffff });
    expect(readGrantEntry(view, 8)).toEqual({
      flags: GTF_permit_access | GTF_readonly,
      domid: 0x7fef,
      frame: 0xffff_ffff,
    });
  });
});

describe('xenstore wire', () => {
  it('encodes the bytes Debian xenstore-read sends (socat capture)', () => {
    const bytes = encodeXsMessage(XsType.READ, 0, 0, joinNulTerminated(['/local/domain/0/name']));
    expect(Buffer.from(bytes.subarray(0, 16)).toString('hex')).toBe('02000000000000000000000015000000');
    expect(readXsHeader(bytes)).toEqual({ type: 2, reqId: 0, txId: 0, len: 21 });
    expect(xsTypeName(15)).toBe('WATCH_EVENT');
    expect(() => encodeXsMessage(XsType.WRITE, 0, 0, new Uint8Array(4097))).toThrow(RangeError);
  });

  it('splits NUL-terminated payloads', () => {
    expect(splitNulTerminated(joinNulTerminated(['a', 'b']))).toEqual(['a', 'b']);
    expect(splitNulTerminated(new Uint8Array())).toEqual([]);
  });

  it('validates paths like xenstored', () => {
    expect(isValidXenStorePath('/local/domain/0/backend/vif-0_x@')).toBe(true);
    expect(isValidXenStorePath('/local/domain/0/backend/vif-0_x')).toBe(true);
    expect(isValidXenStorePath('device/vif')).toBe(true);
    expect(isValidXenStorePath('/')).toBe(true);
    expect(isValidXenStorePath('@introduceDomain', { allowSpecial: true })).toBe(true);
    expect(isValidXenStorePath('@introduceDomain')).toBe(false);
    for (const bad of ['', '/a/', '/a//b', '/a b', '/é', 'a/']) expect(isValidXenStorePath(bad)).toBe(false);
  });

  it('parses permissions', () => {
    expect(parsePermission('r5')).toEqual({ domid: 5, access: 'read' });
    expect(parsePermission('b65535')).toEqual({ domid: 65535, access: 'both' });
    for (const bad of ['x5', 'r', 'r65536', 'r-1', 'rr5']) expect(parsePermission(bad)).toBeUndefined();
  });
});
