import { describe, expect, it } from 'vitest';
import { MemoryJobStore } from '../src/jobs/memory-job-store.js';
import { jobStoreContract } from './support/job-store-contract.js';

jobStoreContract('memory', async (ttlMs) => {
  let now = 1_000;
  const store = new MemoryJobStore({ ttlMs, now: () => now, maxEntries: 1_000 });
  return { store, advance: async (ms) => void (now += ms), now: () => now };
});

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

describe('memory job store check schedule', () => {
  it('lets go of a job that expired when it is read, even if nothing ever checks the schedule', async () => {
    let now = 1_000;
    const store = new MemoryJobStore({ ttlMs: 300, now: () => now, maxEntries: 1_000 });
    for (const id of ['a', 'b', 'c']) await store.record(id, 'team-a', 1);
    expect(store.scheduled).toBe(3);
    await store.mark('a', 'settled');
    expect(store.scheduled).toBe(2);
    now += 400;
    expect(await store.ownerOf('b')).toBeUndefined();
    expect(await store.job('c')).toBeUndefined();
    expect(store.size).toBe(1);
    expect(store.scheduled).toBe(0);
  });
});
