import { VIRTIO_F_VERSION_1 } from '@xvio/transport';
import { activateForTest, runConformanceSuite } from '@xvio/transport/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { parseTemplateConfig } from './template-config.js';
import { TemplateDevice } from './template-device.js';
import { MemoryTemplateHost } from './template-host.js';
import {
  crc32,
  decodeResponseHeader,
  RESPONSE_HEADER_SIZE,
  TEMPLATE_REQUEST_QUEUE,
  TEMPLATE_STATUS_HOST_ERROR,
  TEMPLATE_STATUS_NO_ROOM,
  TEMPLATE_STATUS_OK,
  TEMPLATE_STATUS_TOO_LARGE,
  VIRTIO_TEMPLATE_F_CHECKSUM,
} from './template-wire.js';

const text = (value: string) => new TextEncoder().encode(value);

// The one line every device package runs: the core's conformance suite, split and packed.
runConformanceSuite({
  name: 'template',
  create: () => new TemplateDevice(new MemoryTemplateHost()),
  exercise: {
    queue: TEMPLATE_REQUEST_QUEUE,
    request: () => [{ data: text('Hello') }, { writable: true, length: RESPONSE_HEADER_SIZE + 5 }],
    check: (used, buffers, harness) => {
      expect(used.length).toBe(RESPONSE_HEADER_SIZE + 5);
      const out = buffers[1]!;
      const response = harness.memory.bytes.slice(out.offset, out.offset + used.length);
      expect(decodeResponseHeader(response).status).toBe(TEMPLATE_STATUS_OK);
      expect(new TextDecoder().decode(response.subarray(RESPONSE_HEADER_SIZE))).toBe('hELLO');
    },
  },
});

describe('TemplateDevice', () => {
  const live: { dispose(): void }[] = [];
  afterEach(() => {
    for (const harness of live.splice(0)) harness.dispose();
  });

  function start(host = new MemoryTemplateHost(), options: Parameters<typeof activateForTest>[1] = {}) {
    const device = new TemplateDevice(host, parseTemplateConfig({ maxRequestSize: 64 }));
    const harness = activateForTest(device, options);
    live.push(harness);
    return { device, harness, host };
  }

  async function ask(harness: ReturnType<typeof start>['harness'], payload: Uint8Array, room: number) {
    const { buffers } = harness.request(TEMPLATE_REQUEST_QUEUE, [
      { data: payload },
      { writable: true, length: room },
    ]);
    const [used] = await harness.waitForUsed(TEMPLATE_REQUEST_QUEUE);
    const out = buffers[1]!;
    const bytes = harness.memory.bytes.slice(out.offset, out.offset + used!.length);
    return { length: used!.length, bytes };
  }

  it('answers with the checksum of the transformed payload when the feature is negotiated', async () => {
    const { harness, device } = start();
    const { bytes } = await ask(harness, text('abc'), 32);
    const header = decodeResponseHeader(bytes);
    expect(header.status).toBe(TEMPLATE_STATUS_OK);
    expect(header.checksum).toBe(crc32(text('ABC')));
    expect(device.metrics()).toMatchObject({
      template_requests: 1,
      template_bytes_in: 3,
      template_bytes_out: 3,
    });
  });

  it('writes a zero checksum when the driver did not accept VIRTIO_TEMPLATE_F_CHECKSUM', async () => {
    const { harness } = start(undefined, { withoutFeatures: VIRTIO_TEMPLATE_F_CHECKSUM });
    expect(harness.features & VIRTIO_F_VERSION_1).toBe(VIRTIO_F_VERSION_1);
    const { bytes } = await ask(harness, text('abc'), 32);
    expect(decodeResponseHeader(bytes)).toEqual({ status: TEMPLATE_STATUS_OK, checksum: 0 });
  });

  it('answers bad requests with a status and counts them, without stopping', async () => {
    const { harness, device } = start();
    expect(decodeResponseHeader((await ask(harness, new Uint8Array(65), 128)).bytes).status).toBe(
      TEMPLATE_STATUS_TOO_LARGE,
    );
    expect(
      decodeResponseHeader((await ask(harness, text('abcdef'), RESPONSE_HEADER_SIZE + 2)).bytes).status,
    ).toBe(TEMPLATE_STATUS_NO_ROOM);
    expect((await ask(harness, text('a'), 4)).length).toBe(0);
    expect(device.stats.badRequests).toBe(3);
    expect(harness.needsReset).toBe(false);
    expect(decodeResponseHeader((await ask(harness, text('ok'), 16)).bytes).status).toBe(TEMPLATE_STATUS_OK);
  });

  it('answers a host failure with HOST_ERROR and keeps serving', async () => {
    const host = new MemoryTemplateHost();
    const { harness, device } = start(host);
    host.failNext = new Error('host unavailable');
    expect(decodeResponseHeader((await ask(harness, text('x'), 16)).bytes).status).toBe(
      TEMPLATE_STATUS_HOST_ERROR,
    );
    expect(device.stats.hostErrors).toBe(1);
    expect(decodeResponseHeader((await ask(harness, text('x'), 16)).bytes).status).toBe(TEMPLATE_STATUS_OK);
  });

  it('exposes max_request_size in its configuration space', () => {
    const { harness } = start();
    const config = harness.controller.readConfig(0, 4);
    expect(new DataView(config.buffer).getUint32(0, true)).toBe(64);
  });

  it('ignores kicks on queues it does not have and before activation', () => {
    const device = new TemplateDevice(new MemoryTemplateHost());
    expect(() => device.notify(0)).not.toThrow();
    expect(() => device.notify(7)).not.toThrow();
  });
});
