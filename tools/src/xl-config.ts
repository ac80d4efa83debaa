import { CliError } from './cli-errors.js';
import { DEVICE_ENTRIES, type DeviceName, deviceEntryByType } from './device-registry.js';

/**
 * One entry of xl.cfg's `virtio = [ ... ]` list, as xl parses it (tools/xl/xl_parse.c,
 * parse_virtio_config; documented in docs/man/xl.cfg.5.pod.in).
 */
export interface XlVirtioSpec {
  /** `type=virtio,device<N>`: N is the virtio device ID in lower-case hex without 0x. */
  readonly type: string;
  readonly deviceType: number;
  /** The xvio device serving that ID. */
  readonly device: DeviceName;
  /** `transport=mmio|pci` (libxl_virtio_transport). Default mmio. */
  readonly transport: 'mmio' | 'pci';
  /**
   * `grant_usage=<n>`: xl reads it with strtoul, so any non-zero number means grants.
   * Undefined when absent: libxl then enables grants iff the backend is not dom0.
   */
  readonly grantUsage: boolean | undefined;
  /** `backend=<domid or name>`; default dom0. */
  readonly backend: string;
  readonly irq?: number;
  readonly base?: bigint;
  readonly bdf?: string;
  readonly backendType?: 'standalone' | 'qemu';
}

const DEVICE_TYPE_PREFIX = 'virtio,device';

function supportedTypes(): string {
  return DEVICE_ENTRIES.filter((entry) => entry.deviceType >= 0)
    .map((entry) => `${DEVICE_TYPE_PREFIX}${entry.deviceType.toString(16)} (${entry.name})`)
    .join(', ');
}

/** C's strtoul(text, NULL, 0) for the forms xl accepts: decimal, 0x hex, 0 octal. */
function parseCNumber(text: string, key: string, spec: string): bigint {
  const trimmed = text.trim();
  const pattern = /^(0x[0-9a-f]+|0[0-7]*|[1-9][0-9]*)$/i;
  if (!pattern.test(trimmed)) {
    throw new CliError('invalid-config', `virtio spec "${spec}": ${key}=${text} is not a number`);
  }
  if (/^0[0-7]+$/.test(trimmed)) return BigInt(`0o${trimmed.slice(1)}`);
  return BigInt(trimmed);
}

/**
 * Parses one VIRTIO_DEVICE_STRING: comma-separated KEY=VALUE, where the value of `type` may
 * itself contain one comma (`virtio,device<N>`), as the man page says.
 */
