import { describe, expect, it } from 'vitest';
import { MemoryTemplateHost } from './template-host.js';

describe('MemoryTemplateHost', () => {
  it('XORs every byte with its key', () => {
    const host = new MemoryTemplateHost(0xff);
    const output = new Uint8Array(3);
    host.transform(Uint8Array.of(0, 1, 0xff), output);
    expect(Array.from(output)).toEqual([0xff, 0xfe, 0]);
  });

  it('keeps a bounded history', () => {
    const host = new MemoryTemplateHost(0x20, 2);
    for (let i = 0; i < 5; i++) host.transform(Uint8Array.of(i), new Uint8Array(1));
    expect(host.history.map((b) => b[0])).toEqual([3, 4]);
  });

  it('fails once on demand', () => {
    const host = new MemoryTemplateHost();
    host.failNext = new Error('boom');
    expect(() => host.transform(Uint8Array.of(1), new Uint8Array(1))).toThrow('boom');
    expect(() => host.transform(Uint8Array.of(1), new Uint8Array(1))).not.toThrow();
  });

  it('rejects a key that is not a byte', () => {
    expect(() => new MemoryTemplateHost(256)).toThrow(RangeError);
  });
});
