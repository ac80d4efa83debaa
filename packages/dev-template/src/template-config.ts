import { z } from 'zod';

/**
 * The template device's options, validated once at the edge (the CLI's config file or
 * flags); the device itself trusts a parsed `TemplateConfig`.
 */
export const templateConfigSchema = z
  .object({
    /** Name for logs and metrics. */
    name: z.string().min(1).max(64).default('template0'),
    /** Largest queue the driver may choose (split rings need a power of two, spec 2.7). */
    queueSize: z
      .number()
      .int()
      .min(1)
      .max(32768)
      .refine((n) => (n & (n - 1)) === 0, 'queueSize must be a power of two')
      .default(256),
    /** Largest payload served; larger requests are answered TEMPLATE_STATUS_TOO_LARGE. */
    maxRequestSize: z
      .number()
      .int()
      .min(1)
      .max(1 << 20)
      .default(64 << 10),
    /** Byte the in-memory host XORs payloads with. */
    key: z.number().int().min(0).max(255).default(0x20),
  })
  .strict();

export type TemplateConfig = z.infer<typeof templateConfigSchema>;
export type TemplateConfigInput = z.input<typeof templateConfigSchema>;

/** Parses and validates options; throws zod's `ZodError` naming every broken field. */
export function parseTemplateConfig(input: unknown = {}): TemplateConfig {
  return templateConfigSchema.parse(input);
}
