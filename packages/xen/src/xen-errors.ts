const marker = Symbol.for('xvio.xen.error');

/**
 * The errno names Xen, its Linux drivers and xenstored answer with. xenstored sends them as
 * strings on the wire (xs_wire.h `xsd_errors`); the libraries set `errno`.
 */
export type XenErrno =
  | 'EPERM'
  | 'ENOENT'
  | 'ESRCH'
  | 'EIO'
  | 'ENXIO'
  | 'E2BIG'
  | 'EBADF'
  | 'EAGAIN'
  | 'ENOMEM'
  | 'EACCES'
  | 'EFAULT'
  | 'EBUSY'
  | 'EEXIST'
  | 'ENODEV'
  | 'EISDIR'
  | 'EINVAL'
  | 'ENOSPC'
  | 'EROFS'
  | 'ERANGE'
  | 'ENOSYS'
  | 'ENOTEMPTY'
  | 'EOPNOTSUPP'
  | 'EISCONN'
  | 'ENOTCONN'
  | 'ETIMEDOUT'
  | 'ECONNRESET';

/** Linux x86-64 errno numbers, for the native libraries' `errno` and for reports. */
export const XEN_ERRNO: Readonly<Record<XenErrno, number>> = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EISDIR: 21,
  EINVAL: 22,
  ENOSPC: 28,
  EROFS: 30,
  ERANGE: 34,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  EOPNOTSUPP: 95,
  EISCONN: 106,
  ENOTCONN: 107,
  ETIMEDOUT: 110,
  ECONNRESET: 104,
};

const byNumber = new Map<number, XenErrno>(
  Object.entries(XEN_ERRNO).map(([name, value]) => [value, name as XenErrno]),
);

/** The errno name for a number; `EIO` for numbers Xen does not use. */
export function errnoName(errno: number): XenErrno {
  return byNumber.get(errno) ?? 'EIO';
}

/** Whether a string is one of the errno names above (xenstored error payloads are checked with it). */
export function isXenErrno(value: string): value is XenErrno {
  return Object.hasOwn(XEN_ERRNO, value);
}

/** Which Xen service raised an error. */
export type XenService =
  | 'xenstore'
  | 'evtchn'
  | 'gnttab'
  | 'gntshr'
  | 'foreignmemory'
  | 'devicemodel'
  | 'toolcore'
  | 'host'
  | 'sim';

/**
 * A failed Xen operation, with the errno Xen (or xenstored, or the Linux driver) gives for it.
 * `isInstance` recognises errors from any installed copy of this package.
 */
export class XenError extends Error {
  readonly [marker] = true;
  override readonly name: string = 'XenError';
  readonly code: XenErrno;
  readonly errno: number;
  readonly service: XenService;
  /** The operation that failed, e.g. `xs_read`, `map_grant_refs`. */
  readonly operation: string;

  constructor(
    code: XenErrno,
    service: XenService,
    operation: string,
    message?: string,
    options?: ErrorOptions,
  ) {
    super(`${code}: ${operation}${message ? `: ${message}` : ''}`, options);
    this.code = code;
    this.errno = XEN_ERRNO[code];
    this.service = service;
    this.operation = operation;
  }

  static isInstance(value: unknown): value is XenError {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[marker] === true;
  }
}

/**
 * A grant batch failed: `status[i]` is the GNTST_* value of op i (0 for the ops that would
 * have succeeded). Nothing of the batch stays mapped or copied-from when this is thrown.
 */
export class GrantError extends XenError {
  override readonly name = 'GrantError';
  readonly status: readonly number[];

  constructor(
    code: XenErrno,
    operation: string,
    status: readonly number[],
    message?: string,
    options?: ErrorOptions,
  ) {
    super(code, 'gnttab', operation, message, options);
    this.status = status;
  }

  static override isInstance(value: unknown): value is GrantError {
    return XenError.isInstance(value) && (value as Error).name === 'GrantError';
  }
}

/** What a host lacks to run a Xen service natively. */
export interface XenMissing {
  /** `device`: a /dev/xen node (driver not loaded, not a Xen domain); `library`: a shared library; `symbol`: a function in it. */
  readonly kind: 'device' | 'library' | 'symbol' | 'permission';
  /** The device path, library soname or symbol name. */
  readonly name: string;
  /** The Debian package that provides it, when there is one. */
  readonly package?: string;
}

/**
 * A native Xen service cannot be opened on this host (not a Xen domain, driver not loaded,
 * library not installed). Raised before any call into the hypervisor, so it never hangs.
 */
export class XenUnavailableError extends XenError {
  override readonly name = 'XenUnavailableError';
  readonly missing: readonly XenMissing[];

  constructor(
    service: XenService,
    operation: string,
    missing: readonly XenMissing[],
    options?: ErrorOptions,
  ) {
    const what = missing
      .map((m) => `${m.kind} ${m.name}${m.package ? ` (package ${m.package})` : ''}`)
      .join(', ');
    super(
      missing.some((m) => m.kind === 'device') ? 'ENODEV' : 'ENOENT',
      service,
      operation,
      `missing ${what}`,
      options,
    );
    this.missing = missing;
  }

  static override isInstance(value: unknown): value is XenUnavailableError {
    return XenError.isInstance(value) && (value as Error).name === 'XenUnavailableError';
  }
}
