import { readFile } from 'node:fs/promises';
import { dirname, extname, resolve } from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { CliError, describeError } from './cli-errors.js';
import { formatIssues } from './config-errors.js';
import { DEVICE_NAMES, type DeviceName } from './device-registry.js';
import { parseXlVirtioSpec, readXlDomain, type XlVirtioSpec } from './xl-config.js';

export const XEN_MODES = ['native', 'sim'] as const;
export type XenMode = (typeof XEN_MODES)[number];
export const TRANSPORTS = ['mmio', 'pci', 'xenbus'] as const;
export type TransportName = (typeof TRANSPORTS)[number];
export const MEMORY_STRATEGIES = ['foreign', 'grant-map', 'grant-copy', 'persistent-pool'] as const;
export type MemoryStrategy = (typeof MEMORY_STRATEGIES)[number];

/** Domain IDs at and above DOMID_FIRST_RESERVED (0x7ff0, xen/include/public/xen.h) are not guests. */
const DOMID_FIRST_RESERVED = 0x7ff0;

const domid = z
  .number()
  .int()
  .min(0)
  .max(DOMID_FIRST_RESERVED - 1);

const deviceSchema = z.strictObject({
  type: z.enum(DEVICE_NAMES),
  devid: z.number().int().min(0).max(255).optional(),
  transport: z.enum(TRANSPORTS).optional(),
  memory: z.enum(MEMORY_STRATEGIES).optional(),
  /** Passed to the device package, which validates it with its own schema. */
  options: z.record(z.string(), z.unknown()).optional(),
});

const domainSchema = z.strictObject({
  domid: domid.min(1),
  name: z.string().min(1).optional(),
  /** An xl domain configuration whose `virtio = [...]` list is read. Relative to this file. */
  xl_config: z.string().min(1).optional(),
  /** xl.cfg VIRTIO_DEVICE_STRINGs, verbatim. */
  virtio: z.array(z.string().min(1)).optional(),
  devices: z.array(deviceSchema).optional(),
});

/** The run configuration file, TOML or YAML, as users write it (snake_case keys). */
export const runConfigSchema = z.strictObject({
  xen: z.enum(XEN_MODES),
  backend_domid: domid.optional(),
  metrics: z.strictObject({ port: z.number().int().min(1).max(65535) }).optional(),
  xenstored: z.strictObject({ socket_path: z.string().min(1) }).optional(),
  /**
   * `libxl`: also serve every virtio device libxl configures with this backend (xl.cfg
   * `virtio = [...]` lines of any guest), found under `backend/virtio` and watched.
   */
  discover: z.enum(['libxl']).optional(),
  domains: z.array(domainSchema).default([]),
});

export type RunConfigInput = z.infer<typeof runConfigSchema>;

export interface DevicePlan {
  readonly device: DeviceName;
  readonly devid: number;
  readonly transport: TransportName;
  readonly memory: MemoryStrategy;
  readonly options: Readonly<Record<string, unknown>>;
  /** Where the entry came from: `devices[0]`, `virtio[1]`, `xl_config virtio[0]`. */
  readonly source: string;
}

export interface DomainPlan {
  readonly domid: number;
  readonly name: string | undefined;
  readonly devices: readonly DevicePlan[];
}

/** A validated configuration: every default applied, every device placed. */
export interface RunPlan {
  readonly xen: XenMode;
  readonly backendDomid: number;
  readonly metricsPort: number | undefined;
  readonly xenstoredSocket: string | undefined;
  readonly domains: readonly DomainPlan[];
  /** xl entries meant for another backend domain: not served here, reported. */
  readonly skipped: readonly string[];
  /** Serve the devices libxl writes under `backend/virtio` as they appear. */
  readonly discoverLibxl: boolean;
}

/**
 * libxl's rule (xl.cfg grant_usage): grants unless the backend is dom0. A dom0 backend
 * without grants maps guest memory by frame number (foreign mapping).
 */
export function defaultMemory(backendDomid: number): MemoryStrategy {
  return backendDomid === 0 ? 'foreign' : 'grant-map';
}

function fromXl(spec: XlVirtioSpec, backendDomid: number, devid: number, source: string): DevicePlan {
  const memory: MemoryStrategy =
    spec.grantUsage === undefined ? defaultMemory(backendDomid) : spec.grantUsage ? 'grant-map' : 'foreign';
  return { device: spec.device, devid, transport: spec.transport, memory, options: {}, source };
}

function configError(file: string, lines: readonly string[]): CliError {
  return new CliError('invalid-config', `invalid configuration ${file}:\n  ${lines.join('\n  ')}`);
}

