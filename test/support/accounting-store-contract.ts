import { describe, expect, it } from 'vitest';
import { DAY_MS, type AccountingStore, type AccountingStoreOptions, type Reservation } from '../../src/accounting/accounting-store.js';

export interface AccountingSubject {
  store: AccountingStore;
  cleanup?(): Promise<void>;
}

/** A store made for one test; every time it sees comes from the test's own clock values. */
export type MakeAccountingStore = (options: AccountingStoreOptions) => Promise<AccountingSubject>;

const HOUR_MS = 3_600_000;
/** Mid-month, mid-day: the next day and the next month are different instants. */
const JAN_15 = Date.UTC(2031, 0, 15, 12);
const OPTIONS: AccountingStoreOptions = { retentionDays: 30, maxSlotAgeMs: HOUR_MS };

function ticketOf(r: Reservation) {
  if (!r.ok) throw new Error(`expected an accepted reservation, got ${JSON.stringify(r)}`);
  return r.ticket;
}

/** The contract every accounting store meets; run against each implementation. */
export function accountingStoreContract(name: string, make: MakeAccountingStore, skip = false) {
  /** Runs `body` against a fresh store and always cleans up after it. */
  const withStore = (body: (store: AccountingStore) => Promise<void>) => async () => {
    const { store, cleanup } = await make(OPTIONS);
    try {
      await body(store);
    } finally {
      await store.close();
      await cleanup?.();
    }
  };

  describe.skipIf(skip)(`${name} accounting store contract: quotas`, () => {
    it('reserves within both caps and reports each window with its reset time', withStore(async (store) => {
      const caps = { imagesPerDay: 10, imagesPerMonth: 100 };
      const first = await store.reserveImages('team-a', 4, caps, JAN_15);
      expect(first).toEqual({
        ok: true,
        windows: [
          { window: 'day', limit: 10, used: 4, resetsAt: Date.UTC(2031, 0, 16) },
          { window: 'month', limit: 100, used: 4, resetsAt: Date.UTC(2031, 1, 1) },
        ],
        ticket: { tenantId: 'team-a', images: 4, day: '2031-01-15', month: '2031-01', charged: ['day', 'month'] },
      });
      expect(await store.reserveImages('team-a', 6, caps, JAN_15 + 1_000)).toMatchObject({ ok: true, windows: [{ used: 10 }, { used: 10 }] });
      expect(await store.quotaState('team-a', caps, JAN_15 + 2_000)).toMatchObject([{ window: 'day', used: 10 }, { window: 'month', used: 10 }]);
      expect(await store.quotaState('team-b', caps, JAN_15)).toMatchObject([{ used: 0 }, { used: 0 }]);
    }));

    it('refuses a reservation over the day cap without charging the month, and over the month cap without charging the day', withStore(async (store) => {
      const caps = { imagesPerDay: 5, imagesPerMonth: 8 };
      ticketOf(await store.reserveImages('team-a', 4, caps, JAN_15));
      const overDay = await store.reserveImages('team-a', 2, caps, JAN_15);
      expect(overDay).toEqual({
        ok: false,
        exceeded: { window: 'day', limit: 5, used: 4, resetsAt: Date.UTC(2031, 0, 16) },
        windows: [
          { window: 'day', limit: 5, used: 4, resetsAt: Date.UTC(2031, 0, 16) },
          { window: 'month', limit: 8, used: 4, resetsAt: Date.UTC(2031, 1, 1) },
        ],
      });
      expect(await store.quotaState('team-a', caps, JAN_15)).toMatchObject([{ used: 4 }, { used: 4 }]);

      const nextDay = JAN_15 + DAY_MS;
      ticketOf(await store.reserveImages('team-a', 4, caps, nextDay));
      const overMonth = await store.reserveImages('team-a', 1, caps, nextDay);
      expect(overMonth).toMatchObject({ ok: false, exceeded: { window: 'month', limit: 8, used: 8, resetsAt: Date.UTC(2031, 1, 1) } });
      expect(await store.quotaState('team-a', caps, nextDay)).toMatchObject([{ window: 'day', used: 4 }, { window: 'month', used: 8 }]);
    }));

    it('names the month as exceeded when both caps would be, since nothing passes before it resets', withStore(async (store) => {
      const caps = { imagesPerDay: 3, imagesPerMonth: 3 };
      ticketOf(await store.reserveImages('team-a', 3, caps, JAN_15));
      expect(await store.reserveImages('team-a', 1, caps, JAN_15)).toMatchObject({ ok: false, exceeded: { window: 'month', used: 3 } });
    }));

    it('accepts 0 images even at a full or zero cap, charging nothing', withStore(async (store) => {
      ticketOf(await store.reserveImages('team-a', 2, { imagesPerDay: 2 }, JAN_15));
      const zero = await store.reserveImages('team-a', 0, { imagesPerDay: 2 }, JAN_15);
      expect(zero).toMatchObject({ ok: true, windows: [{ window: 'day', used: 2 }], ticket: { images: 0, charged: [] } });
      expect(await store.reserveImages('team-b', 0, { imagesPerDay: 0 }, JAN_15)).toMatchObject({ ok: true, windows: [{ limit: 0, used: 0 }] });
      expect(await store.reserveImages('team-b', 1, { imagesPerDay: 0 }, JAN_15)).toMatchObject({ ok: false, exceeded: { window: 'day', limit: 0 } });
    }));

    it('gives a refund back to the windows the ticket charged, never below 0', withStore(async (store) => {
      const caps = { imagesPerDay: 10, imagesPerMonth: 10 };
      const three = ticketOf(await store.reserveImages('team-a', 3, caps, JAN_15));
      ticketOf(await store.reserveImages('team-a', 2, caps, JAN_15));
      await store.refundImages(three);
      expect(await store.quotaState('team-a', caps, JAN_15)).toMatchObject([{ used: 2 }, { used: 2 }]);
      await store.refundImages(three);
      expect(await store.quotaState('team-a', caps, JAN_15)).toMatchObject([{ used: 0 }, { used: 0 }]);
      // Floored, not negative: the full cap fits again, and no more.
      ticketOf(await store.reserveImages('team-a', 10, caps, JAN_15));
      expect(await store.reserveImages('team-a', 1, caps, JAN_15)).toMatchObject({ ok: false });
    }));

    it('refunds a ticket of an earlier day to that day and to its month', withStore(async (store) => {
      const caps = { imagesPerDay: 10, imagesPerMonth: 20 };
      const yesterday = ticketOf(await store.reserveImages('team-a', 3, caps, JAN_15));
      ticketOf(await store.reserveImages('team-a', 4, caps, JAN_15 + DAY_MS));
      await store.refundImages(yesterday);
      expect(await store.quotaState('team-a', caps, JAN_15 + DAY_MS)).toMatchObject([{ window: 'day', used: 4 }, { window: 'month', used: 4 }]);
      expect(await store.quotaState('team-a', caps, JAN_15)).toMatchObject([{ window: 'day', used: 0 }, { window: 'month', used: 4 }]);
    }));

    it('starts a new day at UTC midnight and a new month on the first at 00:00 UTC', withStore(async (store) => {
      const caps = { imagesPerDay: 3, imagesPerMonth: 5 };
      const jan30Last = Date.UTC(2031, 0, 30, 23, 59, 59, 999);
      ticketOf(await store.reserveImages('team-a', 3, caps, jan30Last));
      expect(await store.reserveImages('team-a', 1, caps, jan30Last)).toMatchObject({ ok: false, exceeded: { window: 'day', resetsAt: jan30Last + 1 } });

      const jan31Last = jan30Last + DAY_MS;
      const onJan31 = await store.reserveImages('team-a', 2, caps, jan30Last + 1);
      expect(onJan31).toMatchObject({ ok: true, windows: [{ window: 'day', used: 2, resetsAt: jan30Last + 1 + DAY_MS }, { window: 'month', used: 5, resetsAt: jan31Last + 1 }] });
      expect(await store.reserveImages('team-a', 1, caps, jan31Last)).toMatchObject({ ok: false, exceeded: { window: 'month', resetsAt: Date.UTC(2031, 1, 1) } });

      const feb1 = jan31Last + 1;
      const inFebruary = await store.reserveImages('team-a', 1, caps, feb1);
      expect(inFebruary).toEqual({
        ok: true,
        windows: [
          { window: 'day', limit: 3, used: 1, resetsAt: Date.UTC(2031, 1, 2) },
          { window: 'month', limit: 5, used: 1, resetsAt: Date.UTC(2031, 2, 1) },
        ],
        ticket: { tenantId: 'team-a', images: 1, day: '2031-02-01', month: '2031-02', charged: ['day', 'month'] },
      });
      // December rolls over into the next year.
      expect(await store.quotaState('team-a', caps, Date.UTC(2031, 11, 31, 8))).toMatchObject([{ resetsAt: Date.UTC(2032, 0, 1) }, { resetsAt: Date.UTC(2032, 0, 1) }]);
    }));

    it('neither charges nor reports a window without a cap', withStore(async (store) => {
      expect(await store.reserveImages('team-a', 5, {}, JAN_15)).toMatchObject({ ok: true, windows: [], ticket: { images: 5, charged: [] } });
      expect(await store.quotaState('team-a', {}, JAN_15)).toEqual([]);

      const dayOnly = await store.reserveImages('team-a', 3, { imagesPerDay: 10 }, JAN_15);
      expect(dayOnly).toMatchObject({ ok: true, windows: [{ window: 'day', used: 3 }], ticket: { charged: ['day'] } });
      ticketOf(await store.reserveImages('team-a', 2, { imagesPerMonth: 10 }, JAN_15));
      expect(await store.quotaState('team-a', { imagesPerDay: 10, imagesPerMonth: 10 }, JAN_15)).toMatchObject([
        { window: 'day', used: 3 },
        { window: 'month', used: 2 },
      ]);
      await store.refundImages(ticketOf(dayOnly));
      expect(await store.quotaState('team-a', { imagesPerDay: 10, imagesPerMonth: 10 }, JAN_15)).toMatchObject([
        { window: 'day', used: 0 },
        { window: 'month', used: 2 },
      ]);
    }));

    it('rejects image counts and caps that are not non-negative integers, and tenant ids with ":"', withStore(async (store) => {
      await expect(store.reserveImages('team-a', -1, { imagesPerDay: 5 }, JAN_15)).rejects.toThrow(RangeError);
      await expect(store.reserveImages('team-a', 1.5, { imagesPerDay: 5 }, JAN_15)).rejects.toThrow(RangeError);
      await expect(store.reserveImages('team-a', 1, { imagesPerDay: -1 }, JAN_15)).rejects.toThrow(RangeError);
      await expect(store.reserveImages('team:a', 1, { imagesPerDay: 5 }, JAN_15)).rejects.toThrow(RangeError);
      expect(await store.quotaState('team-a', { imagesPerDay: 5 }, JAN_15)).toMatchObject([{ used: 0 }]);
    }));
  });

  describe.skipIf(skip)(`${name} accounting store contract: concurrency slots`, () => {
    it('takes slots up to max, then refuses, per tenant; taking a held id again counts it once', withStore(async (store) => {
      expect(await store.acquireSlot('team-a', 's1', 3, JAN_15)).toEqual({ ok: true, state: { limit: 3, inUse: 1 } });
      expect(await store.acquireSlot('team-a', 's2', 3, JAN_15)).toEqual({ ok: true, state: { limit: 3, inUse: 2 } });
      expect(await store.acquireSlot('team-a', 's3', 3, JAN_15)).toEqual({ ok: true, state: { limit: 3, inUse: 3 } });
      expect(await store.acquireSlot('team-a', 's4', 3, JAN_15)).toEqual({ ok: false, state: { limit: 3, inUse: 3 } });
      expect(await store.acquireSlot('team-a', 's1', 3, JAN_15)).toEqual({ ok: true, state: { limit: 3, inUse: 3 } });
      expect(await store.acquireSlot('team-b', 's1', 1, JAN_15)).toEqual({ ok: true, state: { limit: 1, inUse: 1 } });
      expect(await store.slotsInUse('team-a')).toBe(3);
      expect(await store.slotsInUse('team-b')).toBe(1);
      expect(await store.slotsInUse('team-c')).toBe(0);
    }));

    it('frees a slot once: a second release reports false, and the freed slot can be taken', withStore(async (store) => {
      await store.acquireSlot('team-a', 's1', 2, JAN_15);
      await store.acquireSlot('team-a', 's2', 2, JAN_15);
      expect(await store.releaseSlot('team-a', 's1')).toBe(true);
      expect(await store.releaseSlot('team-a', 's1')).toBe(false);
      expect(await store.releaseSlot('team-a', 'never-held')).toBe(false);
      expect(await store.releaseSlot('team-b', 's2')).toBe(false);
      expect(await store.slotsInUse('team-a')).toBe(1);
      expect(await store.acquireSlot('team-a', 's3', 2, JAN_15)).toEqual({ ok: true, state: { limit: 2, inUse: 2 } });
    }));

    it('renames a held slot without changing the count, and ignores a slot it does not hold', withStore(async (store) => {
      await store.acquireSlot('team-a', 'pending-1', 2, JAN_15);
      await store.renameSlot('team-a', 'pending-1', 'req-1', JAN_15 + 1_000);
      expect(await store.slotsInUse('team-a')).toBe(1);
      await store.renameSlot('team-a', 'pending-unknown', 'req-2', JAN_15 + 1_000);
      expect(await store.slotsInUse('team-a')).toBe(1);
      expect(await store.releaseSlot('team-a', 'pending-1')).toBe(false);
      expect(await store.releaseSlot('team-a', 'req-1')).toBe(true);
      expect(await store.slotsInUse('team-a')).toBe(0);
    }));

    it('finds slots untouched for longer than olderThanMs across tenants, and touching them stops an immediate re-pick', withStore(async (store) => {
      await store.acquireSlot('team-a', 'a1', 5, JAN_15);
      await store.acquireSlot('team-b', 'b1', 5, JAN_15 + 10_000);
      await store.acquireSlot('team-a', 'a2', 5, JAN_15 + 50_000);
      const sorted = (slots: Array<{ tenantId: string; slotId: string }>) => slots.map((s) => `${s.tenantId}/${s.slotId}`).sort();

      const sweepAt = JAN_15 + 60_000;
      expect(sorted(await store.staleSlots(30_000, sweepAt, 10))).toEqual(['team-a/a1', 'team-b/b1']);
      expect(await store.staleSlots(30_000, sweepAt, 10)).toEqual([]);
      // Slots are found again once olderThanMs has passed since the touch; `limit` bounds each pick.
      const later = sweepAt + 30_001;
      const firstTwo = await store.staleSlots(30_000, later, 2);
      expect(firstTwo).toHaveLength(2);
      const rest = await store.staleSlots(30_000, later, 2);
      expect(sorted([...firstTwo, ...rest])).toEqual(['team-a/a1', 'team-a/a2', 'team-b/b1']);
      expect(await store.staleSlots(30_000, later, 2)).toEqual([]);
      expect(await store.staleSlots(30_000, later, 0)).toEqual([]);
      // Touched is not freed: every slot is still held.
      expect(await store.slotsInUse('team-a')).toBe(2);
    }));

    it('counts a rename as a touch', withStore(async (store) => {
      await store.acquireSlot('team-a', 'pending-1', 5, JAN_15);
      await store.renameSlot('team-a', 'pending-1', 'req-1', JAN_15 + 40_000);
      expect(await store.staleSlots(30_000, JAN_15 + 60_000, 10)).toEqual([]);
      expect(await store.staleSlots(30_000, JAN_15 + 70_001, 10)).toEqual([{ tenantId: 'team-a', slotId: 'req-1' }]);
    }));

    it('drops slots taken more than maxSlotAgeMs ago, even when they were touched since', withStore(async (store) => {
      await store.acquireSlot('team-a', 'abandoned', 1, JAN_15);
      await store.renameSlot('team-a', 'abandoned', 'abandoned-job', JAN_15 + HOUR_MS / 2);
      expect(await store.staleSlots(1_000, JAN_15 + HOUR_MS - 1, 10)).toEqual([{ tenantId: 'team-a', slotId: 'abandoned-job' }]);
      expect(await store.acquireSlot('team-a', 'fresh', 1, JAN_15 + HOUR_MS)).toMatchObject({ ok: false });
      expect(await store.acquireSlot('team-a', 'fresh', 1, JAN_15 + HOUR_MS + 1)).toEqual({ ok: true, state: { limit: 1, inUse: 1 } });
      expect(await store.releaseSlot('team-a', 'abandoned-job')).toBe(false);

      // A sweep drops them too rather than reporting them.
      await store.acquireSlot('team-b', 'abandoned', 1, JAN_15);
      expect(await store.staleSlots(1_000, JAN_15 + HOUR_MS + 1, 10)).toEqual([]);
      expect(await store.slotsInUse('team-b')).toBe(0);
      expect(await store.slotsInUse('team-a')).toBe(1);
    }));
  });

  describe.skipIf(skip)(`${name} accounting store contract: usage`, () => {
    const D1 = JAN_15;
    const D2 = JAN_15 + DAY_MS;
    const zero = { submitted: 0, images: 0, completed: 0, failed: 0, cancelled: 0, inferenceSeconds: 0 };

    it('adds usage per tenant and UTC day, and reads it back for one tenant or all, sorted by day then tenant', withStore(async (store) => {
      await store.addUsage('zeta', D1, { submitted: 1, images: 4 });
      await store.addUsage('alpha', D1 + 1_000, { submitted: 2, images: 2, cancelled: 1 });
      await store.addUsage('zeta', D1 + 2_000, { completed: 1, inferenceSeconds: 1.5 });
      await store.addUsage('zeta', D2, { failed: 1 });
      await store.addUsage('alpha', Date.UTC(2031, 0, 15, 23, 59, 59, 999), { submitted: 1 });

      expect(await store.usage('zeta', '2031-01-15', '2031-01-16')).toEqual([
        { ...zero, tenantId: 'zeta', day: '2031-01-15', submitted: 1, images: 4, completed: 1, inferenceSeconds: 1.5 },
        { ...zero, tenantId: 'zeta', day: '2031-01-16', failed: 1 },
      ]);
      expect(await store.usage(undefined, '2031-01-15', '2031-01-16')).toEqual([
        { ...zero, tenantId: 'alpha', day: '2031-01-15', submitted: 3, images: 2, cancelled: 1 },
        { ...zero, tenantId: 'zeta', day: '2031-01-15', submitted: 1, images: 4, completed: 1, inferenceSeconds: 1.5 },
        { ...zero, tenantId: 'zeta', day: '2031-01-16', failed: 1 },
      ]);
      expect(await store.usage('nobody', '2031-01-15', '2031-01-16')).toEqual([]);
    }));

    it('returns only the days of the range, both ends included', withStore(async (store) => {
      for (let i = 0; i < 5; i++) await store.addUsage('team-a', D1 + i * DAY_MS, { submitted: i + 1 });
      const days = (rows: Array<{ day: string; submitted: number }>) => rows.map((r) => `${r.day}:${r.submitted}`);
      expect(days(await store.usage(undefined, '2031-01-16', '2031-01-18'))).toEqual(['2031-01-16:2', '2031-01-17:3', '2031-01-18:4']);
      expect(days(await store.usage('team-a', '2031-01-19', '2031-01-19'))).toEqual(['2031-01-19:5']);
      expect(days(await store.usage('team-a', '2031-01-01', '2031-01-14'))).toEqual([]);
      expect(await store.usage(undefined, '2031-01-18', '2031-01-16')).toEqual([]);
    }));

    it('sums inference seconds as floats, reported to the millisecond', withStore(async (store) => {
      for (let i = 0; i < 10; i++) await store.addUsage('team-a', D1, { inferenceSeconds: 0.1 });
      await store.addUsage('team-a', D1, { inferenceSeconds: 0.2 });
      await store.addUsage('team-b', D1, { inferenceSeconds: 1 / 3 });
      await store.addUsage('team-b', D1, { inferenceSeconds: 2.0004 });
      expect(await store.usage(undefined, '2031-01-15', '2031-01-15')).toMatchObject([
        { tenantId: 'team-a', inferenceSeconds: 1.2 },
        { tenantId: 'team-b', inferenceSeconds: 2.334 },
      ]);
    }));

    it('leaves absent fields unchanged and records no row for an empty delta', withStore(async (store) => {
      await store.addUsage('team-a', D1, {});
      await store.addUsage('team-a', D1, { submitted: 0, inferenceSeconds: 0 });
      expect(await store.usage(undefined, '2031-01-15', '2031-01-15')).toEqual([]);
      await store.addUsage('team-a', D1, { images: 2 });
      await store.addUsage('team-a', D1, { completed: 1 });
      expect(await store.usage('team-a', '2031-01-15', '2031-01-15')).toEqual([{ ...zero, tenantId: 'team-a', day: '2031-01-15', images: 2, completed: 1 }]);
    }));

    it('rejects malformed days, over-long ranges and fractional counts', withStore(async (store) => {
      await expect(store.usage(undefined, '2031-1-15', '2031-01-16')).rejects.toThrow(RangeError);
      await expect(store.usage(undefined, '2031-02-30', '2031-03-01')).rejects.toThrow(RangeError);
      await expect(store.usage(undefined, '2020-01-01', '2031-01-01')).rejects.toThrow(RangeError);
      await expect(store.addUsage('team-a', D1, { images: 1.5 })).rejects.toThrow(RangeError);
      await expect(store.addUsage('team-a', D1, { inferenceSeconds: Number.NaN })).rejects.toThrow(RangeError);
      expect(await store.usage(undefined, '2031-01-15', '2031-01-15')).toEqual([]);
    }));
  });
}
