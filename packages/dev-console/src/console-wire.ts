// The console device as the VirtIO 1.2 specification defines it, section 5.3.

/** Device ID 3, "console" (spec 5, table of device IDs; 5.3.1). */
export const VIRTIO_ID_CONSOLE = 3;

// 5.3.3 Feature bits.
/** Configuration cols and rows are valid (and RESIZE messages carry sizes). */
export const VIRTIO_CONSOLE_F_SIZE = 1n << 0n;
/** Multiple ports, max_nr_ports is valid, control queues are used. */
export const VIRTIO_CONSOLE_F_MULTIPORT = 1n << 1n;
/** The driver may write single characters to emerg_wr. */
export const VIRTIO_CONSOLE_F_EMERG_WRITE = 1n << 2n;

// 5.3.4 struct virtio_console_config: every field little-endian.
export const CONFIG_COLS = 0; // le16 cols
export const CONFIG_ROWS = 2; // le16 rows
export const CONFIG_MAX_NR_PORTS = 4; // le32 max_nr_ports
export const CONFIG_EMERG_WR = 8; // le32 emerg_wr
export const CONSOLE_CONFIG_SIZE = 12;

// 5.3.2 Virtqueues: 0 port0 receiveq, 1 port0 transmitq, 2 control receiveq, 3 control
// transmitq, then 2N+2 / 2N+3 for port N >= 1. "receive" is the driver's point of view: the
// device writes host input into receiveq buffers and reads guest output from transmitq.
export const CONTROL_RECEIVE_QUEUE = 2;
export const CONTROL_TRANSMIT_QUEUE = 3;

/** Queue indexes of a port (spec 5.3.2). */
export function portQueues(port: number): { receive: number; transmit: number } {
  if (port === 0) return { receive: 0, transmit: 1 };
  return { receive: 2 * port + 2, transmit: 2 * port + 3 };
}

export type QueueRole =
  | { kind: 'port'; port: number; direction: 'receive' | 'transmit' }
  | { kind: 'control'; direction: 'receive' | 'transmit' };

/** What a queue index carries (the inverse of `portQueues`). */
export function queueRole(queueIndex: number): QueueRole {
  if (queueIndex === 0 || queueIndex === 1) {
    return { kind: 'port', port: 0, direction: queueIndex === 0 ? 'receive' : 'transmit' };
  }
  if (queueIndex === CONTROL_RECEIVE_QUEUE) return { kind: 'control', direction: 'receive' };
  if (queueIndex === CONTROL_TRANSMIT_QUEUE) return { kind: 'control', direction: 'transmit' };
  return {
    kind: 'port',
    port: (queueIndex >> 1) - 1,
    direction: (queueIndex & 1) === 0 ? 'receive' : 'transmit',
  };
}

/** Queues a device with `maxPorts` ports has: 2 without MULTIPORT, else 2 x (ports + 1) (spec 5.3.2). */
export function queueCount(maxPorts: number, multiport: boolean): number {
  return multiport ? 2 * (maxPorts + 1) : 2;
}

// 5.3.6.2 struct virtio_console_control: le32 id, le16 event, le16 value.
export const CONTROL_ID = 0;
export const CONTROL_EVENT = 4;
export const CONTROL_VALUE = 6;
export const CONTROL_SIZE = 8;

// 5.3.6.2 control events.
export const VIRTIO_CONSOLE_DEVICE_READY = 0;
export const VIRTIO_CONSOLE_DEVICE_ADD = 1;
export const VIRTIO_CONSOLE_DEVICE_REMOVE = 2;
export const VIRTIO_CONSOLE_PORT_READY = 3;
export const VIRTIO_CONSOLE_CONSOLE_PORT = 4;
export const VIRTIO_CONSOLE_RESIZE = 5;
export const VIRTIO_CONSOLE_PORT_OPEN = 6;
export const VIRTIO_CONSOLE_PORT_NAME = 7;

