// Layouts of xen/hvm/ioreq.h and the ioreq constants of xen/hvm/dm_op.h, hvm_op.h and
// memory.h (Xen 4.17), as measured with offsetof against Debian's libxen-dev headers (the
// layout test recompiles that check). Every field is little-endian: Xen's x86 and Arm ABIs are.

/** `struct ioreq` (ioreq_t): one per vCPU in the shared ioreq page. */
export const IOREQ_SIZE = 32;
export const IOREQ_ADDR = 0; // u64: physical address, port number, or SBDF << 32 | register
export const IOREQ_DATA = 8; // u64: the value, or a guest-physical address when data_is_ptr
export const IOREQ_COUNT = 16; // u32: repeat count (rep ins/outs/movs)
export const IOREQ_SIZE_FIELD = 20; // u32: access size in bytes (1, 2, 4, 8)
export const IOREQ_VP_EPORT = 24; // u32: the vCPU's event channel port (Xen's end)
export const IOREQ_PAD0 = 28; // u16
/** Byte holding the bitfield {state:4, data_is_ptr:1, dir:1, df:1, pad:1} (GCC allocates from bit 0). */
export const IOREQ_FLAGS = 30;
export const IOREQ_TYPE = 31; // u8

export const IOREQ_STATE_MASK = 0x0f;
export const IOREQ_DATA_IS_PTR = 0x10;
/** Direction bit: set = read (IOREQ_READ 1), clear = write (IOREQ_WRITE 0). */
export const IOREQ_DIR_READ = 0x20;
export const IOREQ_DF = 0x40;

/** ioreq states: Xen sets READY, the server INPROCESS while working, then IORESP_READY. */
export const STATE_IOREQ_NONE = 0;
export const STATE_IOREQ_READY = 1;
export const STATE_IOREQ_INPROCESS = 2;
export const STATE_IORESP_READY = 3;

export const IOREQ_TYPE_PIO = 0;
/** MMIO. */
export const IOREQ_TYPE_COPY = 1;
export const IOREQ_TYPE_PCI_CONFIG = 2;
export const IOREQ_TYPE_TIMEOFFSET = 7;
/** Broadcast to every server when guest mappings may have changed (mapcache invalidation). */
export const IOREQ_TYPE_INVALIDATE = 8;

/** `struct shared_iopage`: `ioreq_t vcpu_ioreq[]` indexed by vCPU id; 128 fit in one page. */
export const SHARED_IOPAGE_STRIDE = IOREQ_SIZE;
export const SHARED_IOPAGE_MAX_VCPUS = 4096 / IOREQ_SIZE;

export function ioreqOffset(vcpu: number): number {
  return vcpu * SHARED_IOPAGE_STRIDE;
}

/**
 * `buf_ioreq_t`, 8 bytes: u8 type @0; then in the same 32-bit unit pad:1 (bit 8), dir:1
 * (bit 9), size:2 (bits 10-11: 0=>1, 1=>2, 2=>4, 3=>8 bytes), addr:20 (bits 12-31); u32 data @4.
 * An 8-byte write takes two consecutive slots, the second carrying the high 32 bits.
 */
export const BUF_IOREQ_SIZE = 8;
export const BUF_IOREQ_TYPE = 0;
export const BUF_IOREQ_DATA = 4;
export const BUF_IOREQ_DIR_SHIFT = 9;
export const BUF_IOREQ_SIZE_SHIFT = 10;
export const BUF_IOREQ_ADDR_SHIFT = 12;
export const BUF_IOREQ_ADDR_MASK = 0xfffff;

/** `struct buffered_iopage`: u32 read_pointer @0, u32 write_pointer @4, buf_ioreq_t[511] @8. */
export const BUFFERED_IOPAGE_READ_POINTER = 0;
export const BUFFERED_IOPAGE_WRITE_POINTER = 4;
export const BUFFERED_IOPAGE_SLOTS = 8;
export const IOREQ_BUFFER_SLOT_NUM = 511;

/** XENMEM_resource_ioreq_server: frame 0 is the buffered page, frame 1 + n is ioreq page n. */
export const XENMEM_RESOURCE_IOREQ_SERVER = 0;
export const XENMEM_RESOURCE_IOREQ_SERVER_FRAME_BUFIOREQ = 0;
export function resourceFrameIoreq(n: number): number {
  return 1 + n;
}

/** HVM_IOREQSRV_BUFIOREQ_* (hvm_op.h). */
export const HVM_IOREQSRV_BUFIOREQ_OFF = 0;
export const HVM_IOREQSRV_BUFIOREQ_LEGACY = 1;
export const HVM_IOREQSRV_BUFIOREQ_ATOMIC = 2;

/** XEN_DMOP_IO_RANGE_* (dm_op.h). */
export const XEN_DMOP_IO_RANGE_PORT = 0;
export const XEN_DMOP_IO_RANGE_MEMORY = 1;
export const XEN_DMOP_IO_RANGE_PCI = 2;

export type IoreqState = 0 | 1 | 2 | 3;

