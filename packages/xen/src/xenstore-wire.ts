// The xenstore wire protocol of xen/io/xs_wire.h (Xen 4.17): a 16-byte header `struct
// xsd_sockmsg` {u32 type, u32 req_id, u32 tx_id, u32 len}, little-endian, followed by `len`
// bytes of payload: NUL-terminated strings, except WRITE's value which runs to the end.
import type { XenErrno } from './xen-errors.js';

export const XSD_SOCKMSG_SIZE = 16;
export const XSD_SOCKMSG_TYPE = 0;
export const XSD_SOCKMSG_REQ_ID = 4;
export const XSD_SOCKMSG_TX_ID = 8;
export const XSD_SOCKMSG_LEN = 12;

/** Largest payload either side may send (XENSTORE_PAYLOAD_MAX). */
export const XENSTORE_PAYLOAD_MAX = 4096;
/** Longest absolute path, and longest path relative to the domain's home (xs_wire.h). */
export const XENSTORE_ABS_PATH_MAX = 3072;
export const XENSTORE_REL_PATH_MAX = 2048;

/** enum xsd_sockmsg_type. */
export const XsType = {
  CONTROL: 0,
  DIRECTORY: 1,
  READ: 2,
  GET_PERMS: 3,
  WATCH: 4,
  UNWATCH: 5,
  TRANSACTION_START: 6,
  TRANSACTION_END: 7,
  INTRODUCE: 8,
  RELEASE: 9,
  GET_DOMAIN_PATH: 10,
  WRITE: 11,
  MKDIR: 12,
  RM: 13,
  SET_PERMS: 14,
  WATCH_EVENT: 15,
  ERROR: 16,
  IS_DOMAIN_INTRODUCED: 17,
  RESUME: 18,
  SET_TARGET: 19,
  /* 20 was XS_RESTRICT, removed */
  RESET_WATCHES: 21,
  DIRECTORY_PART: 22,
} as const;
export type XsTypeName = keyof typeof XsType;
export type XsTypeValue = (typeof XsType)[XsTypeName];
export const XS_TYPE_COUNT = 23;

const typeNames = new Map<number, XsTypeName>(
  Object.entries(XsType).map(([name, value]) => [value, name as XsTypeName]),
);

export function xsTypeName(type: number): XsTypeName | undefined {
  return typeNames.get(type);
}

/** The errno strings xenstored may send in an XS_ERROR payload (xs_wire.h `xsd_errors`). */
export const XSD_ERRORS: readonly XenErrno[] = [
  'EINVAL',
  'EACCES',
  'EEXIST',
  'EISDIR',
  'ENOENT',
  'ENOMEM',
  'ENOSPC',
  'EIO',
  'ENOTEMPTY',
  'ENOSYS',
  'EROFS',
  'EBUSY',
  'EAGAIN',
  'EISCONN',
  'E2BIG',
  'EPERM',
];

/** Watch event payload fields: path then token (XS_WATCH_PATH, XS_WATCH_TOKEN). */
export const XS_WATCH_PATH = 0;
export const XS_WATCH_TOKEN = 1;

export interface XsHeader {
  type: number;
  reqId: number;
  txId: number;
  len: number;
}

export function readXsHeader(bytes: Uint8Array, offset = 0): XsHeader {
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, XSD_SOCKMSG_SIZE);
  return {
    type: view.getUint32(XSD_SOCKMSG_TYPE, true),
    reqId: view.getUint32(XSD_SOCKMSG_REQ_ID, true),
    txId: view.getUint32(XSD_SOCKMSG_TX_ID, true),
    len: view.getUint32(XSD_SOCKMSG_LEN, true),
  };
}

/** Encodes one message (header + payload). Throws RangeError on a payload above XENSTORE_PAYLOAD_MAX. */
export function encodeXsMessage(type: number, reqId: number, txId: number, payload: Uint8Array): Uint8Array {
  if (payload.length > XENSTORE_PAYLOAD_MAX) {
    throw new RangeError(`xenstore payload of ${payload.length} bytes exceeds ${XENSTORE_PAYLOAD_MAX}`);
  }
  const out = new Uint8Array(XSD_SOCKMSG_SIZE + payload.length);
  const view = new DataView(out.buffer);
  view.setUint32(XSD_SOCKMSG_TYPE, type >>> 0, true);
  view.setUint32(XSD_SOCKMSG_REQ_ID, reqId >>> 0, true);
  view.setUint32(XSD_SOCKMSG_TX_ID, txId >>> 0, true);
  view.setUint32(XSD_SOCKMSG_LEN, payload.length, true);
  out.set(payload, XSD_SOCKMSG_SIZE);
  return out;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: false });

/** `a\0b\0...` with a NUL after every string (the form of paths, tokens and directory lists). */
export function joinNulTerminated(strings: readonly string[]): Uint8Array {
  return encoder.encode(strings.map((s) => `${s}\0`).join(''));
}

/** Splits a payload at NULs; a trailing NUL does not produce an empty last element. */
export function splitNulTerminated(payload: Uint8Array): string[] {
  if (payload.length === 0) return [];
  const text = decoder.decode(payload);
  const parts = text.split('\0');
  if (parts[parts.length - 1] === '') parts.pop();
  return parts;
}

export function encodeString(value: string): Uint8Array {
  return encoder.encode(value);
}

export function decodeString(bytes: Uint8Array): string {
  return decoder.decode(bytes);
}

/**
 * Path rules of xenstored (is_valid_nodename): absolute paths start with `/`, relative ones
 * are under the connection's home; characters `[A-Za-z0-9-/_@]` only; no `//`, no trailing
 * `/` except the root; a leading `@` only for the special watch paths.
 */
export function isValidXenStorePath(path: string, options: { allowSpecial?: boolean } = {}): boolean {
  if (path.length === 0) return false;
  // Only watches may name the special nodes; no other path starts with '@'.
  if (path.startsWith('@'))
    return options.allowSpecial === true && (path === '@introduceDomain' || path === '@releaseDomain');
  if (path.startsWith('/')) {
    if (path.length > XENSTORE_ABS_PATH_MAX) return false;
    if (path !== '/' && path.endsWith('/')) return false;
  } else if (path.length > XENSTORE_REL_PATH_MAX || path.endsWith('/')) {
    return false;
  }
  if (path.includes('//')) return false;
  return /^[A-Za-z0-9\-/_@]+$/.test(path);
}

/** Permission letters of the wire form `<letter><domid>`: n none, r read, w write, b both. */
export type XenStoreAccess = 'none' | 'read' | 'write' | 'both';
export const XS_PERM_LETTERS: Readonly<Record<XenStoreAccess, string>> = {
  none: 'n',
  read: 'r',
  write: 'w',
  both: 'b',
};

/** One permission entry; the first entry of a node names the owner and the access of every domain not listed. */
export interface XenStorePermission {
  readonly domid: number;
  readonly access: XenStoreAccess;
}

export function formatPermission(permission: XenStorePermission): string {
  return `${XS_PERM_LETTERS[permission.access]}${permission.domid}`;
}

/** Parses `r5`-style entries; undefined when malformed (xenstored answers EINVAL). */
export function parsePermission(text: string): XenStorePermission | undefined {
  const match = /^([nrwb])(\d{1,5})$/.exec(text);
  if (!match) return undefined;
  const domid = Number(match[2]);
  if (domid > 0xffff) return undefined;
  const letter = match[1];
  const access: XenStoreAccess =
    letter === 'r' ? 'read' : letter === 'w' ? 'write' : letter === 'b' ? 'both' : 'none';
  return { domid, access };
}
