import { z } from 'zod';
import { DEFAULT_MTU, MIN_MTU, parseMac } from './net-wire.js';

const macSchema = z
  .string()
  .refine((text) => parseMac(text) !== undefined, {
    message: 'mac must look like 52:54:00:12:34:56',
    abort: true,
  })
  .refine((text) => (parseMac(text)![0]! & 1) === 0, 'mac must be a unicast address (group bit clear)');

const portSchema = z.number().int().min(1).max(65_535);

/** Where the device's frames go: one of the host sides. */
export const netHostConfigSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('null') }).strict(),
  z
    .object({
      type: z.literal('switch'),
      /** Devices naming the same switch in one process are joined by it. */
      switch: z.string().min(1).default('default'),
      /** Ingress rate limit of this port, megabits per second. */
      rateLimitMbps: z.number().positive().optional(),
      /** MAC ageing time of the switch (used when this device creates it). */
      ageingSeconds: z.number().positive().default(300),
    })
    .strict(),
  z
    .object({
      type: z.literal('tap'),
      /** Interface name (IFNAMSIZ 16 with the NUL); the kernel picks one when absent. */
      ifname: z
        .string()
        .min(1)
        .max(15)
        .regex(/^[A-Za-z0-9_.-]+$/)
        .optional(),
      /** Network namespace (as `ip netns add` named it) to create the interface in. */
      netns: z
        .string()
        .min(1)
        .max(255)
        .regex(/^[A-Za-z0-9_.-]+$/)
        .refine((name) => name !== '.' && name !== '..', 'netns must name a namespace')
        .optional(),
    })
    .strict(),
  z
    .object({
      type: z.literal('stream'),
      /** `server` listens (QEMU `-netdev stream,server=off` connects to it), `client` connects. */
      mode: z.enum(['server', 'client']),
      /** Unix socket path, or `host` and `port` for TCP. */
      path: z.string().min(1).optional(),
      host: z.string().min(1).default('127.0.0.1'),
      port: portSchema.optional(),
    })
    .strict()
    .refine(
      (value) => (value.path === undefined) !== (value.port === undefined),
      'stream needs either path or port',
    ),
  z
    .object({
      type: z.literal('dgram'),
      localHost: z.string().min(1).default('127.0.0.1'),
      localPort: portSchema,
      remoteHost: z.string().min(1).default('127.0.0.1'),
      remotePort: portSchema,
    })
    .strict(),
]);

/** Configuration of one virtio-net device, validated once at the edge. */
export const netConfigSchema = z
  .object({
    name: z.string().min(1).default('net0'),
    mac: macSchema.default('52:54:00:12:34:56'),
    /** Offered as VIRTIO_NET_F_MTU when given. */
    mtu: z.number().int().min(MIN_MTU).max(65_535).optional(),
    queuePairs: z.number().int().min(1).max(16).default(1),
    queueSize: z
      .number()
      .int()
      .min(2)
      .max(32_768)
      .refine((n) => (n & (n - 1)) === 0, 'queueSize must be a power of two')
      .default(256),
    linkUp: z.boolean().default(true),
    /**
     * Who serves the control queue: this device, or the frontend in front of it. Behind
     * vhost-user, QEMU keeps the control queue and never passes VIRTIO_NET_F_CTRL_VQ on, yet
     * passes features that depend on it (GUEST_ANNOUNCE, MQ): with `frontend` those are
     * accepted as the frontend negotiated them.
     */
    controlQueue: z.enum(['device', 'frontend']).default('device'),
    /** pcap file recording every frame of this port. */
    capture: z.string().min(1).optional(),
    host: netHostConfigSchema.default({ type: 'null' }),
  })
  .strict();

export type NetConfigInput = z.input<typeof netConfigSchema>;
export type NetConfig = z.output<typeof netConfigSchema>;
export type NetHostConfig = z.output<typeof netHostConfigSchema>;

/** Validates a configuration; throws a ZodError naming every problem. */
export function parseNetConfig(input: unknown): NetConfig {
  return netConfigSchema.parse(input);
}

export { DEFAULT_MTU };
