import type { JobStore, JobStoreOptions } from './job-store.js';

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

  async ready(): Promise<boolean> {
    return true;
  }

  async close(): Promise<void> {
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
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
