import type { FenceOrder } from './guest-memory.js';

// Atomics operations are full barriers for V8's compiler and, on x86, `Atomics.store` is a
// locked instruction (mfence semantics): enough for the one store-load ordering virtio needs
// (publish our event index, then re-read the other side's index: spec 2.7.10).
const scratch = new Int32Array(new SharedArrayBuffer(8));

export function fence(order: FenceOrder): void {
  if (order === 'seq-cst') {
    Atomics.store(scratch, 0, 0);
  } else {
    Atomics.load(scratch, 0);
  }
}
