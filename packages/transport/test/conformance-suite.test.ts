import { expect } from 'vitest';
// The conformance suite run against a minimal device written here with the core's own
// building blocks (serviceQueue + openChain): it proves the suite and the core agree.
import {
  CORE_FEATURES,
  type DeviceContext,
  openChain,
  serviceQueue,
  type VirtioDevice,
} from '../src/index.js';
import { runConformanceSuite } from '../src/testing/index.js';

class ReverseDevice implements VirtioDevice {
  readonly deviceType = 0;
  readonly name = 'reverse0';
  readonly queueMaxSizes = [64, 32];
  readonly features = CORE_FEATURES;
  readonly configSize = 4;
  private context: DeviceContext | undefined;

  readConfig(offset: number, target: Uint8Array): void {
    target.set(Uint8Array.of(1, 2, 3, 4).subarray(offset, offset + target.length));
  }
  writeConfig(): void {}
  activate(context: DeviceContext): void {
    this.context = context;
  }
  notify(queueIndex: number): void {
    const context = this.context;
    if (!context) return;
    serviceQueue(context, queueIndex, (chain) => {
      const io = openChain(context.memory, chain);
      const input = io.reader.readExact(io.reader.remaining) ?? new Uint8Array();
      io.writer.write(input.reverse());
      return io.close();
    });
  }
  reset(): void {
    this.context = undefined;
  }
}

runConformanceSuite({
  name: 'reverse',
  create: () => new ReverseDevice(),
  exercise: {
    queue: 1,
    request: () => [{ data: Uint8Array.of(1, 2, 3) }, { writable: true, length: 8 }],
    check: (used, buffers, harness) => {
      const out = buffers[1]!;
      expect(used.length).toBe(3);
      expect(Array.from(harness.memory.bytes.subarray(out.offset, out.offset + 3))).toEqual([3, 2, 1]);
    },
  },
});
