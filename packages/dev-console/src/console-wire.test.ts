import { describe, expect, it } from 'vitest';
import {
  CONSOLE_CONFIG_SIZE,
  CONTROL_SIZE,
  decodeControl,
  decodeResize,
  encodeConsoleConfig,
  encodeControl,
  encodeResize,
  portQueues,
  queueCount,
  queueRole,
  VIRTIO_CONSOLE_PORT_NAME,
} from './console-wire.js';

describe('console wire formats', () => {
  it('lays out virtio_console_control as le32 id, le16 event, le16 value (5.3.6.2)', () => {
    const bytes = encodeControl({ id: 0x01020304, event: VIRTIO_CONSOLE_PORT_NAME, value: 0xbeef });
    expect(Array.from(bytes)).toEqual([4, 3, 2, 1, 7, 0, 0xef, 0xbe]);
    expect(decodeControl(bytes)).toEqual({ id: 0x01020304, event: 7, value: 0xbeef });
    expect(decodeControl(bytes.subarray(0, CONTROL_SIZE - 1))).toBeUndefined();
  });

  it('appends a payload after the struct (PORT_NAME)', () => {
    const bytes = encodeControl({
      id: 1,
      event: VIRTIO_CONSOLE_PORT_NAME,
      value: 1,
      payload: Uint8Array.of(0x61, 0x62),
    });
    expect(bytes.length).toBe(CONTROL_SIZE + 2);
    expect(Array.from(bytes.subarray(CONTROL_SIZE))).toEqual([0x61, 0x62]);
  });

  it('lays out virtio_console_config as le16 cols, le16 rows, le32 max_nr_ports, le32 emerg_wr (5.3.4)', () => {
    const bytes = encodeConsoleConfig({
      size: { cols: 0x0102, rows: 0x0304 },
      maxPorts: 0x05060708,
      emergWrite: 0,
    });
    expect(bytes.length).toBe(CONSOLE_CONFIG_SIZE);
    expect(Array.from(bytes)).toEqual([2, 1, 4, 3, 8, 7, 6, 5, 0, 0, 0, 0]);
  });

  it('encodes RESIZE in spec order (cols, rows) or rows first, and decodes back', () => {
    const size = { cols: 200, rows: 50 };
    expect(Array.from(encodeResize(size))).toEqual([200, 0, 50, 0]);
    expect(Array.from(encodeResize(size, 'rows-first'))).toEqual([50, 0, 200, 0]);
    expect(decodeResize(encodeResize(size, 'rows-first'), 'rows-first')).toEqual(size);
    expect(decodeResize(Uint8Array.of(1))).toBeUndefined();
  });

  it('maps queues as 5.3.2 says: port 0, control, then two per port', () => {
    expect(portQueues(0)).toEqual({ receive: 0, transmit: 1 });
    expect(portQueues(1)).toEqual({ receive: 4, transmit: 5 });
    expect(portQueues(30)).toEqual({ receive: 62, transmit: 63 });
    expect(queueRole(2)).toEqual({ kind: 'control', direction: 'receive' });
    expect(queueRole(3)).toEqual({ kind: 'control', direction: 'transmit' });
    for (let port = 0; port < 32; port++) {
      const { receive, transmit } = portQueues(port);
      expect(queueRole(receive)).toEqual({ kind: 'port', port, direction: 'receive' });
      expect(queueRole(transmit)).toEqual({ kind: 'port', port, direction: 'transmit' });
    }
    expect(queueCount(1, false)).toBe(2);
    expect(queueCount(31, true)).toBe(64);
  });
});
