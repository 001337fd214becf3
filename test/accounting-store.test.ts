import fc from 'fast-check';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DAY_MS, dayRange, nextUtcMidnight, nextUtcMonth, utcDay, utcMonth, type QuotaTicket } from '../src/accounting/accounting-store.js';
import { MemoryAccountingStore } from '../src/accounting/memory-accounting-store.js';
import { RedisAccountingStore } from '../src/accounting/redis-accounting-store.js';
import { createRedis, waitForRedis } from '../src/redis.js';
import { accountingStoreContract } from './support/accounting-store-contract.js';
import { REDIS_URL, redisAvailable, skipReason, uniquePrefix } from './support/redis.js';

const silent = { info() {}, warn() {}, error() {}, debug() {}, fatal() {}, trace() {}, child: () => silent, level: 'silent', silent() {} };
const JAN_15 = Date.UTC(2031, 0, 15, 12);

/** A connection the way the app makes it: its own key prefix and a command timeout. */
async function connect(prefix: string): Promise<Redis> {
  const redis = createRedis({ url: REDIS_URL, keyPrefix: prefix, commandTimeoutMs: 1_000 }, silent as never);
  await waitForRedis(redis, 2_000);
  return redis;
}

/** Deletes every key under `prefix` (KEYS is fine on a test database). */
async function dropPrefix(redis: Redis, prefix: string): Promise<void> {
  const keys = await redis.keys(`${prefix}*`);
  // KEYS returns full names; DEL through a prefixed client would prefix them again.
  if (keys.length) await redis.del(...keys.map((k) => k.slice(prefix.length)));
}

accountingStoreContract('memory', async (options) => ({ store: new MemoryAccountingStore(options) }));

accountingStoreContract(
  `redis${skipReason}`,
  async (options) => {
    const prefix = uniquePrefix();
    const redis = await connect(prefix);
    return {
      store: new RedisAccountingStore(redis, options),
      cleanup: async () => {
        await dropPrefix(redis, prefix);
        await redis.quit();
      },
    };
  },
  !redisAvailable,
);

describe('UTC calendar helpers', () => {
  it('name the UTC day and month and find the next boundaries, across years and leap days', () => {
    const t = Date.UTC(2028, 1, 28, 23, 59, 59, 999);
    expect([utcDay(t), utcMonth(t)]).toEqual(['2028-02-28', '2028-02']);
    expect(nextUtcMidnight(t)).toBe(Date.UTC(2028, 1, 29));
    expect(nextUtcMidnight(Date.UTC(2028, 1, 29))).toBe(Date.UTC(2028, 2, 1));
    expect(nextUtcMonth(t)).toBe(Date.UTC(2028, 2, 1));
    expect(nextUtcMonth(Date.UTC(2031, 11, 31, 23))).toBe(Date.UTC(2032, 0, 1));
    expect(dayRange('2028-02-27', '2028-03-01')).toEqual(['2028-02-27', '2028-02-28', '2028-02-29', '2028-03-01']);
    expect(dayRange('2028-03-01', '2028-02-27')).toEqual([]);
    expect(() => dayRange('2029-02-29', '2029-03-01')).toThrow(RangeError);
  });
});

