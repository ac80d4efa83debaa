import { type DestinationStream, type Level, type Logger, pino } from 'pino';

export type { Logger } from 'pino';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface LoggerOptions {
  level: LogLevel;
  /** Human-readable lines instead of JSON. Default: when the destination is a TTY. */
  pretty?: boolean;
  /** Where lines go. Default: standard error (standard output stays for command results). */
  destination?: { write(line: string): unknown; isTTY?: boolean };
}

const levelNames: Record<number, string> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO ',
  40: 'WARN ',
  50: 'ERROR',
  60: 'FATAL',
};
const levelColours: Record<number, string> = { 10: '90', 20: '36', 30: '32', 40: '33', 50: '31', 60: '35' };
const hiddenKeys = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'device', 'component']);

/**
 * Formats one pino JSON line as `12:00:01.123 INFO  [rng0] message key=value`. Kept small on
 * purpose: pino-pretty would pull a worker-thread transport into composed single binaries.
 */
export function formatPrettyLine(line: string, colour: boolean): string {
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }
  const time = typeof record.time === 'number' ? new Date(record.time).toISOString().slice(11, 23) : '';
  const level = typeof record.level === 'number' ? record.level : 30;
  const levelName = levelNames[level] ?? String(level);
  const scope = record.device ?? record.component;
  const fields = Object.entries(record)
    .filter(([key]) => !hiddenKeys.has(key))
    .map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`);
  const head = colour ? `\u001b[${levelColours[level] ?? '0'}m${levelName}\u001b[0m` : levelName;
  const scopeText = scope === undefined ? '' : ` [${String(scope)}]`;
  const fieldText = fields.length > 0 ? ` ${fields.join(' ')}` : '';
  return `${time} ${head}${scopeText} ${String(record.msg ?? '')}${fieldText}\n`;
}

/** The CLI's root logger: JSON lines, or formatted lines on a terminal. */
export function createLogger(options: LoggerOptions): Logger {
  const target = options.destination ?? process.stderr;
  const pretty = options.pretty ?? target.isTTY === true;
  const colour = pretty && target.isTTY === true && process.env.NO_COLOR === undefined;
  const stream: DestinationStream = pretty
    ? { write: (line: string) => void target.write(formatPrettyLine(line, colour)) }
    : { write: (line: string) => void target.write(line) };
  return pino({ level: options.level, base: undefined }, stream);
}

/** One child logger per device, named after it, so every line says which device spoke. */
export function deviceLogger(root: Logger, deviceName: string): Logger {
  return root.child({ device: deviceName });
}

export function isLevel(value: string): value is Level | 'silent' {
  return (LOG_LEVELS as readonly string[]).includes(value);
}
