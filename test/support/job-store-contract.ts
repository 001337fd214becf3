import { describe, expect, it } from 'vitest';
import { OwnedByAnotherTenant, type JobStore } from '../../src/jobs/job-store.js';

export interface ContractSubject {
  store: JobStore;
  /** Lets `ms` of store time pass: a fake clock for memory, real time for Redis. */
  advance(ms: number): Promise<void>;
  /** The store's time now (epoch ms). */
  now(): number;
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

    it('keeps the time images were charged only when it was another UTC day than the record', async () => {
      const { store, now, cleanup } = await make(60_000);
      const dayBefore = Math.floor(now() / 86_400_000) * 86_400_000 - 100;
      await store.record('req-midnight', 'team-a', 2, ['day', 'month'], dayBefore);
      await store.record('req-same-day', 'team-a', 2, ['day'], now());
      await store.record('req-uncharged', 'team-a');
      expect(await store.job('req-midnight')).toMatchObject({ images: 2, charged: ['day', 'month'], chargedAt: dayBefore });
      expect(await store.job('req-same-day')).not.toHaveProperty('chargedAt');
      expect(await store.job('req-uncharged')).not.toHaveProperty('chargedAt');
      await cleanup?.();
    });

    it('keeps the first owner when the same id is recorded again by the same tenant', async () => {
      const { store, cleanup } = await make(60_000);
      await store.record('req-1', 'team-a');
      await store.record('req-1', 'team-a');
      expect(await store.ownerOf('req-1')).toBe('team-a');
      await cleanup?.();
    });

    it("never hands a job to another tenant: a second record of its id by someone else is refused, the first kept", async () => {
      const { store, cleanup } = await make(60_000);
      await store.record('req-twice', 'team-a', 1);
      await expect(store.record('req-twice', 'team-b', 3)).rejects.toBeInstanceOf(OwnedByAnotherTenant);
      expect(await store.job('req-twice')).toMatchObject({ tenantId: 'team-a', images: 1 });
      await store.record('req-twice', 'team-a', 1);
      // Once the first has expired, the id is free again.
      const short = await make(50);
      await short.store.record('req-lapsed', 'team-a');
      await short.advance(80);
      await short.store.record('req-lapsed', 'team-b');
      expect(await short.store.ownerOf('req-lapsed')).toBe('team-b');
      await short.cleanup?.();
      await cleanup?.();
    });

    it('claims an idempotency key once, then returns what it holds, and frees it on release', async () => {
      const { store, cleanup } = await make(60_000);
      expect(await store.claimIdempotencyKey('t:k1', 'fp-1', 60_000, 'a-1')).toBeUndefined();
      expect(await store.claimIdempotencyKey('t:k1', 'fp-2', 60_000, 'a-2')).toEqual({ state: 'pending', fingerprint: 'fp-1', attempt: 'a-1' });
      // Only the attempt holding the claim releases it.
      await store.releaseIdempotencyKey('t:k1', 'a-2');
      expect(await store.claimIdempotencyKey('t:k1', 'fp-1', 60_000, 'a-3')).toMatchObject({ state: 'pending', attempt: 'a-1' });
      await store.releaseIdempotencyKey('t:k1', 'a-1');
      expect(await store.claimIdempotencyKey('t:k1', 'fp-1', 60_000, 'a-4')).toBeUndefined();
      const done = { state: 'done' as const, fingerprint: 'fp-1', statusCode: 200, body: { request_id: 'r-1', status: 'IN_QUEUE' } };
      expect(await store.idempotencyRecord('t:k1')).toEqual({ state: 'pending', fingerprint: 'fp-1', attempt: 'a-4' });
      await store.completeIdempotencyKey('t:k1', done, 60_000);
      expect(await store.idempotencyRecord('t:k1')).toEqual(done);
      expect(await store.idempotencyRecord('t:unknown')).toBeUndefined();
      expect(await store.claimIdempotencyKey('t:k1', 'fp-1', 60_000, 'a-5')).toEqual(done);
      // An answer is never released, not even by the attempt that claimed the key.
      await store.releaseIdempotencyKey('t:k1', 'a-4');
      expect(await store.claimIdempotencyKey('t:k1', 'fp-1', 60_000, 'a-6')).toEqual(done);
      await cleanup?.();
    });

