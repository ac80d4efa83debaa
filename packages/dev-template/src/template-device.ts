import {
  type ChainResult,
  CORE_FEATURES,
  type DescriptorChain,
  type DeviceContext,
  hasFeature,
  openChain,
  serviceQueue,
  type VirtioDevice,
} from '@xvio/transport';
import { parseTemplateConfig, type TemplateConfig } from './template-config.js';
import type { TemplateHost } from './template-host.js';
import { TemplateMetrics } from './template-metrics.js';
import {
  crc32,
  encodeResponseHeader,
  encodeTemplateConfig,
  RESPONSE_HEADER_SIZE,
  TEMPLATE_CONFIG_SIZE,
  TEMPLATE_DEVICE_ID,
  TEMPLATE_QUEUE_COUNT,
  TEMPLATE_REQUEST_QUEUE,
  TEMPLATE_STATUS_HOST_ERROR,
  TEMPLATE_STATUS_NO_ROOM,
  TEMPLATE_STATUS_OK,
  TEMPLATE_STATUS_TOO_LARGE,
  type TemplateStatus,
  VIRTIO_TEMPLATE_F_CHECKSUM,
} from './template-wire.js';

/**
 * The template device: reads each request's payload, has the host transform it, and
 * writes a header plus the transformed copy back into the same chain.
 *
 * This is the shape every xvio device takes: the queue processing is `serviceQueue` with a
 * per-chain handler; guest buffers are reached only through `openChain`; a bad request is
 * answered and counted, a corrupted ring is reported by the core (NEEDS_RESET), a host
 * failure is answered and counted; nothing is ever thrown out of `notify`.
 */
export class TemplateDevice implements VirtioDevice {
  readonly deviceType = TEMPLATE_DEVICE_ID;
  readonly name: string;
  readonly queueMaxSizes: readonly number[];
  /** Our feature bit plus every ring feature the core implements (indirect, event idx, packed, ...). */
  readonly features = CORE_FEATURES | VIRTIO_TEMPLATE_F_CHECKSUM;
  readonly configSize = TEMPLATE_CONFIG_SIZE;
  readonly stats = new TemplateMetrics();
  private readonly config: TemplateConfig;
  private context: DeviceContext | undefined;
  private checksum = false;

  constructor(
    private readonly host: TemplateHost,
    config: TemplateConfig = parseTemplateConfig(),
  ) {
    this.config = config;
    this.name = config.name;
    this.queueMaxSizes = new Array<number>(TEMPLATE_QUEUE_COUNT).fill(config.queueSize);
  }

  readConfig(offset: number, target: Uint8Array): void {
    target.set(encodeTemplateConfig(this.config.maxRequestSize).subarray(offset, offset + target.length));
  }

  writeConfig(): void {
    // Every field is read-only for the driver.
  }

  activate(context: DeviceContext): void {
    this.context = context;
    this.checksum = hasFeature(context.features, VIRTIO_TEMPLATE_F_CHECKSUM);
  }

  notify(queueIndex: number): void {
    const context = this.context;
    if (!context || queueIndex !== TEMPLATE_REQUEST_QUEUE) return;
    const result = serviceQueue(context, queueIndex, (chain) => this.serve(context, chain));
    this.stats.guestFaults += result.faulted;
  }

  reset(): void {
    // Requests are served synchronously inside `notify`: nothing is in flight to drop.
    this.context = undefined;
    this.checksum = false;
  }

  metrics(): Readonly<Record<string, number>> {
    return this.stats.snapshot();
  }

  /** One request. Returns the bytes written into the chain. */
  private serve(context: DeviceContext, chain: DescriptorChain): ChainResult {
    const io = openChain(context.memory, chain);
    try {
      const payloadLength = chain.readableLength;
      if (chain.writableLength < RESPONSE_HEADER_SIZE) {
        // Not even room for a status: complete with nothing written (a guest fault, counted).
        this.stats.badRequests++;
        return io.close();
      }
      const reply = (status: TemplateStatus, data?: Uint8Array) => {
        io.writer.write(encodeResponseHeader(status, data && this.checksum ? crc32(data) : 0));
        if (data) io.writer.write(data);
        return io.close();
      };
      if (payloadLength > this.config.maxRequestSize) {
        this.stats.badRequests++;
        return reply(TEMPLATE_STATUS_TOO_LARGE);
      }
      if (chain.writableLength - RESPONSE_HEADER_SIZE < payloadLength) {
        this.stats.badRequests++;
        return reply(TEMPLATE_STATUS_NO_ROOM);
      }
      // Copy the guest's bytes first, then work on the copy: the guest may change its
      // buffers while we look at them.
      const input = io.reader.readExact(payloadLength)!;
      const output = new Uint8Array(payloadLength);
      try {
        this.host.transform(input, output);
      } catch {
        this.stats.hostErrors++;
        return reply(TEMPLATE_STATUS_HOST_ERROR);
      }
      this.stats.requests++;
      this.stats.bytesIn += payloadLength;
      this.stats.bytesOut += payloadLength;
      return reply(TEMPLATE_STATUS_OK, output);
    } finally {
      io.close();
    }
  }
}