describe('memory accounting store bounds', () => {
  it('forgets quota counters once their window and its grace have passed', async () => {
    const store = new MemoryAccountingStore({ retentionDays: 30 });
    await store.reserveImages('team-a', 1, { imagesPerDay: 5, imagesPerMonth: 50 }, JAN_15);
    await store.reserveImages('team-b', 1, { imagesPerDay: 5 }, JAN_15);
    expect(store.sizes.quotaCounters).toBe(3);
    // The day counters end at midnight plus 2 days; the month counter lives until March 3.
    await store.quotaState('team-a', { imagesPerDay: 5 }, Date.UTC(2031, 0, 18));
    expect(store.sizes.quotaCounters).toBe(1);
    await store.quotaState('team-a', { imagesPerDay: 5 }, Date.UTC(2031, 1, 3));
    expect(store.sizes.quotaCounters).toBe(0);
  });

  it('forgets usage days past the retention as newer usage arrives', async () => {
    const store = new MemoryAccountingStore({ retentionDays: 3 });
    await store.addUsage('team-a', JAN_15, { submitted: 1 });
    await store.addUsage('team-a', JAN_15 + DAY_MS, { submitted: 1 });
    // A day is kept for retentionDays after it ends: January 15 until January 19, 00:00 UTC.
    await store.addUsage('team-a', Date.UTC(2031, 0, 18, 23, 59), { submitted: 1 });
    expect((await store.usage(undefined, '2031-01-01', '2031-01-31')).map((r) => r.day)).toEqual(['2031-01-15', '2031-01-16', '2031-01-18']);
    await store.addUsage('team-a', Date.UTC(2031, 0, 19), { submitted: 1 });
    expect((await store.usage(undefined, '2031-01-01', '2031-01-31')).map((r) => r.day)).toEqual(['2031-01-16', '2031-01-18', '2031-01-19']);
    expect(store.sizes.usageDays).toBe(3);
  });

  it('keeps no entry for a tenant whose slots are all gone', async () => {
    const store = new MemoryAccountingStore({ retentionDays: 3, maxSlotAgeMs: 60_000 });
    await store.acquireSlot('team-a', 's1', 2, JAN_15);
    await store.acquireSlot('team-b', 's1', 2, JAN_15);
    await store.releaseSlot('team-a', 's1');
    expect(store.sizes.slotTenants).toBe(1);
    await store.staleSlots(1_000, JAN_15 + 60_001, 10);
    expect(store.sizes.slotTenants).toBe(0);
  });

  it('keeps used within [0, cap] and equal to accepted reservations minus refunds, under any sequence', async () => {
    const caps = { imagesPerDay: 10, imagesPerMonth: 25 };
    const step = fc.oneof(
      fc.record({ kind: fc.constant('reserve' as const), tenant: fc.constantFrom('team-a', 'team-b'), images: fc.integer({ min: 0, max: 6 }) }),
      fc.record({ kind: fc.constant('refund' as const), pick: fc.nat() }),
      fc.record({ kind: fc.constant('wait' as const), ms: fc.integer({ min: 0, max: 2 * DAY_MS }) }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(step, { maxLength: 60 }), async (steps) => {
        const store = new MemoryAccountingStore({ retentionDays: 30 });
        const expected = new Map<string, number>();
        const add = (key: string, n: number) => expected.set(key, (expected.get(key) ?? 0) + n);
        const open: QuotaTicket[] = [];
        let now = Date.UTC(2031, 0, 20);
        for (const s of steps) {
          if (s.kind === 'wait') now += s.ms;
          else if (s.kind === 'refund' && open.length > 0) {
            const [ticket] = open.splice(s.pick % open.length, 1);
            if (!ticket) continue;
            await store.refundImages(ticket);
            add(`${ticket.tenantId}:${ticket.day}`, -ticket.images);
            add(`${ticket.tenantId}:${ticket.month}`, -ticket.images);
          } else if (s.kind === 'reserve') {
            const day = `${s.tenant}:${utcDay(now)}`;
            const month = `${s.tenant}:${utcMonth(now)}`;
            const fits = (expected.get(day) ?? 0) + s.images <= caps.imagesPerDay && (expected.get(month) ?? 0) + s.images <= caps.imagesPerMonth;
            const result = await store.reserveImages(s.tenant, s.images, caps, now);
            expect(result.ok).toBe(fits);
            if (result.ok) {
              open.push(result.ticket);
              add(day, s.images);
              add(month, s.images);
            }
          }
          for (const tenant of ['team-a', 'team-b']) {
            const [day, month] = await store.quotaState(tenant, caps, now);
            expect(day?.used).toBe(expected.get(`${tenant}:${utcDay(now)}`) ?? 0);
            expect(month?.used).toBe(expected.get(`${tenant}:${utcMonth(now)}`) ?? 0);
            for (const w of [day, month]) expect(w && w.used >= 0 && w.used <= w.limit).toBe(true);
          }
        }
      }),
      { numRuns: 150 },
    );
  });
});