/** Validates a parsed configuration once and turns it into a plan; xl files are read relative to `baseDir`. */
export async function planRun(data: unknown, file: string, baseDir: string): Promise<RunPlan> {
  const parsed = runConfigSchema.safeParse(data, { reportInput: true });
  if (!parsed.success) throw configError(file, formatIssues(parsed.error.issues, runConfigSchema));
  const config = parsed.data;
  const backendDomid = config.backend_domid ?? 0;
  const errors: string[] = [];
  const skipped: string[] = [];
  const domains: DomainPlan[] = [];
  const seenDomids = new Set<number>();
  for (const [index, domain] of config.domains.entries()) {
    const where = `domains[${index}]`;
    if (seenDomids.has(domain.domid))
      errors.push(`${where}.domid: ${domain.domid} is used by an earlier domain`);
    seenDomids.add(domain.domid);
    const devices: DevicePlan[] = [];
    const used = new Set<number>();
    const nextDevid = () => {
      let devid = 0;
      while (used.has(devid)) devid++;
      used.add(devid);
      return devid;
    };
    const xlEntries: { spec: string; source: string }[] = [];
    let name = domain.name;
    if (domain.xl_config !== undefined) {
      const path = resolve(baseDir, domain.xl_config);
      let text: string;
      try {
        text = await readFile(path, 'utf8');
      } catch (error) {
        errors.push(`${where}.xl_config: cannot read ${domain.xl_config} (${describeError(error)})`);
        text = '';
      }
      try {
        const xl = readXlDomain(text, domain.xl_config);
        name ??= xl.name;
        for (const [i, spec] of xl.virtio.entries()) {
          xlEntries.push({ spec: toSpecText(spec), source: `${where}.xl_config virtio[${i}]` });
        }
      } catch (error) {
        errors.push(`${where}.xl_config: ${describeError(error)}`);
      }
    }
    for (const [i, spec] of (domain.virtio ?? []).entries())
      xlEntries.push({ spec, source: `${where}.virtio[${i}]` });
    for (const entry of domain.devices ?? []) {
      if (entry.devid !== undefined) {
        if (used.has(entry.devid)) errors.push(`${where}.devices: devid ${entry.devid} is used twice`);
        used.add(entry.devid);
      }
    }
    for (const entry of xlEntries) {
      let spec: XlVirtioSpec;
      try {
        spec = parseXlVirtioSpec(entry.spec);
      } catch (error) {
        errors.push(`${entry.source}: ${describeError(error)}`);
        continue;
      }
      if (spec.backend !== String(backendDomid)) {
        skipped.push(`${entry.source}: backend=${spec.backend} is not this backend (domain ${backendDomid})`);
        continue;
      }
      devices.push(fromXl(spec, backendDomid, nextDevid(), entry.source));
    }
    for (const [i, entry] of (domain.devices ?? []).entries()) {
      devices.push({
        device: entry.type,
        devid: entry.devid ?? nextDevid(),
        transport: entry.transport ?? 'mmio',
        memory: entry.memory ?? defaultMemory(backendDomid),
        options: entry.options ?? {},
        source: `${where}.devices[${i}]`,
      });
    }
    if (devices.length === 0 && xlEntries.length === 0) {
      errors.push(`${where}: no devices (add devices, virtio or xl_config)`);
    }
    devices.sort((a, b) => a.devid - b.devid);
    domains.push({ domid: domain.domid, name, devices });
  }
  if (config.domains.length === 0 && config.discover === undefined) {
    errors.push('domains: needs at least 1 entries (or discover = "libxl")');
  }
  if (errors.length > 0) throw configError(file, errors);
  return {
    xen: config.xen,
    backendDomid,
    metricsPort: config.metrics?.port,
    xenstoredSocket: config.xenstored?.socket_path,
    domains,
    skipped,
    discoverLibxl: config.discover === 'libxl',
  };
}

/** xl.cfg entries read from a file were already parsed; re-serialise them for one code path. */
function toSpecText(spec: XlVirtioSpec): string {
  const parts = [`type=${spec.type}`, `transport=${spec.transport}`, `backend=${spec.backend}`];
  if (spec.grantUsage !== undefined) parts.push(`grant_usage=${spec.grantUsage ? 1 : 0}`);
  return parts.join(',');
}

export type ConfigFormat = 'toml' | 'yaml' | 'xl';

export function configFormat(file: string): ConfigFormat {
  const extension = extname(file).toLowerCase();
  if (extension === '.toml') return 'toml';
  if (extension === '.yaml' || extension === '.yml') return 'yaml';
  if (extension === '.cfg') return 'xl';
  throw new CliError(
    'invalid-arguments',
    `--config ${file}: unknown format '${extension || '(none)'}' (allowed: .toml, .yaml, .yml, .cfg for an xl domain configuration)`,
  );
}

export interface XlRunOptions {
  /** Required for an xl.cfg: the file names no hypervisor mode. */
  xen?: XenMode;
  /** Required for an xl.cfg: xl assigns the domain ID only at `xl create`. */
  domid?: number;
  backendDomid?: number;
}

/** Parses text in the given format into plain data (syntax errors name the line). */
export function parseConfigText(text: string, format: 'toml' | 'yaml', file: string): unknown {
  try {
    if (format === 'toml') return parseToml(text);
    return parseYaml(text, { prettyErrors: true });
  } catch (error) {
    throw new CliError(
      'invalid-config',
      `cannot parse ${file} as ${format.toUpperCase()}: ${describeError(error)}`,
    );
  }
}

/** Reads and validates `--config FILE` (TOML, YAML, or an xl domain configuration). */
export async function loadRunPlan(file: string, cwd: string, xl: XlRunOptions = {}): Promise<RunPlan> {
  const format = configFormat(file);
  const path = resolve(cwd, file);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new CliError('io-failed', `cannot read ${file}: ${describeError(error)}`, { cause: error });
  }
  if (format === 'xl') {
    const missing: string[] = [];
    if (xl.xen === undefined) missing.push(`--xen (allowed values: ${XEN_MODES.join(', ')})`);
    if (xl.domid === undefined) missing.push('--domid (the guest domain ID xl create assigned)');
    if (missing.length > 0) {
      throw new CliError(
        'invalid-arguments',
        `${file} is an xl domain configuration: also give ${missing.join(' and ')}`,
      );
    }
    const domain = readXlDomain(text, file);
    const data = {
      xen: xl.xen,
      ...(xl.backendDomid !== undefined ? { backend_domid: xl.backendDomid } : {}),
      domains: [{ domid: xl.domid, ...(domain.name ? { name: domain.name } : {}), xl_config: path }],
    };
    return planRun(data, file, dirname(path));
  }
  return planRun(parseConfigText(text, format, file), file, dirname(path));
}
