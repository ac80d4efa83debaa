import { describe, expect, it } from 'vitest';
import { ConsoleConfigError, parseConsoleConfig, parseConsolePort } from './console-config.js';

function rejection(input: unknown): string {
  try {
    parseConsoleConfig(input);
  } catch (error) {
    expect(ConsoleConfigError.isInstance(error)).toBe(true);
    return (error as Error).message;
  }
  throw new Error('accepted');
}

describe('parseConsoleConfig', () => {
  it('defaults to one console port on a null host, no multiport, size from the host', () => {
    expect(parseConsoleConfig({})).toEqual({
      name: 'console0',
      multiport: false,
      maxPorts: 1,
      emergencyWrite: true,
      size: 'host',
      resizeOrder: 'spec',
      queueSize: 256,
      bufferBytes: 65536,
      maxChainBytes: 1048576,
      ports: [{ id: 0, name: undefined, console: true, host: { kind: 'null' }, log: undefined }],
    });
  });

  it.each([
    ['stdio', { kind: 'stdio', raw: true }],
    ['pty', { kind: 'pty', raw: true, holdSlave: true, sizePollMs: 1000 }],
    ['unix:/run/xvio/console.sock', { kind: 'unix', path: '/run/xvio/console.sock' }],
    ['tcp:4555', { kind: 'tcp', host: '127.0.0.1', port: 4555 }],
    ['tcp:[::1]:4555', { kind: 'tcp', host: '::1', port: 4555 }],
    ['file:/var/log/guest.log', { kind: 'file', path: '/var/log/guest.log' }],
  ])('reads the host shorthand %s', (host, expected) => {
    expect(parseConsoleConfig({ ports: [{ host }] }).ports[0]!.host).toEqual(expected);
  });

  it('assigns port ids in order, makes port 0 the console, and turns multiport on for several ports', () => {
    const config = parseConsoleConfig({ ports: [{ name: 'a' }, { id: 3, name: 'b' }, { name: 'c' }] });
    expect(config.ports.map((port) => [port.id, port.console])).toEqual([
      [0, true],
      [3, false],
      [1, false],
    ]);
    expect(config.multiport).toBe(true);
    expect(config.maxPorts).toBe(8);
  });

  it.each([
    [{ ports: [{ host: 'tcp:0.0.0.0:23' }] }, 'ports.0.host'],
    [{ ports: [{ id: 1 }, { id: 1 }] }, 'used twice'],
    [{ ports: [{ name: 'x' }, { name: 'x' }] }, 'unique'],
    [{ maxPorts: 2, ports: [{}, { id: 5 }] }, 'below maxPorts'],
    [{ multiport: false, ports: [{}, {}] }, 'exactly one port'],
    [{ ports: [{ name: 'has space' }] }, 'ports.0.name'],
    [{ ports: [{ host: 'serial0' }] }, 'ports.0.host'],
    [{ queueSize: 300 }, 'queueSize'],
    [{ bufferBytes: 10 }, 'bufferBytes'],
    [{ colour: 'blue' }, '(root)'],
  ])('rejects %j naming %s', (input, detail) => {
    expect(rejection(input)).toContain(detail);
  });
});

describe('parseConsolePort', () => {
  it('validates a hot-added port, taking the offered id unless one is given', () => {
    expect(parseConsolePort({ name: 'hot' }, 4)).toMatchObject({ id: 4, name: 'hot', console: false });
    expect(parseConsolePort({ id: 0 }, 4)).toMatchObject({ id: 0, console: true });
    expect(() => parseConsolePort({ host: 'nowhere' }, 1)).toThrow(/host/);
  });
});
