import type { z } from 'zod';

type Schema = z.ZodType;
type Path = readonly PropertyKey[];

interface Def {
  type: string;
  shape?: Record<string, Schema>;
  element?: Schema;
  innerType?: Schema;
  in?: Schema;
  options?: Schema[];
}

function defOf(schema: Schema): Def {
  return (schema as unknown as { _zod: { def: Def } })._zod.def;
}

/** Unwraps optional/default/pipe layers down to the schema that carries the shape. */
function unwrap(schema: Schema): Schema {
  let current = schema;
  for (let depth = 0; depth < 8; depth++) {
    const def = defOf(current);
    if (def.innerType) current = def.innerType;
    else if (def.type === 'pipe' && def.in) current = def.in;
    else break;
  }
  return current;
}

/** The schema that validates the value at `path`, for listing the fields an object allows. */
export function schemaAt(schema: Schema, path: Path): Schema | undefined {
  let current: Schema | undefined = unwrap(schema);
  for (const key of path) {
    if (!current) return undefined;
    const def = defOf(current);
    if (def.type === 'object' && typeof key === 'string') current = def.shape?.[key];
    else if (def.type === 'array' && typeof key === 'number') current = def.element;
    else return undefined;
    if (current) current = unwrap(current);
  }
  return current;
}

/** `domains[0].devices[1].type` from a zod path; a prefix ending in a space is a flag (`--set queueSize`). */
export function formatPath(path: Path, prefix = ''): string {
  let out = prefix;
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += out.length === 0 || out.endsWith(' ') ? String(key) : `.${String(key)}`;
  }
  return out.length === 0 ? '(top level)' : out;
}

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint') return `${value}`;
  if (value === undefined) return 'nothing';
  if (Array.isArray(value)) return 'a list';
  if (value === null) return 'null';
  if (typeof value === 'object') return 'a table';
  return String(value);
}

function typeName(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'list';
  if (typeof value === 'object') return 'table';
  return typeof value;
}

const expectedNames: Record<string, string> = {
  object: 'a table',
  array: 'a list',
  record: 'a table',
  int: 'an integer',
  number: 'a number',
  string: 'a string',
  boolean: 'true or false',
};

function withoutInput(issue: z.core.$ZodIssue, path: string): string {
  switch (issue.code) {
    case 'invalid_value':
      return `${path}: allowed values: ${issue.values.map((v) => String(v)).join(', ')}`;
    case 'too_small':
      return issue.origin === 'array'
        ? `${path}: needs at least ${issue.minimum} entries`
        : `${path}: must be ${issue.inclusive ? '>=' : '>'} ${issue.minimum}`;
    case 'too_big':
      return issue.origin === 'array'
        ? `${path}: allows at most ${issue.maximum} entries`
        : `${path}: must be ${issue.inclusive ? '<=' : '<'} ${issue.maximum}`;
    case 'unrecognized_keys':
      return `${path}: unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.join(', ')}`;
    default:
      return `${path}: ${issue.message.charAt(0).toLowerCase()}${issue.message.slice(1)}`;
  }
}

/**
 * One line per zod issue, naming the field path and what is allowed: every configuration
 * error the CLI reports reads `<path>: <what is wrong>; <what is allowed>`.
 */
export function formatIssues(issues: readonly z.core.$ZodIssue[], schema?: Schema, prefix = ''): string[] {
  const lines: string[] = [];
  for (const issue of issues) {
    const path = formatPath(issue.path, prefix);
    const input = (issue as { input?: unknown }).input;
    if (!('input' in issue)) {
      // The schema's owner parsed without reportInput: say what is allowed, not what was given.
      lines.push(withoutInput(issue, path));
      continue;
    }
    switch (issue.code) {
      case 'invalid_value':
        if (input === undefined) {
          lines.push(
            `${path}: is required; allowed values: ${issue.values.map((v) => String(v)).join(', ')}`,
          );
          break;
        }
        lines.push(
          `${path}: got ${show(input)}; allowed values: ${issue.values.map((v) => String(v)).join(', ')}`,
        );
        break;
      case 'invalid_type':
        if (input === undefined) {
          lines.push(`${path}: is required (expected ${expectedNames[issue.expected] ?? issue.expected})`);
        } else {
          const got = typeof input === 'object' ? typeName(input) : show(input);
          lines.push(`${path}: expected ${expectedNames[issue.expected] ?? issue.expected}, got ${got}`);
        }
        break;
      case 'unrecognized_keys': {
        const target = schema ? schemaAt(schema, issue.path) : undefined;
        const shape = target ? defOf(target).shape : undefined;
        const allowed = shape ? `; allowed fields: ${Object.keys(shape).join(', ')}` : '';
        for (const key of issue.keys)
          lines.push(`${formatPath([...issue.path, key], prefix)}: unknown field${allowed}`);
        break;
      }
      case 'too_small':
        if (issue.origin === 'array') lines.push(`${path}: needs at least ${issue.minimum} entries`);
        else if (issue.origin === 'string') lines.push(`${path}: must not be empty`);
        else
          lines.push(`${path}: got ${show(input)}; must be ${issue.inclusive ? '>=' : '>'} ${issue.minimum}`);
        break;
      case 'too_big':
        if (issue.origin === 'array') lines.push(`${path}: allows at most ${issue.maximum} entries`);
        else
          lines.push(`${path}: got ${show(input)}; must be ${issue.inclusive ? '<=' : '<'} ${issue.maximum}`);
        break;
      case 'invalid_format':
        lines.push(`${path}: got ${show(input)}; ${issue.message}`);
        break;
      default:
        lines.push(`${path}: ${issue.message}`);
    }
  }
  return lines;
}
