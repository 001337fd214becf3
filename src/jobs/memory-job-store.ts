import type { IdempotencyRecord, JobStore, JobStoreOptions } from './job-store.js';

interface Entry {
  tenantId: string;
  expiresAt: number;
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
  private readonly now: () => number;

  constructor(private readonly options: JobStoreOptions) {
    this.now = options.now ?? Date.now;
  }

  available(): boolean {
    return true;
  }

  async record(requestId: string, tenantId: string): Promise<void> {
    const now = this.now();
    this.entries.delete(requestId);
    this.entries.set(requestId, { tenantId, expiresAt: now + this.options.ttlMs });
    this.sweep(now);
  }

  async ownerOf(requestId: string): Promise<string | undefined> {
    const entry = this.entries.get(requestId);
    if (!entry) return undefined;
    if (entry.expiresAt <= this.now()) {
      this.entries.delete(requestId);
      return undefined;
    }
    return entry.tenantId;
  }

  async claimIdempotencyKey(key: string, fingerprint: string, ttlMs: number): Promise<IdempotencyRecord | undefined> {
    const now = this.now();
    const existing = this.idempotency.get(key);
    if (existing && existing.expiresAt > now) return existing.record;
    this.idempotency.delete(key);
    this.idempotency.set(key, { record: { state: 'pending', fingerprint }, expiresAt: now + ttlMs });
    this.sweepIdempotency(now);
    return undefined;
  }

  async completeIdempotencyKey(key: string, record: IdempotencyRecord & { state: 'done' }, ttlMs: number): Promise<void> {
    this.idempotency.delete(key);
    this.idempotency.set(key, { record, expiresAt: this.now() + ttlMs });
  }

  async releaseIdempotencyKey(key: string): Promise<void> {
    this.idempotency.delete(key);
  }

  async ready(): Promise<boolean> {
    return true;
  }

  async close(): Promise<void> {
    this.entries.clear();
    this.idempotency.clear();
  }

  get size(): number {
    return this.entries.size;
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
      if (!over && entry.expiresAt > now) break;
      this.entries.delete(id);
      if (over && entry.expiresAt > now) evicted++;
    }
    if (evicted > 0) this.options.onEvict?.(evicted);
  }
}
