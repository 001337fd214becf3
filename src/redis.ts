import { once } from 'node:events';
import type { FastifyBaseLogger } from 'fastify';
import { Redis } from 'ioredis';

export interface RedisOptions {
  url: string;
  keyPrefix: string;
  commandTimeoutMs: number;
}

/** Redis's answer to SELECT of a database it does not have ("DB index is out of range", "invalid DB index"). */
const DATABASE_REFUSED = /\bDB index\b/i;
/** Redis refusing the credentials (a wrong password, a wrong user, none given to a server that wants one). */
const AUTH_REFUSED = /^(WRONGPASS|NOAUTH|NOPERM)\b|invalid password|invalid username-password/i;

/**
 * The Redis connection every shared store uses. It must never make a request hang: commands
 * time out, nothing queues while disconnected (a command fails at once instead), and the client
 * reconnects by itself with capped backoff. State changes are logged once each, not per command.
 */
export function createRedis(options: RedisOptions, log: FastifyBaseLogger): Redis {
  const redis = new Redis(options.url, {
    keyPrefix: options.keyPrefix,
    connectionName: 'fal-gateway',
    commandTimeout: options.commandTimeoutMs,
    connectTimeout: Math.max(1_000, options.commandTimeoutMs * 10),
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: (attempt) => Math.min(50 * 2 ** Math.min(attempt, 6), 2_000),
    // A write refused as READONLY: the address now leads to a replica (a primary demoted by a
    // failover). Reconnecting reaches whatever the address leads to now, the new primary behind
    // a failover endpoint. At most every few seconds: a REDIS_URL that names a replica for good
    // would otherwise reconnect on every write.
    reconnectOnError: (err) => {
      if (!READ_ONLY.test(err.message)) return false;
      const now = Date.now();
      if (now - lastReadOnlyReconnect < READ_ONLY_RECONNECT_MS) return false;
      lastReadOnlyReconnect = now;
      log.warn({ redis: redactUrl(options.url) }, 'redis refused a write (READONLY: a replica, not the primary); reconnecting to reach the primary');
      return 1;
    },
  });
  let lastReadOnlyReconnect = 0;
  let healthy = false;
  let lastAuthError: string | undefined;
  let lastConnectionError: string | undefined;
  redis.on('ready', () => {
    healthy = true;
    lastAuthError = undefined;
    lastConnectionError = undefined;
    log.info({ redis: redactUrl(options.url) }, 'redis connected');
    void checkServer(redis, options.url, log);
  });
  redis.on('close', () => {
    // A close the gateway asked for (its shutdown) is not an outage.
    if (healthy && !closedForGood(redis)) log.warn({ redis: redactUrl(options.url) }, 'redis unavailable; reconnecting');
    healthy = false;
  });
  redis.on('error', (err: Error) => {
    // Closed for good below: what its last commands say as they fail is no news.
    if (abandoned.has(redis)) {
      log.debug({ err: err.message }, 'redis error after giving up on it');
      return;
    }
    // A database number this Redis does not have: the client would go on in database 0, among
    // whatever else lives there. It is closed instead (no reconnect): never ready, nothing written.
    if (DATABASE_REFUSED.test(err.message)) {
      log.error(
        { redis: redactUrl(options.url), err: err.message },
        'REDIS_URL selects a database this Redis does not have: not using it (the gateway stays not ready); fix REDIS_URL',
      );
      abandon(redis);
      return;
    }
    // Refused credentials: no amount of waiting fixes them, so the operator is told (once per
    // distinct answer; the client keeps retrying, in case the server's password is changed).
    if (AUTH_REFUSED.test(err.message)) {
      if (err.message !== lastAuthError) {
        lastAuthError = err.message;
        log.error({ redis: redactUrl(options.url), err: err.message }, 'Redis refused the credentials in REDIS_URL (not ready until it accepts them); fix REDIS_URL');
      }
      return;
    }
    // Connection errors repeat on every reconnect attempt: each distinct cause is logged once
    // (a wrong host or port says so, instead of only "not reachable"), the repeats at debug.
    if (err.message !== lastConnectionError) {
      lastConnectionError = err.message;
      log.warn({ redis: redactUrl(options.url), err: err.message }, 'redis connection failed (not ready until it connects; reconnecting); check REDIS_URL if this persists');
      return;
    }
    log.debug({ err: err.message }, 'redis connection error');
  });
  return redis;
}

/** Redis refusing a write because it is a replica. */
const READ_ONLY = /^READONLY\b/;
/** The least time between two reconnections caused by READONLY answers (ms). */
const READ_ONLY_RECONNECT_MS = 5_000;

/**
 * Whether this Redis answers and takes writes: a primary. A replica (a primary demoted by a
 * failover, or a REDIS_URL naming one) answers PING and reads, then refuses every write.
 */
