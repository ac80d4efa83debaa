import fc from 'fast-check';
import { describe, it } from 'vitest';
import { properties } from './virtqueue-properties.js';

// A small budget on every run; `pnpm fuzz` runs the same properties with millions of cases.
const numRuns = Number(process.env.XVIO_PROPERTY_RUNS ?? 300);

describe('virtqueue properties', () => {
  for (const { name, property } of properties) {
    it(name, () => {
      fc.assert(property(), { numRuns });
    });
  }
});
