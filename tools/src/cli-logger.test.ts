import { describe, expect, it } from 'vitest';
import { createLogger, deviceLogger, formatPrettyLine } from './cli-logger.js';

function capture(pretty: boolean) {
  const lines: string[] = [];
  const log = createLogger({
    level: 'info',
    pretty,
    destination: { write: (line: string) => lines.push(line) },
  });
  return { log, lines };
}

describe('logger', () => {
  it('writes JSON lines with the device name from a child logger', () => {
    const { log, lines } = capture(false);
    deviceLogger(log, 'rng0').info({ bytes: 64 }, 'served');
    expect(lines).toHaveLength(1);
    const record = JSON.parse(lines[0]!) as Record<string, unknown>;
    expect(record).toMatchObject({ level: 30, device: 'rng0', bytes: 64, msg: 'served' });
  });

  it('drops lines below the level', () => {
    const { log, lines } = capture(false);
    log.debug('hidden');
    expect(lines).toEqual([]);
  });

  it('formats lines for a terminal with the device in brackets', () => {
    const { log, lines } = capture(true);
    deviceLogger(log, 'net0').warn({ queue: 1 }, 'queue broken');
    expect(lines[0]).toMatch(/^\d\d:\d\d:\d\d\.\d{3} WARN {2}\[net0\] queue broken queue=1\n$/);
  });

  it('passes through a line that is not JSON', () => {
    expect(formatPrettyLine('plain', false)).toBe('plain');
  });
});