export async function redisWritable(redis: Redis): Promise<boolean> {
  if (!roleRefused.has(redis)) {
    try {
      const role = await redis.call('ROLE');
      return Array.isArray(role) && role[0] === 'master';
    } catch (err) {
      if (!ROLE_REFUSED.test((err as Error).message)) throw err;
      // ROLE renamed or disabled (some managed Redis), or not granted to this user (it is in the
      // @admin and @dangerous ACL categories): that it answers must do (logged at connection).
      roleRefused.add(redis);
    }
  }
  return (await redis.ping()) === 'PONG';
}

/** Redis refusing ROLE itself: unknown (renamed, disabled) or not permitted to this user. */
const ROLE_REFUSED = /unknown command|NOPERM|no permissions/i;
/** Clients whose Redis refuses them ROLE: readiness checks that Redis answers, not its role. */
const roleRefused = new WeakSet<Redis>();

/** Clients closed for good: a Redis the gateway must not use (a wrong database, too old a version). */
const abandoned = new WeakSet<Redis>();

function abandon(redis: Redis): void {
  abandoned.add(redis);
  redis.disconnect();
}

/** Whether the gateway gave up on this client (the reason was logged as an error): it will not reconnect. */
export const redisAbandoned = (redis: Redis): boolean => abandoned.has(redis);

/** The oldest Redis the gateway works with: the idempotency claim uses `SET ... NX GET` (Redis 7). */
export const MIN_REDIS_MAJOR = 7;

/** A field of INFO's answer (`name:value` lines). */
const infoField = (info: string, name: string) => new RegExp(`^${name}:(.*)$`, 'm').exec(info)?.[1]?.trim();

/** What is wrong with a Redis for the gateway, from its INFO: a version too old, an eviction policy that would drop its state. */
export function redisProblems(info: string): { fatal?: string; warning?: string } {
  const version = infoField(info, 'redis_version');
  const major = Number(version?.split('.')[0]);
  if (version !== undefined && Number.isFinite(major) && major < MIN_REDIS_MAJOR) {
    return { fatal: `Redis ${version} is older than ${MIN_REDIS_MAJOR}, which the gateway needs (SET ... NX GET): not using it (the gateway stays not ready); upgrade Redis` };
  }
  if (infoField(info, 'role') === 'slave') {
    return {
      warning: 'REDIS_URL leads to a read-only replica, which refuses every write: not ready (submits refused) until it leads to the primary; point REDIS_URL at the primary or a failover endpoint',
    };
  }
  const policy = infoField(info, 'maxmemory_policy');
  const maxmemory = Number(infoField(info, 'maxmemory') ?? '0');
  if (policy !== undefined && policy !== 'noeviction' && maxmemory > 0) {
    return {
      warning: `Redis evicts keys when full (maxmemory-policy ${policy}): it could drop job ownership (tenants would get 404 for their own jobs), quota and rate-limit counters; set maxmemory-policy noeviction and size maxmemory for the result cache (see the README)`,
    };
  }
  return {};
}

/** Asked once per connection: a Redis the gateway cannot use is closed; one that may evict its state is warned about. */
async function checkServer(redis: Redis, url: string, log: FastifyBaseLogger): Promise<void> {
  try {
    await redisWritable(redis);
  } catch {
    // Not answering: the readiness check says so.
  }
  if (roleRefused.has(redis)) {
    log.warn(
      { redis: redactUrl(url) },
      'Redis refuses ROLE to this connection (not granted to its user, or disabled): readiness checks that Redis answers, and cannot tell a read-only replica from the primary; grant +role to the user to let it',
    );
  }
  let info: string;
  try {
    info = await redis.info();
  } catch {
    // INFO renamed or disabled (some managed Redis): nothing to check.
    return;
  }
  const { fatal, warning } = redisProblems(info);
  if (fatal) {
    log.error({ redis: redactUrl(url) }, fatal);
    abandon(redis);
  } else if (warning) {
    log.warn({ redis: redactUrl(url) }, warning);
  }
}

/**
 * Whether the connection closed at the gateway's request (QUIT at shutdown, disconnect()): not an
 * outage. ioredis emits 'close' a tick after the fact, when such a client is already `end`
 * (one that will reconnect is `reconnecting`).
 */
const closedForGood = (redis: Redis) => redis.status === 'end';

/** Waits (bounded) for the first connection, so a healthy deployment starts ready. */
export async function waitForRedis(redis: Redis, timeoutMs: number): Promise<boolean> {
  if (redis.status === 'ready') return true;
  try {
    await once(redis, 'ready', { signal: AbortSignal.timeout(timeoutMs) });
    return true;
  } catch {
    return false;
  }
}

export async function closeRedis(redis: Redis): Promise<void> {
  if (redis.status === 'end') return;
  try {
    if (redis.status === 'ready') await redis.quit();
    else redis.disconnect();
  } catch {
    redis.disconnect();
  }
}

/** A Redis URL without its password, for logs. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    // ioredis also takes credentials from the query (`?password=`).
    for (const name of [...parsed.searchParams.keys()]) {
      if (/pass|secret|token|auth/i.test(name)) parsed.searchParams.set(name, '***');
    }
    return parsed.toString();
  } catch {
    return '(invalid url)';
  }
}
