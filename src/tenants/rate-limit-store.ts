import type { FastifyRateLimitStore, FastifyRateLimitStoreCtor } from '@fastify/rate-limit';
import type { Redis } from 'ioredis';

/**
 * Fixed-window counters in Redis for @fastify/rate-limit, shared by every replica. Differs from
 * the plugin's own Redis store in two ways:
 * - A window longer than the tenant's current one is cut down to it on the next request. The
 *   plugin's store sets a key's expiry only when the key is created, so a limit shortened by a
 *   tenants-file reload (a window of "1 day" that was meant to be "1 minute") would keep the
 *   tenant waiting out the old window, which the memory store does not. A key found with no
 *   expiry at all gets one.
 * - Keys are `<nameSpace><policy>:<tenant>` (the plugin's store puts the route's method and URL
 *   in front, which `app.rateLimit()` leaves undefined).
 */
const INCR = `
local current = redis.call('INCR', KEYS[1])
local window = tonumber(ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if current == 1 or ttl < 0 or ttl > window then
  redis.call('PEXPIRE', KEYS[1], window)
  ttl = window
end
return {current, ttl}
`;

const READ = `
local current = redis.call('GET', KEYS[1])
if not current then return {0, 0} end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then ttl = 0 end
return {tonumber(current), ttl}
`;

type Callback = Parameters<FastifyRateLimitStore['incr']>[1];

interface RateLimitCommands {
  gatewayRateLimitIncr(key: string, windowMs: number, cb: (err: Error | null | undefined, result?: unknown) => void): void;
  gatewayRateLimitRead(key: string, cb: (err: Error | null | undefined, result?: unknown) => void): void;
}

/** The store @fastify/rate-limit's `store` option takes: a class the plugin instantiates itself. */
export function redisRateLimitStore(redis: Redis, nameSpace: string): FastifyRateLimitStoreCtor {
  const commands = redis as unknown as Redis & Partial<RateLimitCommands>;
  if (!commands.gatewayRateLimitIncr) redis.defineCommand('gatewayRateLimitIncr', { numberOfKeys: 1, lua: INCR });
  if (!commands.gatewayRateLimitRead) redis.defineCommand('gatewayRateLimitRead', { numberOfKeys: 1, lua: READ });
  const run = commands as unknown as RateLimitCommands;
  const answer = (cb: Callback) => (err: Error | null | undefined, result?: unknown) => {
    if (err) return cb(err);
    const [current, ttl] = result as [number, number];
    cb(null, { current, ttl });
  };
  return class TenantRateLimitStore implements FastifyRateLimitStore {
    incr(key: string, cb: Callback, timeWindow: number): void {
      run.gatewayRateLimitIncr(nameSpace + key, timeWindow, answer(cb));
    }

    read(key: string, cb: Callback): void {
      run.gatewayRateLimitRead(nameSpace + key, answer(cb));
    }

    /** Every limiter keys its counters by policy and tenant itself: the route adds nothing. */
    child(): TenantRateLimitStore {
      return this;
    }
  };
}
