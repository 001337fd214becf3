import fc from 'fast-check';
import { Counter, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { CounterFamily, HistogramFamily } from '../src/metric-series.js';

/**
 * The request-path series are read by prom-client's registry: whatever is recorded into them
 * must come out exactly as prom-client's own Counter and Histogram write the same samples, in
 * the text format and in the registry's JSON.
 */

const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const ROUTES = ['/fal-ai/flux-lora/image-to-image', '/v1/requests/:id/status', 'unmatched'];
const TENANTS = ['team-a', 'team "b"', 'line\nbreak', 'back\\slash'];

const sample = fc.record({
  route: fc.constantFrom(...ROUTES),
  tenant: fc.constantFrom(...TENANTS),
  // Bounds themselves, values between them, zero, and values past the last bound.
  seconds: fc.oneof(fc.constantFrom(0, ...BUCKETS, 31), fc.double({ min: 0, max: 60, noNaN: true })),
});

function both() {
  const ours = new Registry();
  const theirs = new Registry();
  const labelNames = ['route', 'tenant'] as const;
  return {
    ours,
    theirs,
    counter: new CounterFamily({ name: 'x_requests_total', help: 'Requests.', labelNames, registers: [ours] }),
    promCounter: new Counter({ name: 'x_requests_total', help: 'Requests.', labelNames, registers: [theirs] }),
    histogram: new HistogramFamily({ name: 'x_duration_seconds', help: 'Durations.', labelNames, buckets: BUCKETS, registers: [ours] }),
    promHistogram: new Histogram({ name: 'x_duration_seconds', help: 'Durations.', labelNames, buckets: BUCKETS, registers: [theirs] }),
  };
}

describe('request-path metric series', () => {
  it('write the text and JSON prom-client writes for the same samples', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(sample, { maxLength: 60 }), async (samples) => {
        const m = both();
        for (const { route, tenant, seconds } of samples) {
          m.counter.with({ route, tenant }).inc();
          m.histogram.with({ route, tenant }).observe(seconds);
          m.promCounter.inc({ route, tenant });
          m.promHistogram.observe({ route, tenant }, seconds);
        }
        expect(await m.ours.metrics()).toBe(await m.theirs.metrics());
        // prom-client's own samples also carry an (empty) exemplar slot.
        const withoutExemplars = (await m.theirs.getMetricsAsJSON()).map((metric) => ({
          ...metric,
          values: metric.values.map((value) => {
            const { exemplar: _exemplar, ...rest } = value as typeof value & { exemplar?: unknown };
            return rest;
          }),
        }));
        expect(await m.ours.getMetricsAsJSON()).toStrictEqual(withoutExemplars);
      }),
      { numRuns: 200 },
    );
  });

  it('bind one series per label set, whatever the order the labels are given in', () => {
    const { counter } = both();
    const a = counter.with({ route: '/a', tenant: 't' });
    expect(counter.with({ tenant: 't', route: '/a' })).toBe(a);
    expect(counter.with({ route: '/a', tenant: 'u' })).not.toBe(a);
  });

  it('refuse missing, extra and non-string labels, and values that are not finite', () => {
    const { counter, histogram } = both();
    expect(() => counter.with({ route: '/a' } as never)).toThrow(/label "tenant" is missing/);
    expect(() => counter.with({ route: '/a', tenant: 't', extra: 'x' } as never)).toThrow(/labels must be exactly route, tenant/);
    expect(() => counter.with({ route: '/a', tenant: 1 } as never)).toThrow(/label "tenant" is missing/);
    const series = histogram.with({ route: '/a', tenant: 't' });
    expect(() => series.observe(Number.NaN)).toThrow(TypeError);
    expect(() => series.observe(Number.POSITIVE_INFINITY)).toThrow(TypeError);
    expect(series.count).toBe(0);
    const registry = new Registry();
    expect(() => new HistogramFamily({ name: 'y', help: 'y', labelNames: [], buckets: [1, 1], registers: [registry] })).toThrow(/increasing/);
    expect(registry.getSingleMetric('y')).toBeUndefined();
  });

  it('go back to zero on the registry reset and keep counting in the series already bound', async () => {
    const m = both();
    const requests = m.counter.with({ route: '/a', tenant: 't' });
    const duration = m.histogram.with({ route: '/a', tenant: 't' });
    requests.inc();
    duration.observe(0.2);
    m.ours.resetMetrics();
    requests.inc();
    duration.observe(3);
    const text = await m.ours.metrics();
    expect(text).toContain('x_requests_total{route="/a",tenant="t"} 1\n');
    expect(text).toContain('x_duration_seconds_bucket{le="0.25",route="/a",tenant="t"} 0\n');
    expect(text).toContain('x_duration_seconds_bucket{le="5",route="/a",tenant="t"} 1\n');
    expect(text).toContain('x_duration_seconds_sum{route="/a",tenant="t"} 3\n');
    expect(text).toContain('x_duration_seconds_count{route="/a",tenant="t"} 1\n');
  });

  it('share a registry with prom-client metrics and refuse a second metric of the same name', async () => {
    const registry = new Registry();
    new CounterFamily({ name: 'z_total', help: 'Z.', labelNames: ['k'], registers: [registry] }).with({ k: 'v' }).inc();
    new Counter({ name: 'w_total', help: 'W.', registers: [registry] }).inc(2);
    expect(await registry.metrics()).toBe('# HELP z_total Z.\n# TYPE z_total counter\nz_total{k="v"} 1\n\n# HELP w_total W.\n# TYPE w_total counter\nw_total 2\n');
    expect(() => new Counter({ name: 'z_total', help: 'again', registers: [registry] })).toThrow(/already been registered/);
    expect(() => new CounterFamily({ name: 'w_total', help: 'again', labelNames: [], registers: [registry] })).toThrow(/already been registered/);
  });
});
