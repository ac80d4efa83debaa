import { describe, expect, it } from 'vitest';
import { TemplateMetrics } from './template-metrics.js';

describe('TemplateMetrics', () => {
  it('exports flat, prefixed counters', () => {
    const metrics = new TemplateMetrics();
    metrics.requests += 2;
    metrics.hostErrors++;
    expect(metrics.snapshot()).toEqual({
      template_requests: 2,
      template_bytes_in: 0,
      template_bytes_out: 0,
      template_bad_requests: 0,
      template_guest_faults: 0,
      template_host_errors: 1,
    });
  });
});
