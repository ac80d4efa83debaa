import { z } from 'zod';

const marker = Symbol.for('xvio.dev-console.config-error');

/** A configuration that does not validate. `cause` holds zod's issues. */
export class ConsoleConfigError extends Error {
  readonly [marker] = true;
  override readonly name = 'ConsoleConfigError';
  readonly code = 'invalid-config' as const;

  static isInstance(value: unknown): value is ConsoleConfigError {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[marker] === true;
  }
}

const sizeSchema = z
  .object({ cols: z.number().int().min(1).max(0xffff), rows: z.number().int().min(1).max(0xffff) })
  .strict();

export const consoleHostSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('null') }).strict(),
  z.object({ kind: z.literal('memory') }).strict(),
  z.object({ kind: z.literal('stdio'), raw: z.boolean().default(true) }).strict(),
  z
    .object({
      kind: z.literal('pty'),
      raw: z.boolean().default(true),
      holdSlave: z.boolean().default(true),
      size: sizeSchema.optional(),
      /** How often to look for window size changes made on the terminal (0: never). */
      sizePollMs: z.number().int().min(0).max(60_000).default(1000),
    })
    .strict(),
  z.object({ kind: z.literal('unix'), path: z.string().min(1).max(107) }).strict(),
  z
    .object({
      kind: z.literal('tcp'),
      // Loopback only: the console is a root shell on the guest.
      host: z.enum(['127.0.0.1', '::1']).default('127.0.0.1'),
      port: z.number().int().min(0).max(65535),
    })
    .strict(),
  z.object({ kind: z.literal('file'), path: z.string().min(1) }).strict(),
]);

/**
 * A host as one string, for command lines: `null`, `memory`, `stdio`, `pty`, `unix:<path>`,
 * `tcp:<port>`, `tcp:127.0.0.1:<port>`, `file:<path>`.
 */
function hostFromString(value: unknown): unknown {
  if (typeof value !== 'string') return value;
  if (value === 'null' || value === 'memory' || value === 'stdio' || value === 'pty') return { kind: value };
  if (value.startsWith('unix:')) return { kind: 'unix', path: value.slice('unix:'.length) };
  if (value.startsWith('file:')) return { kind: 'file', path: value.slice('file:'.length) };
  if (value.startsWith('tcp:')) {
    const rest = value.slice('tcp:'.length);
    const colon = rest.lastIndexOf(':');
    const host = colon >= 0 ? rest.slice(0, colon).replace(/^\[|\]$/g, '') : undefined;
    const port = Number(colon >= 0 ? rest.slice(colon + 1) : rest);
    return host === undefined ? { kind: 'tcp', port } : { kind: 'tcp', host, port };
  }
  return value;
}

/** Port names travel in PORT_NAME (spec 5.3.6.2) and name /dev/virtio-ports/<name> in Linux guests. */
const portNameSchema = z
  .string()
  .min(1)
  .max(127)
  .regex(/^[A-Za-z0-9._-]+$/, 'port names use letters, digits, dot, dash and underscore');

export const consolePortSchema = z
  .object({
    /** Port number; by default the next free one in order. */
    id: z.number().int().min(0).max(1023).optional(),
    name: portNameSchema.optional(),
    /** Announce it as a console (hvc) port; defaults to true for port 0. */
    console: z.boolean().optional(),
    host: z.preprocess(hostFromString, consoleHostSchema).default({ kind: 'null' }),
    /** Also append guest output to this file. */
    log: z.string().min(1).optional(),
  })
  .strict();

const isPowerOfTwo = (n: number) => n > 0 && (n & (n - 1)) === 0;