export function parseXlVirtioSpec(spec: string): XlVirtioSpec {
  const tokens = spec.split(',').map((token) => token.trim());
  const merged: string[] = [];
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i]!;
    const next = tokens[i + 1];
    if (token === 'type=virtio' && next !== undefined && next.startsWith('device')) {
      merged.push(`${token},${next}`);
      i++;
    } else if (token.length > 0) {
      merged.push(token);
    }
  }
  let type: string | undefined;
  let transport: 'mmio' | 'pci' = 'mmio';
  let grantUsage: boolean | undefined;
  let backend = '0';
  let irq: number | undefined;
  let base: bigint | undefined;
  let bdf: string | undefined;
  let backendType: 'standalone' | 'qemu' | undefined;
  for (const token of merged) {
    const equals = token.indexOf('=');
    const key = equals < 0 ? token : token.slice(0, equals);
    const value = equals < 0 ? '' : token.slice(equals + 1);
    switch (key) {
      case 'type':
        type = value;
        break;
      case 'transport':
        if (value !== 'mmio' && value !== 'pci') {
          throw new CliError(
            'invalid-config',
            `virtio spec "${spec}": transport=${value} (allowed values: mmio, pci)`,
          );
        }
        transport = value;
        break;
      case 'grant_usage':
        grantUsage = parseCNumber(value, key, spec) !== 0n;
        break;
      case 'backend':
        if (value.length === 0)
          throw new CliError('invalid-config', `virtio spec "${spec}": backend is empty`);
        backend = value;
        break;
      case 'irq':
        irq = Number(parseCNumber(value, key, spec) & 0xffff_ffffn);
        break;
      case 'base':
        base = parseCNumber(value, key, spec);
        break;
      case 'bdf':
        bdf = value;
        break;
      case 'backend_type':
        if (value !== 'standalone' && value !== 'qemu') {
          throw new CliError(
            'invalid-config',
            `virtio spec "${spec}": backend_type=${value} (allowed values: standalone, qemu)`,
          );
        }
        backendType = value;
        break;
      default:
        // xl's own wording (xl_parse.c): it refuses the whole domain config.
        throw new CliError('invalid-config', `unknown string "${token}" in virtio spec "${spec}"`);
    }
  }
  if (type === undefined) {
    throw new CliError(
      'invalid-config',
      `virtio spec "${spec}": type is missing (expected ${DEVICE_TYPE_PREFIX}<N>)`,
    );
  }
  const match = /^virtio,device([0-9a-f]+)$/.exec(type);
  if (!match) {
    const generic = type === 'virtio,device' ? ' (the generic type names no device: add its ID)' : '';
    throw new CliError(
      'invalid-config',
      `virtio spec "${spec}": type=${type} is not served by xvio${generic}; supported: ${supportedTypes()}`,
    );
  }
  const deviceType = Number.parseInt(match[1]!, 16);
  const entry = deviceEntryByType(deviceType);
  if (!entry) {
    throw new CliError(
      'invalid-config',
      `virtio spec "${spec}": type=${type} is not served by xvio; supported: ${supportedTypes()}`,
    );
  }
  return {
    type,
    deviceType,
    device: entry.name,
    transport,
    grantUsage,
    backend,
    ...(irq !== undefined ? { irq } : {}),
    ...(base !== undefined ? { base } : {}),
    ...(bdf !== undefined ? { bdf } : {}),
    ...(backendType !== undefined ? { backendType } : {}),
  };
}

/** A value in an xl.cfg file: string, number or a list of them (libxlu's grammar). */
export type XlValue = string | number | XlValue[];

/**
 * Parses an xl domain configuration file (`KEY = VALUE` statements, `#` comments, strings in
 * single or double quotes, lists in brackets). Only the syntax: settings are not interpreted.
 */
export function parseXlConfig(text: string, file = 'xl.cfg'): Map<string, XlValue> {
  const out = new Map<string, XlValue>();
  let position = 0;
  let line = 1;
  const fail = (message: string): never => {
    throw new CliError('invalid-config', `${file}:${line}: ${message}`);
  };
  const skipSpace = (newlines: boolean) => {
    while (position < text.length) {
      const char = text[position]!;
      if (char === '#') {
        while (position < text.length && text[position] !== '\n') position++;
      } else if (char === '\n' && newlines) {
        line++;
        position++;
      } else if (char === ' ' || char === '\t' || char === '\r') {
        position++;
      } else {
        return;
      }
    }
  };
  const parseValue = (): XlValue => {
    skipSpace(true);
    const char = text[position];
    if (char === '"' || char === "'") {
      const quote = char;
      position++;
      let value = '';
      while (position < text.length && text[position] !== quote) {
        let next = text[position]!;
        if (next === '\n') fail('unterminated string');
        if (next === '\\' && position + 1 < text.length) {
          position++;
          const escaped = text[position]!;
          next = escaped === 'n' ? '\n' : escaped === 't' ? '\t' : escaped;
        }
        value += next;
        position++;
      }
      if (position >= text.length) fail('unterminated string');
      position++;
      return value;
    }
    if (char === '[') {
      position++;
      const list: XlValue[] = [];
      skipSpace(true);
      while (text[position] !== ']') {
        list.push(parseValue());
        skipSpace(true);
        if (text[position] === ',') {
          position++;
          skipSpace(true);
        } else if (text[position] !== ']') {
          fail(`expected ',' or ']' in a list`);
        }
      }
      position++;
      return list;
    }
    const match = /^(0x[0-9a-fA-F]+|-?[0-9]+(\.[0-9]+)?)/.exec(text.slice(position));
    if (match) {
      position += match[0].length;
      return Number(match[0]);
    }
    return fail(`expected a string, a number or a list`);
  };
  for (;;) {
    skipSpace(true);
    if (position >= text.length) break;
    if (text[position] === ';') {
      position++;
      continue;
    }
    const match = /^[A-Za-z_][A-Za-z0-9_.]*/.exec(text.slice(position));
    if (!match) fail(`expected a setting name`);
    const key = match![0];
    position += key.length;
    skipSpace(false);
    if (text[position] !== '=') fail(`expected '=' after ${key}`);
    position++;
    out.set(key, parseValue());
    skipSpace(false);
    const end = text[position];
    if (end !== undefined && end !== '\n' && end !== ';' && end !== '#') fail(`unexpected text after ${key}`);
  }
  return out;
}

