import type { Redis } from 'ioredis';
import { redisWritable } from '../redis.js';
import { chargedAtToKeep, OwnedByAnotherTenant, type ChargedWindow, type IdempotencyRecord, type JobMark, type JobRecord, type JobStore } from './job-store.js';

/**
 * Sets a field only on a job that exists (never recreating an expired one without TTL): 1 first
 * set, 0 already set, -1 unknown. A settled job leaves the check schedule (KEYS[2]).
 */
const MARK_SCRIPT = `if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local first = redis.call('HSETNX', KEYS[1], ARGV[1], '1')
if first == 1 and ARGV[1] == 's' then redis.call('ZREM', KEYS[2], ARGV[2]) end
return first`;

/**
 * The check schedule: unsettled jobs scored by when they were last checked (or submitted). Takes
 * up to ARGV[3] jobs last checked at or before ARGV[1] and scores them ARGV[2] (now), dropping
 * those expired or settled meanwhile. ARGV[4]: the prefix of job keys (with the client's own
 * key prefix, which Redis does not add to keys built here).
 */
const DUE_SCRIPT = `local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local due = {}
for _, id in ipairs(ids) do
  local key = ARGV[4] .. id
  if redis.call('EXISTS', key) == 1 and redis.call('HEXISTS', key, 's') == 0 then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    due[#due + 1] = id
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return due`;

const SCHEDULE = 'jobs-unchecked';

/**
 * Records a job (KEYS[1]) unless another tenant holds its id, here or in an earlier version's
 * record (KEYS[3]): 0 then, 1 once written. ARGV: the tenant, the TTL (ms), now (ms), the request
 * id, then the hash's fields and values. The job enters the check schedule (KEYS[2]), which drops
 * what has expired.
 */
const RECORD_SCRIPT = `local owner = redis.call('HGET', KEYS[1], 't')
if not owner then
  local kind = redis.call('TYPE', KEYS[3]).ok
  if kind == 'string' then owner = redis.call('GET', KEYS[3])
  elseif kind == 'hash' then owner = redis.call('HGET', KEYS[3], 't') end
end
if owner and owner ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[2]))
return 1`;

/** Deletes an Idempotency-Key record only while it is the pending claim of the attempt ARGV[1]. */
const RELEASE_CLAIM_SCRIPT = `
local held = redis.call('GET', KEYS[1])
if not held then return 0 end
local ok, record = pcall(cjson.decode, held)
if ok and type(record) == 'table' and record.state == 'pending' and record.attempt == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`;

/** The scripts above as commands on the connection: ioredis sends each by its SHA1 (EVALSHA), and its text only when Redis does not know it yet (NOSCRIPT). */
interface JobScripts {
  gatewayJobRecord(key: string, schedule: string, legacyKey: string, ...args: Array<string | number>): Promise<number>;
  gatewayJobMark(key: string, schedule: string, field: string, requestId: string): Promise<number>;
  gatewayJobsDue(schedule: string, checkedBefore: number, now: number, limit: number, prefix: string): Promise<string[]>;
  gatewayReleaseClaim(key: string, attempt: string): Promise<number>;
}

const SCRIPTS = {
  gatewayJobRecord: { numberOfKeys: 3, lua: RECORD_SCRIPT },
  gatewayJobMark: { numberOfKeys: 2, lua: MARK_SCRIPT },
  gatewayJobsDue: { numberOfKeys: 1, lua: DUE_SCRIPT },
  gatewayReleaseClaim: { numberOfKeys: 1, lua: RELEASE_CLAIM_SCRIPT },
} as const;

const FIELDS = { tenant: 't', at: 'at', images: 'n', charged: 'q', chargedAt: 'qa', cancelled: 'c', settled: 's' } as const;

/**
 * Jobs are hashes under `jobs:`. Earlier versions kept them under `job:`, first as a plain tenant
 * id, then as a hash like today's: both are still read.
 */
const KEY = (requestId: string) => `jobs:${requestId}`;
const LEGACY_KEY = (requestId: string) => `job:${requestId}`;

/**
 * Jobs in Redis, shared by every replica: one hash per request id (tenant, submit time, images,
 * marks), expiring with the same TTL as the memory store. The connection belongs to the app.
 */
export class RedisJobStore implements JobStore {
  readonly kind = 'redis' as const;

  private readonly scripts: JobScripts;

