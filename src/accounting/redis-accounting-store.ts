import type { ChainableCommander, Redis } from 'ioredis';
import {
  checkCaps,
  checkCount,
  checkTenantId,
  COUNT_FIELDS,
  compareRows,
  DAY_MS,
  DEFAULT_MAX_SLOT_AGE_MS,
  emptyCounters,
  nextUtcMidnight,
  nextUtcMonth,
  QUOTA_GRACE_MS,
  quotaWindows,
  reservation,
  roundSeconds,
  ticketWindows,
  usageDays,
  usageIncrements,
  utcDay,
  utcMonth,
  type AccountingStore,
  type AccountingStoreOptions,
  type QuotaCaps,
  type QuotaState,
  type QuotaTicket,
  type Reservation,
  type SlotState,
  type UsageCounters,
  type UsageRow,
} from './accounting-store.js';

/*
 * Keys (all under the connection's prefix; tenant ids hold no ':', so no two names alias):
 *   quota:<tenant>:d:<YYYY-MM-DD>   string  images charged that UTC day, expires 2 days after it
 *   quota:<tenant>:m:<YYYY-MM>      string  images charged that UTC month, same grace
 *   slots:tenant:<tenant>           zset    slot id -> when taken or last touched (staleness)
 *   slots:tenant:<tenant>:taken     zset    slot id -> when taken (count, hard age bound)
 *   slots:tenants                   zset    tenant -> oldest touched score of its slots
 *   usage:<YYYY-MM-DD>:tenant:<t>   hash    that day's counters, expire retentionDays after the day
 *   usage:<YYYY-MM-DD>:tenants      set     tenants with usage that day, same expiry
 */

/** Keeps `slots:tenants` at the tenant's oldest touched score, or drops the tenant when it holds none. */
const REFRESH_INDEX = `
local function refresh(touched, index, tenant)
  local first = redis.call('ZRANGE', touched, 0, 0, 'WITHSCORES')
  if first[1] then redis.call('ZADD', index, first[2], tenant) else redis.call('ZREM', index, tenant) end
end
`;

/** Drops slots taken before ARGV cutoff from both per-tenant sets. */
const DROP_AGED = `
local function dropAged(touched, taken, cutoff)
  local aged = redis.call('ZRANGEBYSCORE', taken, '-inf', '(' .. cutoff)
  for _, id in ipairs(aged) do
    redis.call('ZREM', touched, id)
    redis.call('ZREM', taken, id)
  end
end
`;