describe.skipIf(!redisAvailable)(`redis accounting store shared by replicas${skipReason}`, () => {
  const prefix = uniquePrefix();
  let one: Redis;
  let two: Redis;
  let replicas: [RedisAccountingStore, RedisAccountingStore];

  beforeAll(async () => {
    one = await connect(prefix);
    two = await connect(prefix);
    replicas = [new RedisAccountingStore(one, { retentionDays: 30 }), new RedisAccountingStore(two, { retentionDays: 30 })];
  });
  afterAll(async () => {
    await dropPrefix(one, prefix);
    await one.quit();
    await two.quit();
  });

  it('accepts exactly 10 of 50 concurrent one-image reservations against imagesPerDay=10 on two connections', async () => {
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => replicas[i % 2]!.reserveImages('team-race', 1, { imagesPerDay: 10, imagesPerMonth: 1_000 }, JAN_15)));
    expect(results.filter((r) => r.ok)).toHaveLength(10);
    expect(await replicas[1].quotaState('team-race', { imagesPerDay: 10, imagesPerMonth: 1_000 }, JAN_15)).toMatchObject([{ used: 10 }, { used: 10 }]);
  });

  it('grants exactly 5 of 40 concurrent slot acquisitions with max=5 on two connections', async () => {
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => replicas[i % 2]!.acquireSlot('team-race', `slot-${i}`, 5, JAN_15)));
    expect(results.filter((r) => r.ok)).toHaveLength(5);
    expect(await replicas[0].slotsInUse('team-race')).toBe(5);
  });

  it('lets concurrent sweepers on two connections split stale slots without picking any twice', async () => {
    for (let i = 0; i < 12; i++) await replicas[0].acquireSlot(`team-sweep-${i % 3}`, `job-${i}`, 10, JAN_15);
    const [a, b] = await Promise.all(replicas.map((r) => r.staleSlots(1_000, JAN_15 + 5_000, 12)));
    const picked = [...a!, ...b!].map((s) => `${s.tenantId}/${s.slotId}`);
    expect(new Set(picked).size).toBe(picked.length);
    expect(picked.filter((p) => p.startsWith('team-sweep-')).sort()).toEqual(Array.from({ length: 12 }, (_, i) => `team-sweep-${i % 3}/job-${i}`).sort());
  });

  it('sets an expiry on every key it writes but the slot index', async () => {
    const store = replicas[0];
    await store.reserveImages('team-ttl', 2, { imagesPerDay: 5, imagesPerMonth: 10 }, Date.now());
    await store.addUsage('team-ttl', Date.now(), { submitted: 1, inferenceSeconds: 0.5 });
    await store.acquireSlot('team-ttl', 'job-1', 1, Date.now());
    const keys = (await one.keys(`${prefix}*`)).map((k) => k.slice(prefix.length));
    const day = utcDay(Date.now());
    expect(keys).toEqual(
      expect.arrayContaining([
        `quota:team-ttl:d:${day}`,
        `quota:team-ttl:m:${utcMonth(Date.now())}`,
        `usage:${day}:tenant:team-ttl`,
        `usage:${day}:tenants`,
        'slots:tenant:team-ttl',
        'slots:tenant:team-ttl:taken',
        'slots:tenants',
      ]),
    );
    const ttls = await Promise.all(keys.map(async (k) => [k, await one.pttl(k)] as const));
    expect(ttls.filter(([, ttl]) => ttl < 0).map(([k]) => k)).toEqual(['slots:tenants']);
    const ttl = new Map(ttls);
    expect(ttl.get(`quota:team-ttl:d:${day}`)).toBeGreaterThan(2 * DAY_MS - 60_000);
    expect(ttl.get(`quota:team-ttl:d:${day}`)).toBeLessThanOrEqual(3 * DAY_MS);
    expect(ttl.get(`usage:${day}:tenant:team-ttl`)).toBeGreaterThan(30 * DAY_MS - 60_000);
    expect(ttl.get('slots:tenant:team-ttl')).toBeLessThanOrEqual(DAY_MS);
  });

  it('cleans a tenant whose slot keys expired out of the slot index on the next sweep', async () => {
    await replicas[0].acquireSlot('team-gone', 'job-1', 1, JAN_15);
    await one.del('slots:tenant:team-gone', 'slots:tenant:team-gone:taken');
    expect(await one.zscore('slots:tenants', 'team-gone')).not.toBeNull();
    await replicas[1].staleSlots(1_000, JAN_15 + 5_000, 100);
    expect(await one.zscore('slots:tenants', 'team-gone')).toBeNull();
  });
});
