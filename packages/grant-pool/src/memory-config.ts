import type { ForeignMemory, GrantTables } from '@xvio/xen';
import { z } from 'zod';
import { ForeignMappingMemory } from './foreign-mapping-memory.js';
import { GrantCopyMemory, MAX_COPY_BATCH } from './grant-copy-memory.js';
import { GrantMapMemory, type XenGuestMemory } from './grant-map-memory.js';
import { PersistentPoolMemory } from './persistent-pool-memory.js';

const domid = z
  .number()
  .int()
  .min(0)
  .max(0x7fef)
  .describe('the frontend domain (DOMID_FIRST_RESERVED is 0x7ff0)');
const maxRequestPages = z
  .number()
  .int()
  .min(1)
  .max(1 << 20)
  .default(4096);
const grantRef = z.number().int().min(0).max(0xffff_ffff);

/** Memory strategy of one device, validated once at the edge. */
export const guestMemoryConfigSchema = z.discriminatedUnion('strategy', [
  z
    .object({
      strategy: z.literal('foreign'),
      domid,
      options: z
        .object({
          chunkPages: z.number().int().min(1).max(65536).default(256),
          maxChunks: z.number().int().min(1).max(65536).default(64),
          guestMemoryBytes: z.number().int().min(4096).multipleOf(4096).optional(),
          maxRequestPages,
        })
        .strict()
        .prefault({}),
    })
    .strict(),
  z
    .object({
      strategy: z.literal('grant-map'),
      domid,
      options: z.object({ maxRequestPages }).strict().prefault({}),
    })
    .strict(),
  z
    .object({
      strategy: z.literal('grant-copy'),
      domid,
      options: z
        .object({
          batchSegments: z.number().int().min(1).max(MAX_COPY_BATCH).default(MAX_COPY_BATCH),
          bounceCacheBytes: z
            .number()
            .int()
            .min(0)
            .default(8 * 1024 * 1024),
          maxRequestPages,
        })
        .strict()
        .prefault({}),
    })
    .strict(),
  z
    .object({
      strategy: z.literal('persistent-pool'),
      domid,
      options: z
        .object({
          maxPersistentPages: z
            .number()
            .int()
            .min(1)
            .max(1 << 20)
            .default(1056),
          poolRefs: z
            .array(grantRef)
            .max(1 << 20)
            .optional(),
          maxRequestPages,
        })
        .strict()
        .prefault({}),
    })
    .strict(),
]);

/** What a configuration file holds (options may be left out). */
export type GuestMemoryConfigInput = z.input<typeof guestMemoryConfigSchema>;
/** A validated configuration, defaults filled in. */
export type GuestMemoryConfig = z.output<typeof guestMemoryConfigSchema>;
export type GuestMemoryStrategy = GuestMemoryConfig['strategy'];

/** The hypervisor services a strategy uses (a `XenServices` fits). */
export interface GuestMemoryServices {
  readonly grants: GrantTables;
  readonly foreignMemory: ForeignMemory;
}

/** Validates a configuration; throws zod's error naming the bad field. */
export function parseGuestMemoryConfig(config: unknown): GuestMemoryConfig {
  return guestMemoryConfigSchema.parse(config);
}

/**
 * Creates one device's guest memory from its configuration: `foreign` (guest-physical
 * addresses, grant_usage=0), `grant-map` (stock Linux grant DMA), `grant-copy`, or
 * `persistent-pool` (a cooperating frontend). Counters are on `memory.counters`.
 */
export function createGuestMemory(
  config: GuestMemoryConfigInput | GuestMemoryConfig,
  services: GuestMemoryServices,
): XenGuestMemory {
  const parsed = parseGuestMemoryConfig(config);
  switch (parsed.strategy) {
    case 'foreign':
      return new ForeignMappingMemory({
        foreignMemory: services.foreignMemory,
        domid: parsed.domid,
        ...parsed.options,
      });
    case 'grant-map':
      return new GrantMapMemory({ grants: services.grants, domid: parsed.domid, ...parsed.options });
    case 'grant-copy':
      return new GrantCopyMemory({ grants: services.grants, domid: parsed.domid, ...parsed.options });
    case 'persistent-pool':
      return new PersistentPoolMemory({ grants: services.grants, domid: parsed.domid, ...parsed.options });
  }
}
