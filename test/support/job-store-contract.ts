import { describe, expect, it } from 'vitest';
import type { JobStore } from '../../src/jobs/job-store.js';

export interface ContractSubject {
  store: JobStore;
  /** Lets `ms` of store time pass: a fake clock for memory, real time for Redis. */
  advance(ms: number): Promise<void>;
  cleanup?(): Promise<void>;
}

/** The contract every job store meets; run against each implementation. */
export function jobStoreContract(name: string, make: (ttlMs: number) => Promise<ContractSubject>, skip = false) {
  describe.skipIf(skip)(`${name} job store contract`, () => {
    it('records and returns the owner of a request id, and nothing for an unknown one', async () => {
      const { store, cleanup } = await make(60_000);
      await store.record('req-1', 'team-a');
      await store.record('req-2', 'team-b');
      expect(await store.ownerOf('req-1')).toBe('team-a');
      expect(await store.ownerOf('req-2')).toBe('team-b');
      expect(await store.ownerOf('req-3')).toBeUndefined();
      expect(store.available()).toBe(true);
      expect(await store.ready()).toBe(true);
      await store.close();
      await cleanup?.();
    });

    it('keeps the first owner when the same id is recorded again by the same tenant', async () => {
      const { store, cleanup } = await make(60_000);
      await store.record('req-1', 'team-a');
      await store.record('req-1', 'team-a');
      expect(await store.ownerOf('req-1')).toBe('team-a');
      await cleanup?.();
    });

    it('claims an idempotency key once, then returns what it holds, and frees it on release', async () => {
      const { store, cleanup } = await make(60_000);
      expect(await store.claimIdempotencyKey('t:k1', 'fp-1', 60_000)).toBeUndefined();
      expect(await store.claimIdempotencyKey('t:k1', 'fp-2', 60_000)).toEqual({ state: 'pending', fingerprint: 'fp-1' });
      const done = { state: 'done' as const, fingerprint: 'fp-1', statusCode: 200, body: { request_id: 'r-1', status: 'IN_QUEUE' } };
      await store.completeIdempotencyKey('t:k1', done, 60_000);
      expect(await store.claimIdempotencyKey('t:k1', 'fp-1', 60_000)).toEqual(done);
      await store.releaseIdempotencyKey('t:k1');
      expect(await store.claimIdempotencyKey('t:k1', 'fp-3', 60_000)).toBeUndefined();
      await cleanup?.();
    });

    it('lets a claim expire after its TTL', async () => {
      const { store, advance, cleanup } = await make(60_000);
      expect(await store.claimIdempotencyKey('t:k2', 'fp', 300)).toBeUndefined();
      await advance(150);
      expect(await store.claimIdempotencyKey('t:k2', 'fp', 300)).toMatchObject({ state: 'pending' });
      await advance(250);
      expect(await store.claimIdempotencyKey('t:k2', 'fp', 300)).toBeUndefined();
      await cleanup?.();
    });

    it('forgets a job after its TTL, not before', async () => {
      const { store, advance, cleanup } = await make(300);
      await store.record('req-1', 'team-a');
      await advance(150);
      expect(await store.ownerOf('req-1')).toBe('team-a');
      await advance(250);
      expect(await store.ownerOf('req-1')).toBeUndefined();
      await cleanup?.();
    });
  });
}
