/**
 * Per-tenant accounting: image quotas per UTC day and month, concurrency slots, and daily usage
 * counters. Two implementations share this interface: memory (one process) and Redis (shared by
 * every replica, each check-and-charge atomic there). This module also holds what both must agree
 * on: the UTC calendar helpers, argument checks, and how a reservation is decided and reported.
 */

export type QuotaWindow = 'day' | 'month';

export interface QuotaCaps {
  imagesPerDay?: number;
  imagesPerMonth?: number;
}

export interface QuotaState {
  window: QuotaWindow;
  limit: number;
  used: number;
  /** epoch ms when this window resets (next UTC midnight / first of next month 00:00 UTC) */
  resetsAt: number;
}

export type Reservation =
  | { ok: true; windows: QuotaState[]; /** what refund() needs: the day and month keys charged */ ticket: QuotaTicket }
  | { ok: false; exceeded: QuotaState; windows: QuotaState[] };

export interface QuotaTicket {
  tenantId: string;
  images: number;
  day: string /* YYYY-MM-DD */;
  month: string /* YYYY-MM */;
  /**
   * The windows this ticket actually charged (only capped ones are); a refund gives back only
   * these. Absent: both.
   */
  charged?: QuotaWindow[];
}

export interface SlotState {
  limit: number;
  inUse: number;
}

export interface UsageCounters {
  submitted: number;
  images: number;
  completed: number;
  failed: number;
  cancelled: number;
  inferenceSeconds: number;
}

export interface UsageRow extends UsageCounters {
  tenantId: string;
  day: string;
}

export interface AccountingStore {
  readonly kind: 'memory' | 'redis';
  /**
   * Atomically (across replicas) charges `images` to the tenant's current UTC day and month when
   * neither cap would be exceeded; charges nothing otherwise. Windows without a cap are not
   * charged or reported. `images` may be 0 (always accepted, charges nothing). When both caps
   * would be exceeded, `exceeded` is the month: nothing can pass before it resets.
   */
  reserveImages(tenantId: string, images: number, caps: QuotaCaps, now: number): Promise<Reservation>;
  /** Gives a reservation back (cancel, upstream failure); never below 0. Idempotent per ticket is NOT required (callers call once). */
  refundImages(ticket: QuotaTicket): Promise<void>;
  /** Current quota state without charging (for headers). */
  quotaState(tenantId: string, caps: QuotaCaps, now: number): Promise<QuotaState[]>;

  /**
   * Takes a concurrency slot named `slotId` for the tenant when fewer than `max` are held; atomic
   * across replicas. A slot already held under that id is kept (ok, counted once) and touched.
   * Slots taken more than `maxSlotAgeMs` ago are dropped first.
   */
  acquireSlot(tenantId: string, slotId: string, max: number, now: number): Promise<{ ok: boolean; state: SlotState }>;
  /** Renames a held slot (a placeholder taken before submit becomes the upstream request id); touches it. Unknown `fromId`: nothing happens. */
  renameSlot(tenantId: string, fromId: string, toId: string, now: number): Promise<void>;
  /** Frees a slot; returns true when it was held (so a terminal state observed twice frees once). */
  releaseSlot(tenantId: string, slotId: string): Promise<boolean>;
  /**
   * Slots held longer than `olderThanMs` since they were taken or last touched, across all
   * tenants, at most `limit`; marks them touched (now) so that concurrent sweepers (other
   * replicas) do not all pick the same ones at once. Slots past `maxSlotAgeMs` are dropped instead.
   */
  staleSlots(olderThanMs: number, now: number, limit: number): Promise<Array<{ tenantId: string; slotId: string }>>;
  /** Slots in use for a tenant. */
  slotsInUse(tenantId: string): Promise<number>;

  /** Adds to the tenant's counters for the UTC day of `at`. Fields absent (or 0) are unchanged. */
  addUsage(tenantId: string, at: number, delta: Partial<UsageCounters>): Promise<void>;
  /** Rows for fromDay..toDay inclusive (YYYY-MM-DD, UTC), one per tenant and day that has any usage; tenantId undefined: every tenant. Sorted by day then tenant. */
  usage(tenantId: string | undefined, fromDay: string, toDay: string): Promise<UsageRow[]>;
  close(): Promise<void>;
}