const SCRIPTS = {
  /** KEYS: day, month. ARGV: images, day cap (-1: none), month cap (-1: none), day ttl, month ttl. */
  accountingReserve: {
    numberOfKeys: 2,
    lua: `
local images = tonumber(ARGV[1])
local dayCap, monthCap = tonumber(ARGV[2]), tonumber(ARGV[3])
local usedDay, usedMonth = 0, 0
if dayCap >= 0 then usedDay = tonumber(redis.call('GET', KEYS[1]) or '0') end
if monthCap >= 0 then usedMonth = tonumber(redis.call('GET', KEYS[2]) or '0') end
local overDay = images > 0 and dayCap >= 0 and usedDay + images > dayCap
local overMonth = images > 0 and monthCap >= 0 and usedMonth + images > monthCap
if overDay or overMonth then
  return {overDay and 1 or 0, overMonth and 1 or 0, usedDay, usedMonth}
end
if images > 0 then
  if dayCap >= 0 then
    usedDay = redis.call('INCRBY', KEYS[1], images)
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
  end
  if monthCap >= 0 then
    usedMonth = redis.call('INCRBY', KEYS[2], images)
    redis.call('PEXPIRE', KEYS[2], ARGV[5])
  end
end
return {0, 0, usedDay, usedMonth}
`,
  },
  /** KEYS: counters to give back to. ARGV: images. Never below 0; keeps each key's expiry. */
  accountingRefund: {
    numberOfKeys: null,
    lua: `
local images = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  local used = tonumber(redis.call('GET', key) or '-1')
  if used >= 0 then redis.call('SET', key, math.max(0, used - images), 'KEEPTTL') end
end
return 0
`,
  },
  /** KEYS: touched, taken, index. ARGV: tenant, slot, max, now, hard cutoff, slot key ttl. */
  accountingAcquireSlot: {
    numberOfKeys: 3,
    lua: `${REFRESH_INDEX}${DROP_AGED}
local touched, taken, index = KEYS[1], KEYS[2], KEYS[3]
local tenant, slot, max, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
dropAged(touched, taken, ARGV[5])
local ok = 0
if redis.call('ZSCORE', taken, slot) then
  redis.call('ZADD', touched, now, slot)
  ok = 1
elseif redis.call('ZCARD', taken) < max then
  redis.call('ZADD', taken, now, slot)
  redis.call('ZADD', touched, now, slot)
  redis.call('PEXPIRE', taken, ARGV[6])
  redis.call('PEXPIRE', touched, ARGV[6])
  ok = 1
end
refresh(touched, index, tenant)
return {ok, redis.call('ZCARD', taken)}
`,
  },
  /** KEYS: touched, taken, index. ARGV: tenant, from, to, now. */
  accountingRenameSlot: {
    numberOfKeys: 3,
    lua: `${REFRESH_INDEX}
local touched, taken, index = KEYS[1], KEYS[2], KEYS[3]
local tenant, from, to, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local takenAt = redis.call('ZSCORE', taken, from)
if not takenAt then return 0 end
redis.call('ZREM', taken, from)
redis.call('ZREM', touched, from)
redis.call('ZADD', taken, takenAt, to)
redis.call('ZADD', touched, now, to)
refresh(touched, index, tenant)
return 1
`,
  },
  /** KEYS: touched, taken, index. ARGV: tenant, slot. */
  accountingReleaseSlot: {
    numberOfKeys: 3,
    lua: `${REFRESH_INDEX}
local removed = redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[2])
refresh(KEYS[1], KEYS[3], ARGV[1])
return removed
`,
  },
  /** KEYS: touched, taken, index. ARGV: tenant, stale cutoff, hard cutoff, now, limit. */
  accountingSweepSlots: {
    numberOfKeys: 3,
    lua: `${REFRESH_INDEX}${DROP_AGED}
local touched, taken, index = KEYS[1], KEYS[2], KEYS[3]
dropAged(touched, taken, ARGV[3])
local stale = redis.call('ZRANGEBYSCORE', touched, '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[5]))
for _, id in ipairs(stale) do redis.call('ZADD', touched, 'XX', ARGV[4], id) end
refresh(touched, index, ARGV[1])
return stale
`,
  },
} as const;

type ScriptArg = string | number;

/** The commands `SCRIPTS` defines on the connection, as ioredis adds them (EVALSHA, EVAL on NOSCRIPT). */
interface AccountingCommands {
  accountingReserve(day: string, month: string, ...args: ScriptArg[]): Promise<[number, number, number, number]>;
  accountingRefund(numberOfKeys: number, ...keysAndArgs: ScriptArg[]): Promise<number>;
  accountingAcquireSlot(touched: string, taken: string, index: string, ...args: ScriptArg[]): Promise<[number, number]>;
  accountingRenameSlot(touched: string, taken: string, index: string, ...args: ScriptArg[]): Promise<number>;
  accountingReleaseSlot(touched: string, taken: string, index: string, ...args: ScriptArg[]): Promise<number>;
  accountingSweepSlots(touched: string, taken: string, index: string, ...args: ScriptArg[]): Promise<string[]>;
}

const SLOT_INDEX = 'slots:tenants';
const slotKeys = (tenantId: string): [string, string, string] => [`slots:tenant:${tenantId}`, `slots:tenant:${tenantId}:taken`, SLOT_INDEX];
const dayKey = (tenantId: string, day: string) => `quota:${tenantId}:d:${day}`;
const monthKey = (tenantId: string, month: string) => `quota:${tenantId}:m:${month}`;
const usageKey = (day: string, tenantId: string) => `usage:${day}:tenant:${tenantId}`;
const usageTenantsKey = (day: string) => `usage:${day}:tenants`;

/** Runs a pipeline or transaction and returns its replies, throwing the first command error. */
async function execAll(batch: ChainableCommander): Promise<unknown[]> {
  const results = await batch.exec();
  if (!results) throw new Error('redis transaction aborted');
  return results.map(([err, value]) => {
    if (err) throw err;
    return value;
  });
}

