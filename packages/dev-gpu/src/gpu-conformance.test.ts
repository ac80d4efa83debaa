import { runConformanceSuite } from '@xvio/transport/testing';
import { expect } from 'vitest';
import { createGpuDevice } from './gpu-device.js';
import { GPU_CONTROL_QUEUE, GpuResponse, HDR_SIZE, RESP_DISPLAY_INFO_SIZE } from './gpu-wire.js';

// GET_DISPLAY_INFO is the one request valid in any state.
runConformanceSuite({
  name: 'dev-gpu',
  create: () => createGpuDevice(),
  activation: { memorySize: 4 << 20 },
  exercise: {
    queue: GPU_CONTROL_QUEUE,
    request: () => {
      const header = new Uint8Array(HDR_SIZE);
      new DataView(header.buffer).setUint32(0, 0x0100, true);
      return [{ data: header }, { writable: true, length: RESP_DISPLAY_INFO_SIZE }];
    },
    check: (used, buffers, harness) => {
      expect(used.length).toBe(RESP_DISPLAY_INFO_SIZE);
      const response = buffers[1]!;
      expect(harness.memory.dataView.getUint32(response.offset, true)).toBe(GpuResponse.OK_DISPLAY_INFO);
    },
  },
});