export interface AccountingStoreOptions {
  /** Days a day's usage counters are kept after the day ends. */
  retentionDays: number;
  /** Hard bound on how long a slot is held, whatever touched it (ms). Default 24 h. */
  maxSlotAgeMs?: number;
}

export const DAY_MS = 86_400_000;
export const DEFAULT_MAX_SLOT_AGE_MS = DAY_MS;
/** Quota counters outlive their window by this much, so a late refund still finds them. */
export const QUOTA_GRACE_MS = 2 * DAY_MS;
/** Longest day range `usage` reads at once. */
export const MAX_USAGE_RANGE_DAYS = 1_000;

// ---- UTC calendar -------------------------------------------------------------------------

/** The last day computed, since nearly every call (one per submit) falls on the same day. */
let lastDay = { start: 0, end: 0, day: '' };

/** YYYY-MM-DD of the UTC day containing `ms`. */
export function utcDay(ms: number): string {
  if (ms >= lastDay.start && ms < lastDay.end) return lastDay.day;
  const start = Math.floor(ms / DAY_MS) * DAY_MS;
  const day = new Date(ms).toISOString().slice(0, 10);
  lastDay = { start, end: start + DAY_MS, day };
  return day;
}

/** YYYY-MM of the UTC month containing `ms`. */
export function utcMonth(ms: number): string {
  return new Date(ms).toISOString().slice(0, 7);
}

/** The next UTC midnight strictly after `ms`. */
export function nextUtcMidnight(ms: number): number {
  const d = new Date(ms);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1);
}

/** 00:00 UTC on the first day of the month after the one containing `ms`. */
export function nextUtcMonth(ms: number): number {
  const d = new Date(ms);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
}

/** Start (00:00 UTC, epoch ms) of a YYYY-MM-DD day; throws RangeError for anything else. */
export function parseUtcDay(day: string): number {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(day);
  const ms = match ? Date.UTC(Number(match[1]), Number(match[2]) - 1, Number(match[3])) : Number.NaN;
  if (!match || Number.isNaN(ms) || utcDay(ms) !== day) throw new RangeError(`not a YYYY-MM-DD day: ${day}`);
  return ms;
}

/** Every day from `from` to `to` inclusive (YYYY-MM-DD, UTC); empty when `from` is after `to`. */
export function dayRange(from: string, to: string): string[] {
  const start = parseUtcDay(from);
  const end = parseUtcDay(to);
  const days: string[] = [];
  for (let ms = start; ms <= end; ms += DAY_MS) days.push(utcDay(ms));
  return days;
}

// ---- argument checks --------------------------------------------------------------------

/** Tenant ids become part of key names: a ':' would let one tenant's keys alias another's. */
export function checkTenantId(tenantId: string): void {
  if (tenantId.length === 0 || tenantId.includes(':')) throw new RangeError(`invalid tenant id: ${JSON.stringify(tenantId)}`);
}

export function checkCount(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`${name} must be a non-negative integer, got ${value}`);
}

export function checkCaps(caps: QuotaCaps): void {
  if (caps.imagesPerDay !== undefined) checkCount('imagesPerDay', caps.imagesPerDay);
  if (caps.imagesPerMonth !== undefined) checkCount('imagesPerMonth', caps.imagesPerMonth);
}

/** The days `usage` reads, bounded so one request cannot read without end. */
export function usageDays(fromDay: string, toDay: string): string[] {
  const span = (parseUtcDay(toDay) - parseUtcDay(fromDay)) / DAY_MS + 1;
  if (span > MAX_USAGE_RANGE_DAYS) throw new RangeError(`usage ranges span at most ${MAX_USAGE_RANGE_DAYS} days, got ${span}`);
  return dayRange(fromDay, toDay);
}

// ---- quota decisions --------------------------------------------------------------------

