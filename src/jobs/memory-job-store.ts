import { chargedAtToKeep, OwnedByAnotherTenant, type ChargedWindow, type IdempotencyRecord, type JobMark, type JobRecord, type JobStore, type JobStoreOptions } from './job-store.js';

const CANCELLED = 1;
const SETTLED = 2;
const CHARGED_DAY = 4;
const CHARGED_MONTH = 8;

/** Kept small on purpose (a few hundred thousand of them may be live): expiry is derived from submittedAt. */
interface Entry {
  tenantId: string;
  submittedAt: number;
  images: number;
  marks: number;
  /** Only on the rare job charged on the UTC day before its record (see JobRecord.chargedAt). */
  chargedAt?: number;
}

/**
 * In-process job store. Every entry lives for the same TTL, so a Map's insertion order is also
 * expiry order: expired entries and, past `maxEntries`, the oldest ones are dropped from the
 * front in amortised O(1), with no timers.
 */
export class MemoryJobStore implements JobStore {
  readonly kind = 'memory' as const;
  private readonly entries = new Map<string, Entry>();
  private readonly idempotency = new Map<string, { record: IdempotencyRecord; expiresAt: number }>();
  /**
   * Unsettled jobs and when each was last checked (or submitted). Every write sets the time to
   * now, so insertion order is also time order: due jobs are read from the front.
   */
  private readonly unchecked = new Map<string, number>();
  private readonly now: () => number;

  constructor(private readonly options: JobStoreOptions) {
    this.now = options.now ?? Date.now;
  }

  available(): boolean {
    return true;
  }

  async record(requestId: string, tenantId: string, images = 0, charged: readonly ChargedWindow[] = [], chargedAt?: number): Promise<void> {
    const now = this.now();
    const marks = (charged.includes('day') ? CHARGED_DAY : 0) | (charged.includes('month') ? CHARGED_MONTH : 0);
    // A request id recorded again moves to the back (insertion order is expiry order). Ids are
    // new nearly always: one lookup tells, instead of a delete that misses in each Map.
    const known = this.entries.get(requestId);
    if (known) {
      if (known.tenantId !== tenantId && now - known.submittedAt < this.options.ttlMs) throw new OwnedByAnotherTenant(requestId);
      this.entries.delete(requestId);
      this.unchecked.delete(requestId);
    }
    const entry: Entry = { tenantId, submittedAt: now, images, marks };
    const keptChargedAt = chargedAtToKeep(chargedAt, now);
    if (keptChargedAt !== undefined) entry.chargedAt = keptChargedAt;
    this.entries.set(requestId, entry);
    this.unchecked.set(requestId, now);
    this.sweep(now);
  }

  async ownerOf(requestId: string): Promise<string | undefined> {
    return this.live(requestId)?.tenantId;
  }

  async job(requestId: string): Promise<JobRecord | undefined> {
    const entry = this.live(requestId);
    if (!entry) return undefined;
    return {
      tenantId: entry.tenantId,
      submittedAt: entry.submittedAt,
      images: entry.images,
      charged: [...((entry.marks & CHARGED_DAY) !== 0 ? ['day' as const] : []), ...((entry.marks & CHARGED_MONTH) !== 0 ? ['month' as const] : [])],
      cancelled: (entry.marks & CANCELLED) !== 0,
      settled: (entry.marks & SETTLED) !== 0,
      ...(entry.chargedAt !== undefined ? { chargedAt: entry.chargedAt } : {}),
    };
  }

  async mark(requestId: string, mark: JobMark): Promise<boolean> {
    const entry = this.live(requestId);
    const bit = mark === 'cancelled' ? CANCELLED : SETTLED;
    if (!entry || (entry.marks & bit) !== 0) return false;
    entry.marks |= bit;
    if (bit === SETTLED) this.unchecked.delete(requestId);
    return true;
  }

  async dueForCheck(now: number, intervalMs: number, limit: number): Promise<string[]> {
    const due: string[] = [];
    for (const [requestId, checkedAt] of this.unchecked) {
      if (due.length >= limit || checkedAt > now - intervalMs) break;
      this.unchecked.delete(requestId);
      const entry = this.live(requestId);
      if (entry && (entry.marks & SETTLED) === 0) due.push(requestId);
    }
    for (const requestId of due) this.unchecked.set(requestId, now);
    return due;
  }

  private live(requestId: string): Entry | undefined {
    const entry = this.entries.get(requestId);
    if (!entry) return undefined;
    if (entry.submittedAt + this.options.ttlMs <= this.now()) {
      this.entries.delete(requestId);
      this.unchecked.delete(requestId);
      return undefined;
    }
    return entry;
  }

  async claimIdempotencyKey(key: string, fingerprint: string, ttlMs: number, attempt: string): Promise<IdempotencyRecord | undefined> {
    const now = this.now();
    const existing = this.idempotency.get(key);
    if (existing && existing.expiresAt > now) return existing.record;
    this.idempotency.delete(key);
    this.idempotency.set(key, { record: { state: 'pending', fingerprint, attempt }, expiresAt: now + ttlMs });
    this.sweepIdempotency(now);
    return undefined;
  }

  async idempotencyRecord(key: string): Promise<IdempotencyRecord | undefined> {
    const existing = this.idempotency.get(key);
    return existing && existing.expiresAt > this.now() ? existing.record : undefined;
  }

  async completeIdempotencyKey(key: string, record: IdempotencyRecord & { state: 'done' }, ttlMs: number): Promise<void> {
    this.idempotency.delete(key);
    this.idempotency.set(key, { record, expiresAt: this.now() + ttlMs });
  }

  async releaseIdempotencyKey(key: string, attempt: string): Promise<void> {
    const held = this.idempotency.get(key)?.record;
    if (held?.state === 'pending' && held.attempt === attempt) this.idempotency.delete(key);
  }

  async ready(): Promise<boolean> {
    return true;
  }

  async close(): Promise<void> {
    this.entries.clear();
    this.idempotency.clear();
    this.unchecked.clear();
  }

  get size(): number {
    return this.entries.size;
  }

  /** Jobs in the check schedule (unsettled, not yet expired). */
  get scheduled(): number {
    return this.unchecked.size;
  }

  /** Idempotency records have two TTLs, so sweep by expiry and by the same size bound. */
  private sweepIdempotency(now: number): void {
    for (const [key, entry] of this.idempotency) {
      if (this.idempotency.size <= this.options.maxEntries && entry.expiresAt > now) break;
      this.idempotency.delete(key);
    }
  }

  private sweep(now: number): void {
    let evicted = 0;
    for (const [id, entry] of this.entries) {
      const over = this.entries.size > this.options.maxEntries;
      const expired = entry.submittedAt + this.options.ttlMs <= now;
      if (!over && !expired) break;
      this.entries.delete(id);
      this.unchecked.delete(id);
      if (over && !expired) evicted++;
    }
    if (evicted > 0) this.options.onEvict?.(evicted);
  }
}
