import { z } from 'zod';

const marker = Symbol.for('xvio.dev-rng.config-error');

/** A configuration that does not validate. `cause` holds zod's issues. */
export class RngConfigError extends Error {
  readonly [marker] = true;
  override readonly name = 'RngConfigError';
  readonly code = 'invalid-config' as const;

  static isInstance(value: unknown): value is RngConfigError {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[marker] === true;
  }
}

const sourceSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('os') }).strict(),
  z
    .object({
      kind: z.literal('file'),
      path: z.string().min(1),
      bufferSize: z
        .number()
        .int()
        .min(64)
        .max(16 * 1024 * 1024)
        .default(64 * 1024),
    })
    .strict(),
  z.object({ kind: z.literal('seeded'), seed: z.number().int() }).strict(),
]);

/**
 * A source as one string, for command lines: `os`, `seeded:<n>`, or a path (`/dev/hwrng`,
 * `file:/dev/hwrng`).
 */
function sourceFromString(value: unknown): unknown {
  if (typeof value !== 'string') return value;
  if (value === 'os') return { kind: 'os' };
  if (value.startsWith('seeded:')) return { kind: 'seeded', seed: Number(value.slice('seeded:'.length)) };
  if (value.startsWith('file:')) return { kind: 'file', path: value.slice('file:'.length) };
  if (value.startsWith('/')) return { kind: 'file', path: value };
  return value;
}

const isPowerOfTwo = (n: number) => n > 0 && (n & (n - 1)) === 0;

export const rngConfigSchema = z
  .object({
    /** Name in logs and metrics. */
    name: z.string().min(1).max(64).default('rng0'),
    source: z.preprocess(sourceFromString, sourceSchema).default({ kind: 'os' }),
    /**
     * Rate limit: at most `maxBytes` per `periodMs` (QEMU's virtio-rng `max-bytes` and
     * `period`). Unset means unlimited.
     */
    maxBytes: z.number().int().positive().optional(),
    periodMs: z.number().int().min(1).max(3_600_000).default(1000),
    /** Most bytes given to one request, however large its buffers (bounds each copy). */
    maxBytesPerRequest: z
      .number()
      .int()
      .min(1)
      .max(16 * 1024 * 1024)
      .default(64 * 1024),
    /** Largest queue the driver may configure (a power of two for split rings, spec 2.7). */
    queueSize: z
      .number()
      .int()
      .min(1)
      .max(32768)
      .refine(isPowerOfTwo, 'queueSize must be a power of two')
      .default(256),
  })
  .strict();

/** The configuration as written by a user (defaults optional). */
export type RngConfigInput = z.input<typeof rngConfigSchema>;
/** The configuration after validation (defaults filled in). */
export type RngConfig = z.output<typeof rngConfigSchema>;
export type RngSourceConfig = RngConfig['source'];

/** Validates once, at the edge. Throws `RngConfigError` naming every bad field. */
export function parseRngConfig(input: unknown): RngConfig {
  const result = rngConfigSchema.safeParse(input ?? {});
  if (!result.success) {
    const detail = result.error.issues.map(
      (issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`,
    );
    throw new RngConfigError(`invalid rng config: ${detail.join('; ')}`, { cause: result.error });
  }
  return result.data;
}