    it('lets a claim expire after its TTL', async () => {
      const { store, advance, cleanup } = await make(60_000);
      expect(await store.claimIdempotencyKey('t:k2', 'fp', 300, 'a')).toBeUndefined();
      await advance(150);
      expect(await store.claimIdempotencyKey('t:k2', 'fp', 300, 'a')).toMatchObject({ state: 'pending' });
      await advance(250);
      expect(await store.claimIdempotencyKey('t:k2', 'fp', 300, 'a')).toBeUndefined();
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

    it('remembers what a job was submitted for, and sets each mark once', async () => {
      const { store, cleanup } = await make(60_000);
      const before = Date.now() - 5_000;
      await store.record('req-m', 'team-a', 3, ['day']);
      await store.record('req-n', 'team-a', 2);
      const job = await store.job('req-m');
      expect(job).toMatchObject({ tenantId: 'team-a', images: 3, charged: ['day'], cancelled: false, settled: false });
      expect(await store.job('req-n')).toMatchObject({ images: 2, charged: [] });
      expect(job!.submittedAt).toBeGreaterThan(0);
      if (store.kind === 'redis') expect(job!.submittedAt).toBeGreaterThanOrEqual(before);
      expect(await store.mark('req-m', 'cancelled')).toBe(true);
      expect(await store.mark('req-m', 'cancelled')).toBe(false);
      expect(await store.mark('req-m', 'settled')).toBe(true);
      expect(await store.mark('req-m', 'settled')).toBe(false);
      expect(await store.job('req-m')).toMatchObject({ cancelled: true, settled: true, images: 3 });
      expect(await store.job('req-unknown')).toBeUndefined();
      expect(await store.mark('req-unknown', 'settled')).toBe(false);
      expect(await store.job('req-unknown')).toBeUndefined();
      await cleanup?.();
    });

    it('lets only one of many concurrent callers set a mark', async () => {
      const { store, cleanup } = await make(60_000);
      await store.record('req-race', 'team-a', 1);
      const wins = await Promise.all(Array.from({ length: 20 }, () => store.mark('req-race', 'settled')));
      expect(wins.filter(Boolean)).toHaveLength(1);
      await cleanup?.();
    });

    it('schedules unsettled jobs for a check: due after the interval, to one caller each, settled ones dropped', async () => {
      const { store, advance, now, cleanup } = await make(60_000);
      await store.record('c-1', 'team-a', 1);
      await store.record('c-2', 'team-b', 1);
      expect(await store.dueForCheck(now(), 200, 10)).toEqual([]);
      await advance(250);
      const takers = await Promise.all([store.dueForCheck(now(), 200, 10), store.dueForCheck(now(), 200, 10)]);
      expect(takers.flat().sort()).toEqual(['c-1', 'c-2']);
      // Just checked: not due again before another interval.
      expect(await store.dueForCheck(now(), 200, 10)).toEqual([]);
      expect(await store.mark('c-1', 'settled')).toBe(true);
      await advance(250);
      expect(await store.dueForCheck(now(), 200, 10)).toEqual(['c-2']);
      // At most `limit` at a time, the longest unchecked first.
      await store.record('c-3', 'team-a', 1);
      await advance(250);
      expect(await store.dueForCheck(now(), 200, 1)).toEqual(['c-2']);
      expect(await store.dueForCheck(now(), 200, 1)).toEqual(['c-3']);
      await cleanup?.();
    });

    it('drops an expired job from the check schedule', async () => {
      const { store, advance, now, cleanup } = await make(300);
      await store.record('c-x', 'team-a', 1);
      await advance(400);
      expect(await store.dueForCheck(now(), 100, 10)).toEqual([]);
      await cleanup?.();
    });

    it('does not bring back an expired job by marking it', async () => {
      const { store, advance, cleanup } = await make(300);
      await store.record('req-x', 'team-a', 1);
      await advance(400);
      expect(await store.mark('req-x', 'settled')).toBe(false);
      expect(await store.job('req-x')).toBeUndefined();
      await cleanup?.();
    });
  });
}
