import { describe, expect, it } from 'vitest';
import { LogSampler } from '../src/log-sampler.js';

describe('LogSampler', () => {
  it('lets one line of each kind through per interval, and the next says how many were left out', () => {
    let now = 1_000;
    const sampler = new LogSampler(10_000, () => now);
    expect(sampler.take('store')).toEqual({ log: true, suppressed: 0 });
    expect(sampler.take('store')).toEqual({ log: false });
    expect(sampler.take('circuit')).toEqual({ log: true, suppressed: 0 });
    now += 9_999;
    expect(sampler.take('store')).toEqual({ log: false });
    now += 1;
    expect(sampler.take('store')).toEqual({ log: true, suppressed: 2 });
    now += 60_000;
    expect(sampler.take('store')).toEqual({ log: true, suppressed: 0 });
    expect(sampler.take('circuit')).toEqual({ log: true, suppressed: 0 });
  });
});