/** HGETALL of a usage hash as counters; undefined when the hash is empty (expired or never written). */
function countersFrom(hash: unknown): UsageCounters | undefined {
  if (typeof hash !== 'object' || hash === null || Object.keys(hash).length === 0) return undefined;
  const fields = hash as Record<string, string>;
  const counters = emptyCounters();
  for (const field of COUNT_FIELDS) counters[field] = Number.parseInt(fields[field] ?? '0', 10);
  counters.inferenceSeconds = roundSeconds(Number.parseFloat(fields.inferenceSeconds ?? '0'));
  return counters;
}

/**
 * Accounting in Redis, shared by every replica: each check-and-charge (quota reservation, slot
 * acquisition, stale-slot pick) is one Lua script, so replicas never both take the last unit.
 * Every key but the tenant index of slots expires by itself; that index is cleaned as it is read.
 * The connection (its key prefix, command timeout) belongs to the app.
 */
export class RedisAccountingStore implements AccountingStore {
  readonly kind = 'redis' as const;
  private readonly commands: AccountingCommands;
  private readonly maxSlotAgeMs: number;
  private readonly retentionMs: number;

  constructor(
    private readonly redis: Redis,
    options: AccountingStoreOptions,
  ) {
    checkCount('retentionDays', options.retentionDays);
    this.retentionMs = options.retentionDays * DAY_MS;
    this.maxSlotAgeMs = options.maxSlotAgeMs ?? DEFAULT_MAX_SLOT_AGE_MS;
    if (!Number.isSafeInteger(this.maxSlotAgeMs) || this.maxSlotAgeMs <= 0) throw new RangeError('maxSlotAgeMs must be a positive integer');
    for (const [name, definition] of Object.entries(SCRIPTS)) {
      redis.defineCommand(name, definition.numberOfKeys === null ? { lua: definition.lua } : definition);
    }
    this.commands = redis as unknown as AccountingCommands;
  }

  async reserveImages(tenantId: string, images: number, caps: QuotaCaps, now: number): Promise<Reservation> {
    checkTenantId(tenantId);
    checkCount('images', images);
    checkCaps(caps);
    if (caps.imagesPerDay === undefined && caps.imagesPerMonth === undefined) {
      return reservation(tenantId, images, caps, now, { usedDay: 0, usedMonth: 0, over: { day: false, month: false } });
    }
    const [overDay, overMonth, usedDay, usedMonth] = await this.commands.accountingReserve(
      dayKey(tenantId, utcDay(now)),
      monthKey(tenantId, utcMonth(now)),
      images,
      caps.imagesPerDay ?? -1,
      caps.imagesPerMonth ?? -1,
      nextUtcMidnight(now) - now + QUOTA_GRACE_MS,
      nextUtcMonth(now) - now + QUOTA_GRACE_MS,
    );
    return reservation(tenantId, images, caps, now, { usedDay, usedMonth, over: { day: overDay === 1, month: overMonth === 1 } });
  }

  async refundImages(ticket: QuotaTicket): Promise<void> {
    checkTenantId(ticket.tenantId);
    checkCount('images', ticket.images);
    const keys = ticketWindows(ticket).map((w) => (w === 'day' ? dayKey(ticket.tenantId, ticket.day) : monthKey(ticket.tenantId, ticket.month)));
    if (keys.length === 0 || ticket.images === 0) return;
    await this.commands.accountingRefund(keys.length, ...keys, ticket.images);
  }

  async quotaState(tenantId: string, caps: QuotaCaps, now: number): Promise<QuotaState[]> {
    checkTenantId(tenantId);
    checkCaps(caps);
    if (caps.imagesPerDay === undefined && caps.imagesPerMonth === undefined) return [];
    const [day, month] = await this.redis.mget(dayKey(tenantId, utcDay(now)), monthKey(tenantId, utcMonth(now)));
    return quotaWindows(caps, Number(day ?? 0), Number(month ?? 0), now);
  }

