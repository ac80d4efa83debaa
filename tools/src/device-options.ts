import { InvalidArgumentError } from 'commander';
import { describeError } from './cli-errors.js';
import { type DeviceName, parseDeviceList } from './device-registry.js';

/**
 * One `--set key=value` flag: dotted keys nest (`host.type=switch`), values are JSON when
 * they parse as JSON (`64`, `true`, `{"kind":"os"}`) and strings otherwise. The device
 * package validates the result.
 */
export function collectSetting(
  text: string,
  previous: Record<string, unknown> = {},
): Record<string, unknown> {
  const equals = text.indexOf('=');
  if (equals <= 0) throw new InvalidArgumentError('expected key=value.');
  const key = text.slice(0, equals);
  const raw = text.slice(equals + 1);
  const path = key.split('.');
  if (path.some((part) => !/^[A-Za-z_][A-Za-z0-9_]*$/.test(part))) {
    throw new InvalidArgumentError(`'${key}' is not an option name (letters, digits, _; dots nest).`);
  }
  let value: unknown = raw;
  try {
    value = JSON.parse(raw);
  } catch {
    // a plain string
  }
  const out = structuredClone(previous);
  let target = out;
  for (const part of path.slice(0, -1)) {
    const next = target[part];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) target[part] = {};
    target = target[part] as Record<string, unknown>;
  }
  target[path.at(-1)!] = value;
  return out;
}

/** `--devices` parsed by commander, so a bad list is reported like any bad flag. */
export function deviceListOption(value: string): DeviceName[] {
  try {
    return parseDeviceList(value);
  } catch (error) {
    throw new InvalidArgumentError(describeError(error));
  }
}
