import { describe, expect, it } from 'vitest';
import {
  parseXenbusState,
  XENBUS_STATE_CONNECTED,
  XENBUS_STATE_UNKNOWN,
  xenbusStateName,
} from './xenbus-state.js';
import { formatFeatures, parseAddress, parseBoundedInt, parseFeatures } from './xenbus-wire.js';

describe('virtio-xenbus xenstore values', () => {
  it('parses features as hex up to 128 bits and nothing else', () => {
    const versionAndPlatform = (1n << 32n) | (1n << 33n);
    expect(parseFeatures(formatFeatures(versionAndPlatform))).toBe(versionAndPlatform);
    expect(parseFeatures('0x1')).toBe(1n);
    expect(parseFeatures('f'.repeat(32))).toBe((1n << 128n) - 1n);
    expect(parseFeatures('f'.repeat(33))).toBeUndefined();
    expect(parseFeatures('not hex')).toBeUndefined();
    expect(parseFeatures(undefined)).toBeUndefined();
  });

  it('parses 64-bit ring addresses and bounded decimals', () => {
    expect(parseAddress('0x8000000000012000')).toBe(0x8000_0000_0001_2000n);
    expect(parseAddress('12000')).toBeUndefined();
    expect(parseAddress('0x1ffffffffffffffff')).toBeUndefined();
    expect(parseBoundedInt('256', 32768)).toBe(256);
    expect(parseBoundedInt('65536', 32768)).toBeUndefined();
    expect(parseBoundedInt('-1', 32768)).toBeUndefined();
  });

  it('reads a torn or hostile state as Unknown', () => {
    expect(parseXenbusState('4')).toBe(XENBUS_STATE_CONNECTED);
    expect(parseXenbusState('9')).toBe(XENBUS_STATE_UNKNOWN);
    expect(parseXenbusState('4x')).toBe(XENBUS_STATE_UNKNOWN);
    expect(xenbusStateName(2)).toBe('InitWait');
  });
});