/** Which capped windows `images` more would overrun; 0 images overrun nothing. */
export function overruns(caps: QuotaCaps, images: number, usedDay: number, usedMonth: number): { day: boolean; month: boolean } {
  if (images === 0) return { day: false, month: false };
  return {
    day: caps.imagesPerDay !== undefined && usedDay + images > caps.imagesPerDay,
    month: caps.imagesPerMonth !== undefined && usedMonth + images > caps.imagesPerMonth,
  };
}

/** The capped windows, day first, as they stand with the given counts. */
export function quotaWindows(caps: QuotaCaps, usedDay: number, usedMonth: number, now: number): QuotaState[] {
  const windows: QuotaState[] = [];
  if (caps.imagesPerDay !== undefined) windows.push({ window: 'day', limit: caps.imagesPerDay, used: usedDay, resetsAt: nextUtcMidnight(now) });
  if (caps.imagesPerMonth !== undefined) windows.push({ window: 'month', limit: caps.imagesPerMonth, used: usedMonth, resetsAt: nextUtcMonth(now) });
  return windows;
}

/** The windows a reservation of `images` charges: the capped ones, none for 0 images. */
export function chargedWindows(caps: QuotaCaps, images: number): QuotaWindow[] {
  if (images === 0) return [];
  const charged: QuotaWindow[] = [];
  if (caps.imagesPerDay !== undefined) charged.push('day');
  if (caps.imagesPerMonth !== undefined) charged.push('month');
  return charged;
}

/**
 * The answer to a reservation: counts are after the charge when accepted, unchanged when refused.
 * Both stores build it here so they report identically.
 */
export function reservation(
  tenantId: string,
  images: number,
  caps: QuotaCaps,
  now: number,
  counts: { usedDay: number; usedMonth: number; over: { day: boolean; month: boolean } },
): Reservation {
  const windows = quotaWindows(caps, counts.usedDay, counts.usedMonth, now);
  if (counts.over.day || counts.over.month) {
    const exceeded = windows.find((w) => w.window === (counts.over.month ? 'month' : 'day'));
    if (!exceeded) throw new Error('a refused reservation names a window without a cap');
    return { ok: false, exceeded, windows };
  }
  const ticket: QuotaTicket = { tenantId, images, day: utcDay(now), month: utcMonth(now), charged: chargedWindows(caps, images) };
  return { ok: true, windows, ticket };
}

/** The windows a ticket charged, tolerating tickets built without `charged`. */
export function ticketWindows(ticket: QuotaTicket): QuotaWindow[] {
  return ticket.charged ?? ['day', 'month'];
}

// ---- usage counters ---------------------------------------------------------------------

export const COUNT_FIELDS = ['submitted', 'images', 'completed', 'failed', 'cancelled'] as const;
export type CountField = (typeof COUNT_FIELDS)[number];

export function emptyCounters(): UsageCounters {
  return { submitted: 0, images: 0, completed: 0, failed: 0, cancelled: 0, inferenceSeconds: 0 };
}

/** The non-zero parts of a usage delta, checked: counts are integers, seconds finite. */
export function usageIncrements(delta: Partial<UsageCounters>): { counts: Array<[CountField, number]>; seconds: number } {
  const counts: Array<[CountField, number]> = [];
  for (const field of COUNT_FIELDS) {
    const value = delta[field];
    if (value === undefined || value === 0) continue;
    if (!Number.isSafeInteger(value)) throw new RangeError(`${field} must be an integer, got ${value}`);
    counts.push([field, value]);
  }
  const seconds = delta.inferenceSeconds ?? 0;
  if (!Number.isFinite(seconds)) throw new RangeError(`inferenceSeconds must be finite, got ${seconds}`);
  return { counts, seconds };
}

/** Seconds as reported: to the millisecond, so float sums read cleanly. */
export function roundSeconds(seconds: number): number {
  return Math.round(seconds * 1_000) / 1_000;
}

/** Day, then tenant id (code-unit order, the same everywhere). */
export function compareRows(a: UsageRow, b: UsageRow): number {
  if (a.day !== b.day) return a.day < b.day ? -1 : 1;
  if (a.tenantId === b.tenantId) return 0;
  return a.tenantId < b.tenantId ? -1 : 1;
}
