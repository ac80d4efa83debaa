import { describe, expect, it } from 'vitest';
import { parseXlConfig, parseXlVirtioSpec, readLibxlVirtioNodes, readXlDomain } from './xl-config.js';

describe('xl.cfg virtio specs', () => {
  it('parses the documented form, with the comma inside type and spaces after commas', () => {
    expect(parseXlVirtioSpec('type=virtio,device4, transport=mmio, grant_usage=1, backend=0')).toEqual({
      type: 'virtio,device4',
      deviceType: 4,
      device: 'rng',
      transport: 'mmio',
      grantUsage: true,
      backend: '0',
    });
  });

  it('reads device IDs in lower-case hex (virtio,device10 is gpu, ID 16)', () => {
    expect(parseXlVirtioSpec('type=virtio,device10').device).toBe('gpu');
    expect(parseXlVirtioSpec('type=virtio,device1,transport=pci').transport).toBe('pci');
  });

  it('leaves grant_usage undefined when absent, and reads it like strtoul', () => {
    expect(parseXlVirtioSpec('type=virtio,device3').grantUsage).toBeUndefined();
    expect(parseXlVirtioSpec('type=virtio,device3,grant_usage=0').grantUsage).toBe(false);
    expect(parseXlVirtioSpec('type=virtio,device3,grant_usage=0x2').grantUsage).toBe(true);
  });

  it('reads irq and base as libxl writes them', () => {
    const spec = parseXlVirtioSpec('type=virtio,device3,irq=33,base=0x2000000');
    expect(spec.irq).toBe(33);
    expect(spec.base).toBe(0x2000000n);
  });

  it('refuses what xl refuses, in its words', () => {
    expect(() => parseXlVirtioSpec('type=virtio,device3,foo=bar')).toThrow(
      'unknown string "foo=bar" in virtio spec "type=virtio,device3,foo=bar"',
    );
    expect(() => parseXlVirtioSpec('type=virtio,device3,transport=ccw')).toThrow(
      'virtio spec "type=virtio,device3,transport=ccw": transport=ccw (allowed values: mmio, pci)',
    );
    expect(() => parseXlVirtioSpec('type=virtio,device3,grant_usage=yes')).toThrow(
      'virtio spec "type=virtio,device3,grant_usage=yes": grant_usage=yes is not a number',
    );
  });

  it('names the devices it serves when a type is not one of them', () => {
    expect(() => parseXlVirtioSpec('type=virtio,device22')).toThrow(
      'virtio spec "type=virtio,device22": type=virtio,device22 is not served by xvio; supported: virtio,device1 (net), virtio,device3 (console), virtio,device4 (rng), virtio,device10 (gpu)',
    );
    expect(() => parseXlVirtioSpec('type=virtio,device')).toThrow(
      'type=virtio,device is not served by xvio (the generic type names no device: add its ID)',
    );
    expect(() => parseXlVirtioSpec('transport=mmio')).toThrow(
      'virtio spec "transport=mmio": type is missing (expected virtio,device<N>)',
    );
  });
});

describe('xl domain configuration files', () => {
  it('parses settings, lists, comments and both quote styles', () => {
    const settings = parseXlConfig(
      [
        '# a guest',
        'name = "guest1"',
        "kernel = '/boot/vmlinuz'; memory = 512",
        'virtio = [ "type=virtio,device4, transport=mmio",',
        "           'type=virtio,device3' ]  # two devices",
      ].join('\n'),
    );
    expect(settings.get('name')).toBe('guest1');
    expect(settings.get('memory')).toBe(512);
    expect(settings.get('virtio')).toEqual(['type=virtio,device4, transport=mmio', 'type=virtio,device3']);
  });

  it('reads the name and the virtio list', () => {
    const domain = readXlDomain('name="g"\nvirtio=["type=virtio,device1,backend=0"]\n');
    expect(domain.name).toBe('g');
    expect(domain.virtio.map((spec) => spec.device)).toEqual(['net']);
  });

  it('reports syntax errors with the line', () => {
    expect(() => parseXlConfig('name = "g"\nvirtio = [ "a" "b" ]\n', 'g.cfg')).toThrow(
      "g.cfg:2: expected ',' or ']' in a list",
    );
    expect(() => parseXlConfig('name "g"\n', 'g.cfg')).toThrow("g.cfg:1: expected '=' after name");
    expect(() => parseXlConfig('name = "g\n', 'g.cfg')).toThrow('g.cfg:1: unterminated string');
  });
});

describe("libxl's xenstore nodes", () => {
  it('reads backend/virtio/<domid>/<devid> as libxl__set_xenstore_virtio writes it', () => {
    const root = '/local/domain/0';
    const entries = new Map([
      [`${root}/backend/virtio/5/0/irq`, '33'],
      [`${root}/backend/virtio/5/0/base`, '0x2000000'],
      [`${root}/backend/virtio/5/0/type`, 'virtio,device4'],
      [`${root}/backend/virtio/5/0/transport`, 'mmio'],
      [`${root}/backend/virtio/5/0/grant_usage`, '1'],
      [`${root}/backend/virtio/5/1/type`, 'virtio,device3'],
      [`${root}/backend/virtio/5/1/transport`, 'mmio'],
      [`${root}/backend/virtio/6/0/type`, 'virtio,device22'],
      [`${root}/backend/vif/5/0/type`, 'ignored'],
    ]);
    const { nodes, errors } = readLibxlVirtioNodes(entries, root);
    expect(
      nodes.map((node) => [node.frontendDomid, node.devid, node.spec.device, node.spec.grantUsage]),
    ).toEqual([
      [5, 0, 'rng', true],
      [5, 1, 'console', undefined],
    ]);
    expect(nodes[0]?.spec.base).toBe(0x2000000n);
    expect(nodes[0]?.spec.irq).toBe(33);
    expect(nodes[0]?.spec.backend).toBe('0');
    expect(errors).toEqual([
      '/local/domain/0/backend/virtio/6/0: virtio spec "type=virtio,device22": type=virtio,device22 is not served by xvio; supported: virtio,device1 (net), virtio,device3 (console), virtio,device4 (rng), virtio,device10 (gpu)',
    ]);
  });
});
