import type { VirtioDevice } from '@xvio/transport';
import type { z } from 'zod';
import { CliError, describeError } from './cli-errors.js';
import { formatIssues } from './config-errors.js';

/** The device packages the CLI knows how to compose. */
export const DEVICE_NAMES = ['console', 'rng', 'net', 'gpu', 'template'] as const;
export type DeviceName = (typeof DEVICE_NAMES)[number];

export interface DeviceEntry {
  readonly name: DeviceName;
  readonly packageName: string;
  /** The named export that builds a device from its (package-validated) configuration. */
  readonly factory: string;
  /** Device ID, virtio spec 5 (xl.cfg's `virtio,device<N>` names devices by it). */
  readonly deviceType: number;
  /**
   * Builds the device when the package has no factory function but the template's shape
   * (`<Name>Device(host, config)`, `Memory<Name>Host`, `parse<Name>Config`).
   */
  readonly pascal?: string;
}

export const DEVICE_ENTRIES: readonly DeviceEntry[] = [
  { name: 'net', packageName: '@xvio/dev-net', factory: 'createNetDevice', deviceType: 1 },
  { name: 'console', packageName: '@xvio/dev-console', factory: 'createConsoleDevice', deviceType: 3 },
  { name: 'rng', packageName: '@xvio/dev-rng', factory: 'createRngDevice', deviceType: 4 },
  { name: 'gpu', packageName: '@xvio/dev-gpu', factory: 'createGpuDevice', deviceType: 16 },
  // The template's ID is whatever the template package says; it is not matched from xl.cfg.
  {
    name: 'template',
    packageName: '@xvio/dev-template',
    factory: 'createTemplateDevice',
    deviceType: -1,
    pascal: 'Template',
  },
];

export function isDeviceName(value: string): value is DeviceName {
  return (DEVICE_NAMES as readonly string[]).includes(value);
}

export function deviceEntry(name: DeviceName): DeviceEntry {
  const entry = DEVICE_ENTRIES.find((candidate) => candidate.name === name);
  if (!entry) throw new CliError('device-unavailable', `device ${name} is not available in this build`);
  return entry;
}

export function deviceEntryByType(deviceType: number): DeviceEntry | undefined {
  return DEVICE_ENTRIES.find((candidate) => candidate.deviceType === deviceType);
}

/** A device factory as the device packages export it: config in, device out (config validated by the package). */
export type DeviceFactory = (config?: unknown, options?: unknown) => VirtioDevice;

export interface LoadedDevice {
  readonly entry: DeviceEntry;
  /** The package's whole module, for optional extras (hosts, schemas). */
  readonly module: Readonly<Record<string, unknown>>;
  /**
   * Builds a device. The package validates `config`; its errors come back as one
   * `invalid-config` CliError naming each field under `where` (e.g. `domains[0].devices[1].options`).
   */
  create(config?: unknown, where?: string, options?: unknown): VirtioDevice;
  /** Validates options with the package's exported `<name>ConfigSchema` without building anything; false when it has none. */
  validate(config: unknown, where?: string): boolean;
}

/** How device packages are reached: dynamic imports in the workspace, static ones in a composed backend. */
export interface DeviceRegistry {
  /** Devices this build may contain. */
  readonly names: readonly DeviceName[];
  load(name: DeviceName): Promise<LoadedDevice>;
}

type ModuleImporter = () => Promise<Record<string, unknown>>;

/** Builds a registry from module importers (one per device the build contains). */
export function createDeviceRegistry(importers: Partial<Record<DeviceName, ModuleImporter>>): DeviceRegistry {
  const names = DEVICE_NAMES.filter((name) => importers[name] !== undefined);
  const cache = new Map<DeviceName, Promise<LoadedDevice>>();
  return {
    names,
    load(name) {
      let loaded = cache.get(name);
      if (!loaded) {
        loaded = loadDevice(name, importers[name]);
        cache.set(name, loaded);
        loaded.catch(() => cache.delete(name));
      }
      return loaded;
    },
  };
}

