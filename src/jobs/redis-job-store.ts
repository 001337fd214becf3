import type { Redis } from 'ioredis';
import type { IdempotencyRecord, JobStore } from './job-store.js';

/**
 * Job ownership in Redis, shared by every replica: one key per request id holding the tenant
 * id, expiring with the same TTL as the memory store. The connection belongs to the app.
 */
export class RedisJobStore implements JobStore {
  readonly kind = 'redis' as const;

  constructor(
    private readonly redis: Redis,
    private readonly ttlMs: number,
  ) {}

  available(): boolean {
    return this.redis.status === 'ready';
  }

  async record(requestId: string, tenantId: string): Promise<void> {
    await this.redis.set(`job:${requestId}`, tenantId, 'PX', this.ttlMs);
  }

  async ownerOf(requestId: string): Promise<string | undefined> {
    return (await this.redis.get(`job:${requestId}`)) ?? undefined;
  }

  async claimIdempotencyKey(key: string, fingerprint: string, ttlMs: number): Promise<IdempotencyRecord | undefined> {
    const pending = JSON.stringify({ state: 'pending', fingerprint } satisfies IdempotencyRecord);
    // SET NX GET: claims the key, or returns what is already there, in one atomic command.
    const previous = await this.redis.set(`idem:${key}`, pending, 'PX', ttlMs, 'NX', 'GET');
    return previous === null ? undefined : (JSON.parse(previous) as IdempotencyRecord);
  }

  async completeIdempotencyKey(key: string, record: IdempotencyRecord & { state: 'done' }, ttlMs: number): Promise<void> {
    await this.redis.set(`idem:${key}`, JSON.stringify(record), 'PX', ttlMs);
  }

  async releaseIdempotencyKey(key: string): Promise<void> {
    await this.redis.del(`idem:${key}`);
  }

  async ready(): Promise<boolean> {
    if (!this.available()) return false;
    try {
      return (await this.redis.ping()) === 'PONG';
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    // The shared connection is closed by the app, after every store using it.
  }
}
