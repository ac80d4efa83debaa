import { z } from 'zod';
import { VIRTIO_GPU_MAX_SCANOUTS } from './gpu-wire.js';

const marker = Symbol.for('xvio.dev-gpu.config-error');

/** A configuration that does not validate. The message names the field; `cause` holds zod's issues. */
export class GpuConfigError extends Error {
  readonly [marker] = true;
  override readonly name = 'GpuConfigError';
  readonly code = 'invalid-config' as const;

  static isInstance(value: unknown): value is GpuConfigError {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[marker] === true;
  }
}

const isPowerOfTwo = (n: number) => n > 0 && (n & (n - 1)) === 0;

const scanoutSchema = z
  .object({
    width: z.number().int().min(16).max(4095),
    height: z.number().int().min(16).max(4095),
    enabled: z.boolean().default(true),
  })
  .strict();

export const gpuConfigSchema = z
  .object({
    /** Name in logs and metrics. */
    name: z.string().min(1).max(64).default('gpu0'),
    /** Displays offered to the guest (GET_DISPLAY_INFO), 1 to 16. */
    scanouts: z
      .array(scanoutSchema)
      .min(1)
      .max(VIRTIO_GPU_MAX_SCANOUTS)
      .default([{ width: 1024, height: 768, enabled: true }]),
    /** Offer VIRTIO_GPU_F_EDID and answer GET_EDID. */
    edid: z.boolean().default(true),
    /** Most resources the guest may hold at once. */
    maxResources: z.number().int().min(1).max(65536).default(1024),
    /** Most bytes of host memory all resources together may take (the guest's own pixels). */
    maxResourceMemory: z
      .number()
      .int()
      .min(64 * 64 * 4)
      .max(4 * 1024 * 1024 * 1024)
      .default(256 * 1024 * 1024),
    /** Most backing entries one RESOURCE_ATTACH_BACKING may carry. */
    maxBackingEntries: z
      .number()
      .int()
      .min(1)
      .max(1 << 20)
      .default(16384),
    /** Largest queue the driver may configure (a power of two, spec 2.7). */
    queueSize: z
      .number()
      .int()
      .min(1)
      .max(32768)
      .refine(isPowerOfTwo, 'queueSize must be a power of two')
      .default(256),
  })
  .strict();

export type GpuConfigInput = z.input<typeof gpuConfigSchema>;
export type GpuConfig = z.output<typeof gpuConfigSchema>;

/** Validates a configuration once, at the edge. Throws `GpuConfigError` naming every bad field. */
export function parseGpuConfig(input: unknown): GpuConfig {
  const result = gpuConfigSchema.safeParse(input ?? {});
  if (result.success) return result.data;
  const details = result.error.issues
    .map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`)
    .join('; ');
  throw new GpuConfigError(`invalid gpu config: ${details}`, { cause: result.error.issues });
}