/** The parts of an xl domain configuration the backend needs: the guest's name and its virtio devices. */
export function readXlDomain(
  text: string,
  file = 'xl.cfg',
): { name: string | undefined; virtio: XlVirtioSpec[] } {
  const settings = parseXlConfig(text, file);
  const name = settings.get('name');
  const list = settings.get('virtio');
  if (list !== undefined && !Array.isArray(list)) {
    throw new CliError('invalid-config', `${file}: virtio must be a list of strings`);
  }
  const virtio = (list ?? []).map((item) => {
    if (typeof item !== 'string')
      throw new CliError('invalid-config', `${file}: virtio must be a list of strings`);
    return parseXlVirtioSpec(item);
  });
  return { name: typeof name === 'string' ? name : undefined, virtio };
}

/** One device libxl described in xenstore under `backend/virtio/<domid>/<devid>/`. */
export interface LibxlVirtioNode {
  readonly frontendDomid: number;
  readonly devid: number;
  readonly spec: XlVirtioSpec;
  /** The node's directory, e.g. `/local/domain/0/backend/virtio/1/0`. */
  readonly path: string;
}

/**
 * Reads libxl's backend nodes (libxl_virtio.c, libxl__set_xenstore_virtio): `irq`, `base`
 * (`%#"PRIx64`), `type`, `transport` and `grant_usage` ("1"/"0") under
 * `<backendRoot>/backend/virtio/<domid>/<devid>/`. `entries` maps absolute paths to values,
 * as a recursive xenstore listing gives them.
 */
export function readLibxlVirtioNodes(
  entries: ReadonlyMap<string, string>,
  backendRoot: string,
): { nodes: LibxlVirtioNode[]; errors: string[] } {
  const prefix = `${backendRoot.replace(/\/$/, '')}/backend/virtio/`;
  const backendDomid = /\/local\/domain\/([0-9]+)$/.exec(backendRoot.replace(/\/$/, ''))?.[1] ?? '0';
  const devices = new Map<string, Map<string, string>>();
  for (const [path, value] of entries) {
    if (!path.startsWith(prefix)) continue;
    const parts = path.slice(prefix.length).split('/');
    if (parts.length !== 3) continue;
    const key = `${parts[0]}/${parts[1]}`;
    let fields = devices.get(key);
    if (!fields) {
      fields = new Map();
      devices.set(key, fields);
    }
    fields.set(parts[2]!, value);
  }
  const nodes: LibxlVirtioNode[] = [];
  const errors: string[] = [];
  for (const [key, fields] of devices) {
    const path = `${prefix}${key}`;
    const [domid, devid] = key.split('/').map((part) => Number(part));
    if (!Number.isInteger(domid) || !Number.isInteger(devid)) {
      errors.push(`${path}: not a <domid>/<devid> directory`);
      continue;
    }
    const parts = [`type=${fields.get('type') ?? ''}`];
    for (const field of ['transport', 'grant_usage', 'irq', 'base'] as const) {
      const value = fields.get(field);
      if (value !== undefined) parts.push(`${field}=${value}`);
    }
    try {
      const spec = parseXlVirtioSpec(parts.join(','));
      nodes.push({ frontendDomid: domid!, devid: devid!, spec: { ...spec, backend: backendDomid }, path });
    } catch (error) {
      errors.push(`${path}: ${(error as Error).message}`);
    }
  }
  nodes.sort((a, b) => a.frontendDomid - b.frontendDomid || a.devid - b.devid);
  return { nodes, errors };
}