  constructor(
    private readonly redis: Redis,
    private readonly ttlMs: number,
  ) {
    for (const [name, definition] of Object.entries(SCRIPTS)) redis.defineCommand(name, definition);
    this.scripts = redis as unknown as JobScripts;
  }

  available(): boolean {
    return this.redis.status === 'ready';
  }

  async record(requestId: string, tenantId: string, images = 0, charged: readonly ChargedWindow[] = [], chargedAt?: number): Promise<void> {
    const key = KEY(requestId);
    const now = Date.now();
    const keptChargedAt = chargedAtToKeep(chargedAt, now);
    const fields: Array<string | number> = [FIELDS.tenant, tenantId, FIELDS.at, now, FIELDS.images, images, FIELDS.charged, charged.join(',')];
    if (keptChargedAt !== undefined) fields.push(FIELDS.chargedAt, keptChargedAt);
    // Scored by submit or last check: anything older than the TTL is a job that has expired.
    const written = await this.scripts.gatewayJobRecord(key, SCHEDULE, LEGACY_KEY(requestId), tenantId, this.ttlMs, now, requestId, ...fields);
    if (written === 0) throw new OwnedByAnotherTenant(requestId);
  }

  async ownerOf(requestId: string): Promise<string | undefined> {
    const owner = await this.redis.hget(KEY(requestId), FIELDS.tenant);
    if (owner !== null) return owner;
    // A job recorded by an earlier version: still its owner's until it expires.
    const legacy = LEGACY_KEY(requestId);
    try {
      return (await this.redis.get(legacy)) ?? undefined;
    } catch (err) {
      // Not a string: the hash an earlier version wrote there.
      if (!String((err as Error).message).startsWith('WRONGTYPE')) throw err;
      return (await this.redis.hget(legacy, FIELDS.tenant)) ?? undefined;
    }
  }

  async job(requestId: string): Promise<JobRecord | undefined> {
    const [tenantId, at, images, charged, cancelled, settled, chargedAt] = await this.redis.hmget(
      KEY(requestId),
      FIELDS.tenant,
      FIELDS.at,
      FIELDS.images,
      FIELDS.charged,
      FIELDS.cancelled,
      FIELDS.settled,
      FIELDS.chargedAt,
    );
    if (!tenantId) return undefined;
    return {
      tenantId,
      submittedAt: Number(at),
      images: Number(images ?? 0),
      charged: (charged ?? '').split(',').filter((w): w is ChargedWindow => w === 'day' || w === 'month'),
      cancelled: cancelled === '1',
      settled: settled === '1',
      ...(chargedAt ? { chargedAt: Number(chargedAt) } : {}),
    };
  }

  async mark(requestId: string, mark: JobMark): Promise<boolean> {
    const result = await this.scripts.gatewayJobMark(KEY(requestId), SCHEDULE, FIELDS[mark], requestId);
    return result === 1;
  }

  async dueForCheck(now: number, intervalMs: number, limit: number): Promise<string[]> {
    const prefix = `${this.redis.options.keyPrefix ?? ''}${KEY('')}`;
    return await this.scripts.gatewayJobsDue(SCHEDULE, now - intervalMs, now, limit, prefix);
  }

  async claimIdempotencyKey(key: string, fingerprint: string, ttlMs: number, attempt: string): Promise<IdempotencyRecord | undefined> {
    const pending = JSON.stringify({ state: 'pending', fingerprint, attempt } satisfies IdempotencyRecord);
    // SET NX GET: claims the key, or returns what is already there, in one atomic command.
    const previous = await this.redis.set(`idem:${key}`, pending, 'PX', ttlMs, 'NX', 'GET');
    return previous === null ? undefined : (JSON.parse(previous) as IdempotencyRecord);
  }

  async idempotencyRecord(key: string): Promise<IdempotencyRecord | undefined> {
    const held = await this.redis.get(`idem:${key}`);
    return held === null ? undefined : (JSON.parse(held) as IdempotencyRecord);
  }

  async completeIdempotencyKey(key: string, record: IdempotencyRecord & { state: 'done' }, ttlMs: number): Promise<void> {
    await this.redis.set(`idem:${key}`, JSON.stringify(record), 'PX', ttlMs);
  }

  async releaseIdempotencyKey(key: string, attempt: string): Promise<void> {
    await this.scripts.gatewayReleaseClaim(`idem:${key}`, attempt);
  }

  async ready(): Promise<boolean> {
    if (!this.available()) return false;
    try {
      return await redisWritable(this.redis);
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    // The shared connection is closed by the app, after every store using it.
  }
}