export const CONTROL_EVENT_NAMES: Readonly<Record<number, string>> = {
  [VIRTIO_CONSOLE_DEVICE_READY]: 'DEVICE_READY',
  [VIRTIO_CONSOLE_DEVICE_ADD]: 'DEVICE_ADD',
  [VIRTIO_CONSOLE_DEVICE_REMOVE]: 'DEVICE_REMOVE',
  [VIRTIO_CONSOLE_PORT_READY]: 'PORT_READY',
  [VIRTIO_CONSOLE_CONSOLE_PORT]: 'CONSOLE_PORT',
  [VIRTIO_CONSOLE_RESIZE]: 'RESIZE',
  [VIRTIO_CONSOLE_PORT_OPEN]: 'PORT_OPEN',
  [VIRTIO_CONSOLE_PORT_NAME]: 'PORT_NAME',
};

/** Events a driver may send (spec 5.3.6.2): everything else from the guest is malformed. */
export const DRIVER_EVENTS: ReadonlySet<number> = new Set([
  VIRTIO_CONSOLE_DEVICE_READY,
  VIRTIO_CONSOLE_PORT_READY,
  VIRTIO_CONSOLE_PORT_OPEN,
]);

export interface ControlMessage {
  id: number;
  event: number;
  value: number;
  /** Bytes after the struct: the name of PORT_NAME, the size of RESIZE. */
  payload?: Uint8Array;
}

/** Decodes the fixed part of a control message; undefined when shorter than the struct. */
export function decodeControl(bytes: Uint8Array): ControlMessage | undefined {
  if (bytes.length < CONTROL_SIZE) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return {
    id: view.getUint32(CONTROL_ID, true),
    event: view.getUint16(CONTROL_EVENT, true),
    value: view.getUint16(CONTROL_VALUE, true),
  };
}

export function encodeControl(message: ControlMessage): Uint8Array {
  const payload = message.payload ?? new Uint8Array(0);
  const bytes = new Uint8Array(CONTROL_SIZE + payload.length);
  const view = new DataView(bytes.buffer);
  view.setUint32(CONTROL_ID, message.id >>> 0, true);
  view.setUint16(CONTROL_EVENT, message.event, true);
  view.setUint16(CONTROL_VALUE, message.value, true);
  bytes.set(payload, CONTROL_SIZE);
  return bytes;
}

export interface ConsoleSize {
  cols: number;
  rows: number;
}

/**
 * Field order of the RESIZE payload. The spec (5.3.6.2) says `struct virtio_console_resize
 * { le16 cols; le16 rows; }`; Linux read rows first from 2010 until a 2025 fix, so older
 * guest kernels need `rows-first` to see the right size.
 */
export type ResizeOrder = 'spec' | 'rows-first';

export const RESIZE_SIZE = 4;

export function encodeResize(size: ConsoleSize, order: ResizeOrder = 'spec'): Uint8Array {
  const bytes = new Uint8Array(RESIZE_SIZE);
  const view = new DataView(bytes.buffer);
  const [first, second] = order === 'spec' ? [size.cols, size.rows] : [size.rows, size.cols];
  view.setUint16(0, first, true);
  view.setUint16(2, second, true);
  return bytes;
}

export function decodeResize(bytes: Uint8Array, order: ResizeOrder = 'spec'): ConsoleSize | undefined {
  if (bytes.length < RESIZE_SIZE) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const first = view.getUint16(0, true);
  const second = view.getUint16(2, true);
  return order === 'spec' ? { cols: first, rows: second } : { cols: second, rows: first };
}

/** Writes the config struct (spec 5.3.4). */
export function encodeConsoleConfig(fields: {
  size: ConsoleSize;
  maxPorts: number;
  emergWrite: number;
}): Uint8Array {
  const bytes = new Uint8Array(CONSOLE_CONFIG_SIZE);
  const view = new DataView(bytes.buffer);
  view.setUint16(CONFIG_COLS, fields.size.cols, true);
  view.setUint16(CONFIG_ROWS, fields.size.rows, true);
  view.setUint32(CONFIG_MAX_NR_PORTS, fields.maxPorts >>> 0, true);
  view.setUint32(CONFIG_EMERG_WR, fields.emergWrite >>> 0, true);
  return bytes;
}
