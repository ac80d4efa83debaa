import { activateForTest } from '@xvio/transport/testing';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createConsoleDevice } from './console-device.js';
import { MemoryConsoleHost } from './console-host.js';
import { CONTROL_RECEIVE_QUEUE, CONTROL_TRANSMIT_QUEUE, encodeControl } from './console-wire.js';

const pattern = (length: number, start: number) =>
  Uint8Array.from({ length }, (_, i) => (start + i * 7) & 0xff);
const concat = (chunks: Uint8Array[]) => Buffer.concat(chunks.map((chunk) => Buffer.from(chunk)));

type Step =
  | { kind: 'input'; length: number }
  | { kind: 'buffer'; lengths: number[] }
  | { kind: 'output'; length: number }
  | { kind: 'drain' };

const stepArbitrary: fc.Arbitrary<Step> = fc.oneof(
  fc.record({ kind: fc.constant('input' as const), length: fc.integer({ min: 1, max: 3000 }) }),
  fc.record({
    kind: fc.constant('buffer' as const),
    lengths: fc.array(fc.integer({ min: 1, max: 2000 }), { minLength: 1, maxLength: 4 }),
  }),
  fc.record({ kind: fc.constant('output' as const), length: fc.integer({ min: 0, max: 3000 }) }),
  fc.record({ kind: fc.constant('drain' as const) }),
);

describe('ConsoleDevice properties', () => {
  it('keeps both byte streams whole and in order, with bounded buffering, whatever the interleaving', () => {
    fc.assert(
      fc.property(
        fc.array(stepArbitrary, { minLength: 1, maxLength: 60 }),
        fc.integer({ min: 100, max: 5000 }),
        fc.boolean(),
        (steps, capacity, packed) => {
          const bufferBytes = 4096;
          const host = new MemoryConsoleHost({ capacity });
          const device = createConsoleDevice({ bufferBytes }, { hosts: new Map([[0, host]]) });
          const harness = activateForTest(device, { packed, memorySize: 8 << 20, queueSizes: [64, 64] });
          try {
            const receive = harness.queue(0);
            const transmit = harness.queue(1);
            const placed = new Map<number, { offset: number; length: number }[]>();
            const sentIn: Uint8Array[] = [];
            const gotIn: Uint8Array[] = [];
            const sentOut: Uint8Array[] = [];
            const gotOut: Uint8Array[] = [];
            let counter = 0;
            const collect = () => {
              for (const used of receive.takeUsed()) {
                let left = used.length;
                for (const buffer of placed.get(used.id)!) {
                  const n = Math.min(left, buffer.length);
                  gotIn.push(harness.memory.bytes.slice(buffer.offset, buffer.offset + n));
                  left -= n;
                }
                placed.delete(used.id);
              }
              transmit.takeUsed();
            };
            for (const step of steps) {
              if (step.kind === 'input') {
                const bytes = pattern(step.length, counter++);
                sentIn.push(bytes);
                host.input(bytes);
              } else if (step.kind === 'buffer' && placed.size < 32) {
                const { head, buffers } = receive.addChain(
                  step.lengths.map((length) => ({ writable: true as const, length })),
                );
                placed.set(head, buffers);
                harness.kick(0);
              } else if (step.kind === 'output' && transmit.freeCount > 0) {
                const bytes = pattern(step.length, counter++);
                sentOut.push(bytes);
                transmit.addChain([{ data: bytes }]);
                harness.kick(1);
              } else if (step.kind === 'drain') {
                gotOut.push(host.takeOutput());
              }
              collect();
              const metrics = device.metrics();
              expect(metrics['port0.inboundBuffered']).toBeLessThanOrEqual(2 * bufferBytes);
              expect(host.outputBytes).toBeLessThanOrEqual(capacity + 3000);
            }
            // The guest reads and the host drains until both streams are through.
            for (
              let round = 0;
              round < 1000 && (host.pendingInput > 0 || device.metrics()['port0.inboundBuffered']! > 0);
              round++
            ) {
              const { head, buffers } = receive.addChain([{ writable: true, length: 4096 }]);
              placed.set(head, buffers);
              harness.kick(0);
              collect();
            }
            for (let round = 0; round < 1000 && transmit.freeCount < transmit.size; round++) {
              gotOut.push(host.takeOutput());
              collect();
            }
            gotOut.push(host.takeOutput());
            expect(concat(gotIn).equals(concat(sentIn))).toBe(true);
            expect(concat(gotOut).equals(concat(sentOut))).toBe(true);
            expect(device.metrics()['port0.droppedBytes']).toBe(0);
            expect(harness.needsReset).toBe(false);
          } finally {
            harness.dispose();
          }
        },
      ),
      { numRuns: 80 },
    );
  });

  it('survives any control traffic: never a throw, never NEEDS_RESET, the outbox stays bounded', () => {
    const messageArbitrary = fc.oneof(
      fc.uint8Array({ maxLength: 24 }),
      fc
        .record({
          id: fc.oneof(fc.integer({ min: 0, max: 5 }), fc.constant(0xffff_ffff), fc.nat()),
          event: fc.integer({ min: 0, max: 9 }),
          value: fc.integer({ min: 0, max: 0xffff }),
        })
        .map((message) => encodeControl(message)),
    );
    fc.assert(
      fc.property(fc.array(messageArbitrary, { maxLength: 80 }), fc.boolean(), (messages, postReceive) => {
        const hosts = new Map([
          [0, new MemoryConsoleHost()],
          [1, new MemoryConsoleHost()],
        ]);
        const device = createConsoleDevice(
          { maxPorts: 4, ports: [{ id: 0 }, { id: 1, name: 'one' }] },
          { hosts },
        );
        const harness = activateForTest(device, { memorySize: 16 << 20 });
        try {
          if (postReceive) {
            for (let i = 0; i < 16; i++)
              harness.queue(CONTROL_RECEIVE_QUEUE).addChain([{ writable: true, length: 64 }]);
          }
          const transmit = harness.queue(CONTROL_TRANSMIT_QUEUE);
          for (const message of messages) {
            if (transmit.freeCount === 0) transmit.takeUsed();
            if (transmit.freeCount === 0) break;
            transmit.addChain(message.length > 0 ? [{ data: message }] : [{ writable: true, length: 8 }]);
            expect(() => harness.kick(CONTROL_TRANSMIT_QUEUE)).not.toThrow();
            hosts.get(1)!.setConnected(message.length % 2 === 0);
            hosts.get(0)!.resize({ cols: 80, rows: 24 + (message.length % 5) });
          }
          expect(harness.needsReset).toBe(false);
          expect(device.metrics().controlPending).toBeLessThanOrEqual(8 * 4 + 16);
        } finally {
          harness.dispose();
        }
      }),
      { numRuns: 80 },
    );
  });
});
