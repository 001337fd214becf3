import { describe, expect, it } from 'vitest';
import type { JobStore } from '../src/jobs/job-store.js';
import { MemoryJobStore } from '../src/jobs/memory-job-store.js';

/**
 * The contract every job store meets. The Redis store runs the same suite.
 */
export function jobStoreContract(name: string, make: (opts: { ttlMs: number; now: () => number }) => Promise<JobStore>) {
  describe(`${name} job store contract`, () => {
    it('records and returns the owner of a request id', async () => {
      let now = 1_000;
      const store = await make({ ttlMs: 10_000, now: () => now });
      await store.record('req-1', 'team-a');
      await store.record('req-2', 'team-b');
      expect(await store.ownerOf('req-1')).toBe('team-a');
      expect(await store.ownerOf('req-2')).toBe('team-b');
      expect(await store.ownerOf('req-3')).toBeUndefined();
      now += 1;
      expect(await store.ready()).toBe(true);
      await store.close();
    });

    it('forgets a job after its TTL', async () => {
      let now = 1_000;
      const store = await make({ ttlMs: 10_000, now: () => now });
      await store.record('req-1', 'team-a');
      now += 9_999;
      expect(await store.ownerOf('req-1')).toBe('team-a');
      now += 1;
      expect(await store.ownerOf('req-1')).toBeUndefined();
      await store.close();
    });
  });
}

jobStoreContract('memory', async ({ ttlMs, now }) => new MemoryJobStore({ ttlMs, now, maxEntries: 1_000 }));

describe('memory job store bounds', () => {
  it('forgets the oldest jobs beyond maxEntries and says so', async () => {
    const evicted: number[] = [];
    const store = new MemoryJobStore({ ttlMs: 60_000, maxEntries: 1_000, onEvict: (n) => evicted.push(n) });
    for (let i = 0; i < 1_005; i++) await store.record(`req-${i}`, 'team-a');
    expect(store.size).toBe(1_000);
    expect(await store.ownerOf('req-0')).toBeUndefined();
    expect(await store.ownerOf('req-4')).toBeUndefined();
    expect(await store.ownerOf('req-5')).toBe('team-a');
    expect(await store.ownerOf('req-1004')).toBe('team-a');
    expect(evicted.reduce((a, b) => a + b, 0)).toBe(5);
  });

  it('drops expired entries as new ones arrive, so memory follows the live set', async () => {
    let now = 0;
    const store = new MemoryJobStore({ ttlMs: 100, maxEntries: 1_000_000, now: () => now });
    for (let i = 0; i < 500; i++) {
      await store.record(`req-${i}`, 'team-a');
      now += 1;
    }
    expect(store.size).toBe(100);
  });
});
