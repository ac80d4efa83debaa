import { describe, expect, it } from 'vitest';
import {
  crc32,
  decodeResponseHeader,
  encodeResponseHeader,
  encodeTemplateConfig,
  RESPONSE_CHECKSUM,
  RESPONSE_HEADER_SIZE,
  RESPONSE_STATUS,
  TEMPLATE_STATUS_NO_ROOM,
} from './template-wire.js';

describe('template wire format', () => {
  it('computes the standard CRC-32 check value', () => {
    expect(crc32(new TextEncoder().encode('123456789'))).toBe(0xcbf43926);
    expect(crc32(new Uint8Array())).toBe(0);
  });

  it('lays the response header out little-endian at its named offsets', () => {
    const header = encodeResponseHeader(TEMPLATE_STATUS_NO_ROOM, 0x11223344);
    expect(header.length).toBe(RESPONSE_HEADER_SIZE);
    expect(header[RESPONSE_STATUS]).toBe(TEMPLATE_STATUS_NO_ROOM);
    expect(Array.from(header.subarray(RESPONSE_CHECKSUM))).toEqual([0x44, 0x33, 0x22, 0x11]);
    expect(decodeResponseHeader(header)).toEqual({ status: TEMPLATE_STATUS_NO_ROOM, checksum: 0x11223344 });
    expect(() => decodeResponseHeader(new Uint8Array(4))).toThrow(RangeError);
  });

  it('encodes the configuration space', () => {
    expect(Array.from(encodeTemplateConfig(0x10000))).toEqual([0, 0, 1, 0]);
  });
});