  async acquireSlot(tenantId: string, slotId: string, max: number, now: number): Promise<{ ok: boolean; state: SlotState }> {
    checkTenantId(tenantId);
    checkCount('max', max);
    const [ok, inUse] = await this.commands.accountingAcquireSlot(...slotKeys(tenantId), tenantId, slotId, max, now, now - this.maxSlotAgeMs, this.maxSlotAgeMs);
    return { ok: ok === 1, state: { limit: max, inUse } };
  }

  async renameSlot(tenantId: string, fromId: string, toId: string, now: number): Promise<void> {
    checkTenantId(tenantId);
    await this.commands.accountingRenameSlot(...slotKeys(tenantId), tenantId, fromId, toId, now);
  }

  async releaseSlot(tenantId: string, slotId: string): Promise<boolean> {
    checkTenantId(tenantId);
    return (await this.commands.accountingReleaseSlot(...slotKeys(tenantId), tenantId, slotId)) === 1;
  }

  /**
   * Visits tenants whose oldest slot is stale, oldest first, one atomic pick per tenant. Each
   * visit touches what it returns (or drops the tenant from the index), so the loop moves on and
   * a concurrent sweeper finds nothing left to take for that tenant.
   */
  async staleSlots(olderThanMs: number, now: number, limit: number): Promise<Array<{ tenantId: string; slotId: string }>> {
    checkCount('limit', limit);
    const cutoff = now - olderThanMs;
    const found: Array<{ tenantId: string; slotId: string }> = [];
    const visited = new Set<string>();
    while (found.length < limit) {
      const candidates = await this.redis.zrangebyscore(SLOT_INDEX, '-inf', `(${cutoff}`, 'LIMIT', 0, limit - found.length + visited.size);
      const fresh = candidates.filter((t) => !visited.has(t));
      if (fresh.length === 0) break;
      for (const tenantId of fresh) {
        if (found.length >= limit) break;
        visited.add(tenantId);
        const picked = await this.commands.accountingSweepSlots(...slotKeys(tenantId), tenantId, cutoff, now - this.maxSlotAgeMs, now, limit - found.length);
        for (const slotId of picked) found.push({ tenantId, slotId });
      }
    }
    return found;
  }

  async slotsInUse(tenantId: string): Promise<number> {
    checkTenantId(tenantId);
    return this.redis.zcard(slotKeys(tenantId)[1]);
  }

  async addUsage(tenantId: string, at: number, delta: Partial<UsageCounters>): Promise<void> {
    checkTenantId(tenantId);
    const { counts, seconds } = usageIncrements(delta);
    if (counts.length === 0 && seconds === 0) return;
    const day = utcDay(at);
    const key = usageKey(day, tenantId);
    const ttlMs = nextUtcMidnight(at) - at + this.retentionMs;
    const batch = this.redis.multi();
    for (const [field, value] of counts) batch.hincrby(key, field, value);
    if (seconds !== 0) batch.hincrbyfloat(key, 'inferenceSeconds', seconds);
    batch.pexpire(key, ttlMs).sadd(usageTenantsKey(day), tenantId).pexpire(usageTenantsKey(day), ttlMs);
    await execAll(batch);
  }

  async usage(tenantId: string | undefined, fromDay: string, toDay: string): Promise<UsageRow[]> {
    if (tenantId !== undefined) checkTenantId(tenantId);
    const days = usageDays(fromDay, toDay);
    if (days.length === 0) return [];
    let pairs: Array<{ day: string; tenantId: string }>;
    if (tenantId !== undefined) {
      pairs = days.map((day) => ({ day, tenantId }));
    } else {
      const members = await execAll(days.reduce((batch, day) => batch.smembers(usageTenantsKey(day)), this.redis.pipeline()));
      pairs = days.flatMap((day, i) => (members[i] as string[]).map((id) => ({ day, tenantId: id })));
    }
    if (pairs.length === 0) return [];
    const hashes = await execAll(pairs.reduce((batch, p) => batch.hgetall(usageKey(p.day, p.tenantId)), this.redis.pipeline()));
    const rows: UsageRow[] = [];
    pairs.forEach((p, i) => {
      const counters = countersFrom(hashes[i]);
      if (counters) rows.push({ tenantId: p.tenantId, day: p.day, ...counters });
    });
    return rows.sort(compareRows);
  }

  async close(): Promise<void> {
    // The shared connection is closed by the app, after every store using it.
  }
}
