import type { Redis } from 'ioredis';
import type { ChargedWindow, IdempotencyRecord, JobMark, JobRecord, JobStore } from './job-store.js';

/** Sets a field only on a job that exists (never recreating an expired one without TTL): 1 first set, 0 already set, -1 unknown. */
const MARK_SCRIPT = `if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
return redis.call('HSETNX', KEYS[1], ARGV[1], '1')`;

const FIELDS = { tenant: 't', at: 'at', images: 'n', charged: 'q', cancelled: 'c', settled: 's' } as const;

/** Jobs are hashes under `jobs:`; `job:` held a plain tenant id in earlier versions and is still read. */
const KEY = (requestId: string) => `jobs:${requestId}`;
const LEGACY_KEY = (requestId: string) => `job:${requestId}`;

/**
 * Jobs in Redis, shared by every replica: one hash per request id (tenant, submit time, images,
 * marks), expiring with the same TTL as the memory store. The connection belongs to the app.
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

  async record(requestId: string, tenantId: string, images = 0, charged: readonly ChargedWindow[] = []): Promise<void> {
    const key = KEY(requestId);
    await this.redis
      .multi()
      .hset(key, FIELDS.tenant, tenantId, FIELDS.at, Date.now(), FIELDS.images, images, FIELDS.charged, charged.join(','))
      .pexpire(key, this.ttlMs)
      .exec()
      .then((results) => {
        const failed = results?.find(([err]) => err);
        if (failed) throw failed[0];
      });
  }

  async ownerOf(requestId: string): Promise<string | undefined> {
    const owner = await this.redis.hget(KEY(requestId), FIELDS.tenant);
    if (owner !== null) return owner;
    // A job recorded by an earlier version (a plain string): still its owner's until it expires.
    return (await this.redis.get(LEGACY_KEY(requestId))) ?? undefined;
  }

  async job(requestId: string): Promise<JobRecord | undefined> {
    const [tenantId, at, images, charged, cancelled, settled] = await this.redis.hmget(
      KEY(requestId),
      FIELDS.tenant,
      FIELDS.at,
      FIELDS.images,
      FIELDS.charged,
      FIELDS.cancelled,
      FIELDS.settled,
    );
    if (!tenantId) return undefined;
    return {
      tenantId,
      submittedAt: Number(at),
      images: Number(images ?? 0),
      charged: (charged ?? '').split(',').filter((w): w is ChargedWindow => w === 'day' || w === 'month'),
      cancelled: cancelled === '1',
      settled: settled === '1',
    };
  }

  async mark(requestId: string, mark: JobMark): Promise<boolean> {
    const result = await this.redis.eval(MARK_SCRIPT, 1, KEY(requestId), FIELDS[mark]);
    return result === 1;
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