/** A decoded ioreq_t. */
export interface IoreqFields {
  addr: bigint;
  data: bigint;
  count: number;
  size: number;
  vpEport: number;
  state: number;
  dataIsPtr: boolean;
  /** true = read (IOREQ_READ). */
  dirRead: boolean;
  df: boolean;
  type: number;
}

export function readIoreq(view: DataView, offset: number): IoreqFields {
  const flags = view.getUint8(offset + IOREQ_FLAGS);
  return {
    addr: view.getBigUint64(offset + IOREQ_ADDR, true),
    data: view.getBigUint64(offset + IOREQ_DATA, true),
    count: view.getUint32(offset + IOREQ_COUNT, true),
    size: view.getUint32(offset + IOREQ_SIZE_FIELD, true),
    vpEport: view.getUint32(offset + IOREQ_VP_EPORT, true),
    state: flags & IOREQ_STATE_MASK,
    dataIsPtr: (flags & IOREQ_DATA_IS_PTR) !== 0,
    dirRead: (flags & IOREQ_DIR_READ) !== 0,
    df: (flags & IOREQ_DF) !== 0,
    type: view.getUint8(offset + IOREQ_TYPE),
  };
}

/** Writes every field except the state nibble's final value (callers publish state last). */
export function writeIoreq(view: DataView, offset: number, fields: IoreqFields): void {
  view.setBigUint64(offset + IOREQ_ADDR, BigInt.asUintN(64, fields.addr), true);
  view.setBigUint64(offset + IOREQ_DATA, BigInt.asUintN(64, fields.data), true);
  view.setUint32(offset + IOREQ_COUNT, fields.count, true);
  view.setUint32(offset + IOREQ_SIZE_FIELD, fields.size, true);
  view.setUint32(offset + IOREQ_VP_EPORT, fields.vpEport, true);
  view.setUint16(offset + IOREQ_PAD0, 0, true);
  view.setUint8(
    offset + IOREQ_FLAGS,
    (fields.state & IOREQ_STATE_MASK) |
      (fields.dataIsPtr ? IOREQ_DATA_IS_PTR : 0) |
      (fields.dirRead ? IOREQ_DIR_READ : 0) |
      (fields.df ? IOREQ_DF : 0),
  );
  view.setUint8(offset + IOREQ_TYPE, fields.type);
}

export function readIoreqState(view: DataView, offset: number): number {
  return view.getUint8(offset + IOREQ_FLAGS) & IOREQ_STATE_MASK;
}

/** Replaces only the state nibble, keeping the other bits of the flags byte. */
export function writeIoreqState(view: DataView, offset: number, state: number): void {
  const flags = view.getUint8(offset + IOREQ_FLAGS);
  view.setUint8(offset + IOREQ_FLAGS, (flags & ~IOREQ_STATE_MASK) | (state & IOREQ_STATE_MASK));
}

/** A decoded buf_ioreq_t. */
export interface BufIoreqFields {
  type: number;
  dirRead: boolean;
  /** Size in bytes: 1, 2, 4 or 8. */
  size: number;
  /** 20-bit address (Xen buffers only low-address accesses such as VGA). */
  addr: number;
  data: number;
}

export function readBufIoreq(view: DataView, offset: number): BufIoreqFields {
  const word = view.getUint32(offset, true);
  return {
    type: word & 0xff,
    dirRead: ((word >>> BUF_IOREQ_DIR_SHIFT) & 1) === 1,
    size: 1 << ((word >>> BUF_IOREQ_SIZE_SHIFT) & 3),
    addr: (word >>> BUF_IOREQ_ADDR_SHIFT) & BUF_IOREQ_ADDR_MASK,
    data: view.getUint32(offset + BUF_IOREQ_DATA, true),
  };
}

export function writeBufIoreq(view: DataView, offset: number, fields: BufIoreqFields): void {
  const sizeCode = fields.size === 8 ? 3 : fields.size === 4 ? 2 : fields.size === 2 ? 1 : 0;
  const word =
    (fields.type & 0xff) |
    ((fields.dirRead ? 1 : 0) << BUF_IOREQ_DIR_SHIFT) |
    (sizeCode << BUF_IOREQ_SIZE_SHIFT) |
    ((fields.addr & BUF_IOREQ_ADDR_MASK) << BUF_IOREQ_ADDR_SHIFT);
  view.setUint32(offset, word >>> 0, true);
  view.setUint32(offset + BUF_IOREQ_DATA, fields.data >>> 0, true);
}

/** PCI config ioreq address: `(u64)SBDF << 32 | register`, SBDF = seg<<16 | bus<<8 | dev<<3 | fn (XEN_DMOP_PCI_SBDF). */
export function pciSbdf(segment: number, bus: number, device: number, fn: number): number {
  return ((segment & 0xffff) * 0x10000 + ((bus & 0xff) << 8) + ((device & 0x1f) << 3) + (fn & 7)) >>> 0;
}

export function splitSbdf(sbdf: number): { segment: number; bus: number; device: number; function: number } {
  return { segment: sbdf >>> 16, bus: (sbdf >>> 8) & 0xff, device: (sbdf >>> 3) & 0x1f, function: sbdf & 7 };
}
