import { createTestMemory } from '@xvio/grant-pool';
import { describe, expect, it } from 'vitest';
import { openChain } from './chain-io.js';
import type { DescriptorChain } from './descriptor-chain.js';
import { type ChainResult, serviceQueue } from './queue-service.js';
import { SplitQueue } from './split-queue.js';
import { MockSplitQueue } from './testing/mock-split-queue.js';
import type { DeviceContext } from './virtio-device.js';

function setup() {
  const memory = createTestMemory(1 << 20, { readOnly: [{ offset: 0x80000, length: 0x1000 }] });
  const driver = new MockSplitQueue(memory, { size: 8 });
  const queue = new SplitQueue(memory, driver.config);
  const interrupts: number[] = [];
  const failures: unknown[] = [];
  const abort = new AbortController();
  const context: DeviceContext = {
    memory,
    features: 0n,
    queues: [queue],
    interrupt: (index) => interrupts.push(index),
    configChanged: () => {},
    fail: (error) => failures.push(error),
    signal: abort.signal,
  };
  return { memory, driver, queue, context, interrupts, failures, abort };
}

const fill = (chain: DescriptorChain, memory: ReturnType<typeof setup>['memory']): ChainResult => {
  const io = openChain(memory, chain);
  io.writer.write(new Uint8Array(io.writer.remaining).fill(7));
  return io.close();
};

describe('serviceQueue', () => {
  it('serves every chain, publishes once and interrupts once', () => {
    const { memory, driver, context, interrupts } = setup();
    for (let i = 0; i < 3; i++) driver.addChain([{ writable: true, length: 4 }]);
    const result = serviceQueue(context, 0, (chain) => fill(chain, memory));
    expect(result).toEqual({ completed: 3, faulted: 0, deferred: false });
    expect(driver.takeUsed().map((used) => used.length)).toEqual([4, 4, 4]);
    expect(interrupts).toEqual([0]);
  });

  it('gives a deferred chain back and serves it on the next call', () => {
    const { memory, driver, context } = setup();
    const { head } = driver.addChain([{ writable: true, length: 4 }]);
    expect(serviceQueue(context, 0, () => 'defer')).toEqual({ completed: 0, faulted: 0, deferred: true });
    expect(driver.takeUsed()).toEqual([]);
    serviceQueue(context, 0, (chain) => fill(chain, memory));
    expect(driver.takeUsed()).toEqual([{ id: head, length: 4 }]);
  });

  it('completes a chain with length 0 on a guest fault that is not ring corruption', () => {
    const { memory, driver, context, failures } = setup();
    // A writable descriptor over memory the device may only read (a read-only grant).
    const index = 7;
    driver.writeDescriptor(index, { address: memory.address(0x80000), length: 8, flags: 2, next: 0 });
    driver.publish(index);
    const result = serviceQueue(context, 0, (chain) => fill(chain, memory));
    expect(result.faulted).toBe(1);
    expect(driver.takeUsed()).toEqual([{ id: index, length: 0 }]);
    expect(failures).toEqual([]);
  });

  it('reports a buffer outside guest memory as corruption, never throws', () => {
    const { memory, driver, context, failures } = setup();
    driver.writeDescriptor(7, { address: 1n << 40n, length: 8, flags: 2, next: 0 });
    driver.publish(7);
    expect(() => serviceQueue(context, 0, (chain) => fill(chain, memory))).not.toThrow();
    expect(failures).toHaveLength(1);
  });

  it('rethrows host failures (device bugs) instead of hiding them', () => {
    const { driver, context } = setup();
    driver.addChain([{ writable: true, length: 4 }]);
    expect(() =>
      serviceQueue(context, 0, () => {
        throw new TypeError('device bug');
      }),
    ).toThrow('device bug');
  });

  it('stops at the budget, leaves the rest available, and does nothing once aborted', () => {
    const { memory, driver, context, queue, abort } = setup();
    for (let i = 0; i < 4; i++) driver.addChain([{ writable: true, length: 1 }]);
    expect(serviceQueue(context, 0, (chain) => fill(chain, memory), 3).completed).toBe(3);
    expect(queue.hasAvailable()).toBe(true);
    abort.abort();
    expect(serviceQueue(context, 0, (chain) => fill(chain, memory)).completed).toBe(0);
  });

  it('recycles completed chains (the next pop reuses the object)', () => {
    const { memory, driver, context, queue } = setup();
    driver.addChain([{ writable: true, length: 1 }]);
    let seen: DescriptorChain | undefined;
    serviceQueue(context, 0, (chain) => {
      seen = chain;
      return fill(chain, memory);
    });
    driver.addChain([{ writable: true, length: 2 }]);
    const next = queue.pop();
    expect(next).toBe(seen);
    expect(next!.writableLength).toBe(2);
  });
});