export const consoleConfigSchema = z
  .object({
    name: z.string().min(1).max(64).default('console0'),
    /** Offer VIRTIO_CONSOLE_F_MULTIPORT. Default: when more than one port is configured. */
    multiport: z.boolean().optional(),
    /** max_nr_ports; room for hot-added ports. Default: ports configured (at least 8 with multiport). */
    maxPorts: z.number().int().min(1).max(1023).optional(),
    /** Offer VIRTIO_CONSOLE_F_EMERG_WRITE. */
    emergencyWrite: z.boolean().default(true),
    /** Offer VIRTIO_CONSOLE_F_SIZE: `host` follows the host's terminal, a fixed size, or `off`. */
    size: z.union([z.literal('host'), z.literal('off'), sizeSchema]).default('host'),
    /** RESIZE payload field order: the spec's (cols, rows) or rows first for Linux before 2025. */
    resizeOrder: z.enum(['spec', 'rows-first']).default('spec'),
    queueSize: z
      .number()
      .int()
      .min(1)
      .max(32768)
      .refine(isPowerOfTwo, 'queueSize must be a power of two')
      .default(256),
    /** Host input buffered per port while the guest has no receive buffers; the host is paused beyond it. */
    bufferBytes: z
      .number()
      .int()
      .min(1024)
      .max(64 * 1024 * 1024)
      .default(64 * 1024),
    /** Largest guest transmit chain accepted; a longer one is a bad request (dropped, counted). */
    maxChainBytes: z
      .number()
      .int()
      .min(4096)
      .max(64 * 1024 * 1024)
      .default(1024 * 1024),
    ports: z
      .array(consolePortSchema)
      .max(1024)
      .default([{ console: true, host: { kind: 'null' } }]),
  })
  .strict();

export type ConsoleConfigInput = z.input<typeof consoleConfigSchema>;
export type ConsoleHostConfig = z.output<typeof consoleHostSchema>;
export type ConsolePortInput = z.input<typeof consolePortSchema>;

/** A port after validation: id assigned, console flag decided. */
export interface ConsolePortConfig {
  id: number;
  name: string | undefined;
  console: boolean;
  host: ConsoleHostConfig;
  log: string | undefined;
}

export interface ConsoleConfig {
  name: string;
  multiport: boolean;
  maxPorts: number;
  emergencyWrite: boolean;
  size: 'host' | 'off' | { cols: number; rows: number };
  resizeOrder: 'spec' | 'rows-first';
  queueSize: number;
  bufferBytes: number;
  maxChainBytes: number;
  ports: ConsolePortConfig[];
}

function fail(detail: string[], cause?: unknown): never {
  throw new ConsoleConfigError(`invalid console config: ${detail.join('; ')}`, { cause });
}

/** Validates a port alone (for hot-add). */
export function parseConsolePort(input: unknown, id: number): ConsolePortConfig {
  const result = consolePortSchema.safeParse(input ?? {});
  if (!result.success) {
    fail(
      result.error.issues.map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`),
      result.error,
    );
  }
  const port = result.data;
  return {
    id: port.id ?? id,
    name: port.name,
    console: port.console ?? (port.id ?? id) === 0,
    host: port.host,
    log: port.log,
  };
}

/** Validates once, at the edge: ids unique and below maxPorts, one port without MULTIPORT. */
export function parseConsoleConfig(input: unknown): ConsoleConfig {
  const result = consoleConfigSchema.safeParse(input ?? {});
  if (!result.success) {
    fail(
      result.error.issues.map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`),
      result.error,
    );
  }
  const raw = result.data;
  const ports: ConsolePortConfig[] = [];
  const used = new Set<number>();
  let next = 0;
  for (const port of raw.ports) {
    while (port.id === undefined && used.has(next)) next++;
    const id = port.id ?? next;
    if (used.has(id)) fail([`ports: port id ${id} is used twice`]);
    used.add(id);
    ports.push({ id, name: port.name, console: port.console ?? id === 0, host: port.host, log: port.log });
  }
  const names = ports.flatMap((port) => (port.name ? [port.name] : []));
  if (new Set(names).size !== names.length) fail(['ports: port names must be unique']);
  const multiport = raw.multiport ?? ports.length > 1;
  const highestId = ports.reduce((max, port) => Math.max(max, port.id), -1);
  const maxPorts = raw.maxPorts ?? (multiport ? Math.max(8, highestId + 1) : 1);
  if (!multiport) {
    if (ports.length !== 1 || ports[0]!.id !== 0)
      fail(['ports: without multiport there is exactly one port, id 0']);
    if (maxPorts !== 1) fail(['maxPorts: without multiport there is one port']);
  }
  if (highestId >= maxPorts) fail([`ports: port id ${highestId} is not below maxPorts ${maxPorts}`]);
  return { ...raw, multiport, maxPorts, ports };
}
