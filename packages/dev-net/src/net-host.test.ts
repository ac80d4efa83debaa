import { describe, expect, it } from 'vitest';
import {
  MemoryNetHost,
  type NetEndpoint,
  type NetFrame,
  NO_OFFLOADS,
  NullNetHost,
  type ReceiveResult,
} from './net-host.js';
import { emptyNetHeader } from './net-wire.js';

function endpoint(answers: ReceiveResult[]): NetEndpoint & { got: number[]; resumed: number } {
  const got: number[] = [];
  const state = {
    mac: new Uint8Array(6),
    rxOffloads: NO_OFFLOADS,
    got,
    resumed: 0,
    receive(frame: NetFrame): ReceiveResult {
      const answer = answers.shift() ?? 'delivered';
      if (answer === 'delivered') got.push(frame.length);
      return answer;
    },
    resume() {
      state.resumed++;
    },
  };
  return state;
}

describe('NullNetHost', () => {
  it('takes and counts everything, delivers nothing', () => {
    const host = new NullNetHost();
    const frame = { header: emptyNetHeader(), segments: [new Uint8Array(60)], length: 60 };
    expect(host.send(frame)).toBe('sent');
    expect(host.send(frame)).toBe('sent');
    expect(host.metrics()).toEqual({ null_dropped_frames: 2 });
  });
});

describe('MemoryNetHost', () => {
  it('copies what it is sent (views are only valid during the call)', () => {
    const host = new MemoryNetHost();
    const bytes = new Uint8Array([1, 2, 3, 4]);
    host.send({ header: emptyNetHeader(), segments: [bytes.subarray(0, 2), bytes.subarray(2)], length: 4 });
    bytes.fill(9);
    expect([...host.sent[0]!.data]).toEqual([1, 2, 3, 4]);
  });

  it('holds injected frames while the guest has no buffers, in order, up to its bound', () => {
    const host = new MemoryNetHost(NO_OFFLOADS, 2);
    const guest = endpoint(['no-buffers', 'no-buffers']); // one answer per inject
    host.attach(guest);
    expect(host.inject(new Uint8Array(10))).toBe(true);
    expect(host.inject(new Uint8Array(11))).toBe(true);
    expect(host.inject(new Uint8Array(12))).toBe(false); // bounded: dropped
    expect(host.pendingCount).toBe(2);
    host.rxReady();
    expect(guest.got).toEqual([10, 11]);
    expect(host.pendingCount).toBe(0);
  });

  it('defers while blocked and resumes the device when unblocked', () => {
    const host = new MemoryNetHost();
    const guest = endpoint([]);
    host.attach(guest);
    host.blocked = true;
    expect(host.send({ header: emptyNetHeader(), segments: [new Uint8Array(1)], length: 1 })).toBe('defer');
    host.unblock();
    expect(guest.resumed).toBe(1);
    host.detach();
    expect(host.attached).toBeUndefined();
  });
});
