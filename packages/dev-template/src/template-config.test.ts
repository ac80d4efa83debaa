import { describe, expect, it } from 'vitest';
import { parseTemplateConfig } from './template-config.js';

describe('parseTemplateConfig', () => {
  it('fills defaults', () => {
    expect(parseTemplateConfig()).toEqual({
      name: 'template0',
      queueSize: 256,
      maxRequestSize: 65536,
      key: 0x20,
    });
  });

  it('rejects invalid values and unknown keys', () => {
    expect(() => parseTemplateConfig({ queueSize: 100 })).toThrow('power of two');
    expect(() => parseTemplateConfig({ queueSize: 65536 })).toThrow();
    expect(() => parseTemplateConfig({ maxRequestSize: 0 })).toThrow();
    expect(() => parseTemplateConfig({ key: 300 })).toThrow();
    expect(() => parseTemplateConfig({ colour: 'blue' })).toThrow();
  });
});
