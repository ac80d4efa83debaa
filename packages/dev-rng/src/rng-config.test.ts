import { describe, expect, it } from 'vitest';
import { parseRngConfig, RngConfigError } from './rng-config.js';

describe('parseRngConfig', () => {
  it('fills defaults: OS source, no rate limit, 64 KiB per request', () => {
    expect(parseRngConfig({})).toEqual({
      name: 'rng0',
      source: { kind: 'os' },
      periodMs: 1000,
      maxBytesPerRequest: 65536,
      queueSize: 256,
    });
  });

  it.each([
    ['os', { kind: 'os' }],
    ['seeded:17', { kind: 'seeded', seed: 17 }],
    ['/dev/hwrng', { kind: 'file', path: '/dev/hwrng', bufferSize: 65536 }],
    ['file:/dev/random', { kind: 'file', path: '/dev/random', bufferSize: 65536 }],
  ])('reads the source shorthand %s', (source, expected) => {
    expect(parseRngConfig({ source }).source).toEqual(expected);
  });

  it.each([
    [{ maxBytes: 0 }, 'maxBytes'],
    [{ queueSize: 100 }, 'queueSize'],
    [{ source: 'seeded:x' }, 'source.seed'],
    [{ source: 'tape' }, 'source'],
    [{ maxBytesPerRequest: 1 << 30 }, 'maxBytesPerRequest'],
    [{ unknownOption: 1 }, '(root)'],
  ])('rejects %j naming %s', (input, field) => {
    let caught: unknown;
    try {
      parseRngConfig(input);
    } catch (error) {
      caught = error;
    }
    expect(RngConfigError.isInstance(caught)).toBe(true);
    expect((caught as Error).message).toContain(field);
  });
});