async function loadDevice(name: DeviceName, importer: ModuleImporter | undefined): Promise<LoadedDevice> {
  const entry = deviceEntry(name);
  if (!importer) {
    throw new CliError(
      'device-unavailable',
      `device ${name} is not available in this build (not composed into it)`,
    );
  }
  let module: Record<string, unknown>;
  try {
    module = await importer();
  } catch (error) {
    throw new CliError(
      'device-unavailable',
      `device ${name} is not available in this build: ${entry.packageName} could not be loaded (${loadFailure(error)})`,
      { cause: error },
    );
  }
  const factory = module[entry.factory] ?? templateShapeFactory(entry, module);
  if (typeof factory !== 'function') {
    throw new CliError(
      'device-unavailable',
      `device ${name} is not available in this build: ${entry.packageName} does not export ${entry.factory}()`,
    );
  }
  return {
    entry,
    module,
    validate: (config, where) => {
      const schema = module[`${name}ConfigSchema`] as
        | { safeParse?: (input: unknown, params?: { reportInput?: boolean }) => unknown }
        | undefined;
      if (typeof schema?.safeParse !== 'function') return false;
      const result = schema.safeParse(config ?? {}, { reportInput: true }) as {
        success: boolean;
        error?: unknown;
      };
      if (!result.success) {
        throw optionsError(name, zodIssues(result.error) ?? [], where, result.error, schema as z.ZodType);
      }
      return true;
    },
    create: (config, where, options) => {
      try {
        // `options` are the factory's second argument: host objects a caller supplies
        // (e.g. the demo's in-memory console host), never user configuration.
        const device =
          options === undefined
            ? (factory as DeviceFactory)(config)
            : (factory as DeviceFactory)(config, options);
        if (typeof (device as unknown as { then?: unknown }).then === 'function') {
          throw new CliError(
            'device-unavailable',
            `device ${name}: ${entry.factory}() must return the device, not a promise`,
          );
        }
        return device;
      } catch (error) {
        const issues = zodIssues(error);
        if (!issues) throw error;
        throw optionsError(name, issues, where, error);
      }
    },
  };
}

function optionsError(
  name: DeviceName,
  issues: z.core.$ZodIssue[],
  where: string | undefined,
  cause: unknown,
  schema?: z.ZodType,
) {
  const lines = formatIssues(issues, schema, where ?? '');
  return new CliError('invalid-config', `invalid options for device ${name}:\n  ${lines.join('\n  ')}`, {
    cause,
  });
}

/** zod's issues, from a ZodError or a package's config error that keeps it as `cause`. */
function zodIssues(error: unknown): z.core.$ZodIssue[] | undefined {
  for (let current = error, depth = 0; current !== undefined && depth < 3; depth++) {
    const issues = (current as { issues?: unknown }).issues;
    if (Array.isArray(issues)) return issues as z.core.$ZodIssue[];
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

type Constructor = new (...args: unknown[]) => VirtioDevice;

/** The template's shape: `new <Name>Device(new Memory<Name>Host(config.key), parse<Name>Config(config))`. */
function templateShapeFactory(
  entry: DeviceEntry,
  module: Record<string, unknown>,
): DeviceFactory | undefined {
  if (!entry.pascal) return undefined;
  const Device = module[`${entry.pascal}Device`];
  const Host = module[`Memory${entry.pascal}Host`];
  const parse = module[`parse${entry.pascal}Config`];
  if (typeof Device !== 'function' || typeof Host !== 'function' || typeof parse !== 'function')
    return undefined;
  return (config) => {
    const parsed = (parse as (input: unknown) => { key?: number })(config ?? {});
    const host = new (Host as new (...args: unknown[]) => unknown)(parsed.key);
    return new (Device as Constructor)(host, parsed);
  };
}

/** Why an import failed, without the machine's absolute paths. */
function loadFailure(error: unknown): string {
  const code = (error as { code?: unknown }).code;
  const message = firstLine(describeError(error));
  if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') {
    const missing = /Cannot find (?:module|package) '([^']+)'/.exec(message)?.[1];
    if (missing) {
      const parts = missing.split('/');
      const short = missing.startsWith('/') ? parts.slice(-3).join('/') : missing;
      return `missing module ${short}`;
    }
  }
  return message;
}

function firstLine(text: string): string {
  const line = text.split('\n')[0] ?? text;
  return line.length > 200 ? `${line.slice(0, 200)}...` : line;
}

/**
 * The registry of a workspace checkout: every device package, imported on first use. The
 * specifier is a variable so that an unwritten package fails at run time with a clear
 * message instead of failing the build.
 */
export function createWorkspaceRegistry(): DeviceRegistry {
  const importers: Partial<Record<DeviceName, ModuleImporter>> = {};
  for (const entry of DEVICE_ENTRIES) {
    const specifier: string = entry.packageName;
    importers[entry.name] = () => import(specifier) as Promise<Record<string, unknown>>;
  }
  return createDeviceRegistry(importers);
}

/** Parses `console,rng,net` into device names, rejecting unknown or repeated ones. */
export function parseDeviceList(text: string, option = '--devices'): DeviceName[] {
  const names = text
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part.length > 0);
  if (names.length === 0) {
    throw new CliError(
      'invalid-arguments',
      `${option}: expected a comma-separated list of ${DEVICE_NAMES.join(', ')}`,
    );
  }
  const out: DeviceName[] = [];
  for (const name of names) {
    if (!isDeviceName(name)) {
      throw new CliError(
        'invalid-arguments',
        `${option}: unknown device '${name}' (allowed: ${DEVICE_NAMES.join(', ')})`,
      );
    }
    if (out.includes(name))
      throw new CliError('invalid-arguments', `${option}: device '${name}' is listed twice`);
    out.push(name);
  }
  return out;
}
