import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OwnedByAnotherTenant } from '../src/jobs/job-store.js';
import { RedisJobStore } from '../src/jobs/redis-job-store.js';
import { createRedis, redisProblems, waitForRedis } from '../src/redis.js';
import { json, SEED_REQUEST, startStack, upstreamCalls, waitForCompletion, type Stack } from './helpers.js';
import { jobStoreContract } from './support/job-store-contract.js';
import { Redis } from 'ioredis';
import { freePort, inspect, PrivateRedis, REDIS_URL, redisAvailable, skipReason, uniquePrefix } from './support/redis.js';

const silent = { info() {}, warn() {}, error() {}, debug() {}, fatal() {}, trace() {}, child: () => silent, level: 'silent', silent() {} };

jobStoreContract(
  `redis${skipReason}`,
  async (ttlMs) => {
    const prefix = uniquePrefix();
    const redis = createRedis({ url: REDIS_URL, keyPrefix: prefix, commandTimeoutMs: 500 }, silent as never);
    await waitForRedis(redis, 2_000);
    return {
      store: new RedisJobStore(redis, ttlMs),
      advance: (ms) => new Promise((r) => setTimeout(r, ms)),
      now: Date.now,
      cleanup: async () => {
        const keys = await redis.keys(`${prefix}*`);
        // KEYS returns full names; DEL through a prefixed client would prefix them again.
        if (keys.length) await redis.del(...keys.map((k) => k.slice(prefix.length)));
        await redis.quit();
      },
    };
  },
  !redisAvailable,
);

describe.skipIf(!redisAvailable)(`jobs recorded by an earlier version${skipReason}`, () => {
  it('still belong to their tenant, and only to it: job:<id> (a plain string, or a hash) is read when no jobs:<id> hash exists', async () => {
    const prefix = uniquePrefix();
    const redis = createRedis({ url: REDIS_URL, keyPrefix: prefix, commandTimeoutMs: 500 }, silent as never);
    await waitForRedis(redis, 2_000);
    try {
      await redis.set('job:legacy-1', 'team-a', 'PX', 60_000);
      const store = new RedisJobStore(redis, 60_000);
      expect(await store.ownerOf('legacy-1')).toBe('team-a');
      expect(await store.ownerOf('legacy-2')).toBeUndefined();
      await store.record('new-1', 'team-b', 1);
      expect(await store.ownerOf('new-1')).toBe('team-b');
      // Nor can another tenant's record take it over.
      await expect(store.record('legacy-1', 'team-b', 1)).rejects.toBeInstanceOf(OwnedByAnotherTenant);
      expect(await store.ownerOf('legacy-1')).toBe('team-a');
      // Later earlier versions wrote a hash there: read too, and held as well.
      await redis.hset('job:legacy-3', 't', 'team-a', 'at', Date.now(), 'n', 1);
      expect(await store.ownerOf('legacy-3')).toBe('team-a');
      await expect(store.record('legacy-3', 'team-b', 1)).rejects.toBeInstanceOf(OwnedByAnotherTenant);
      await store.record('legacy-3', 'team-a', 1);
      expect(await store.ownerOf('legacy-3')).toBe('team-a');
    } finally {
      const keys = await redis.keys(`${prefix}*`);
      if (keys.length) await redis.del(...keys.map((k) => k.slice(prefix.length)));
      await redis.quit();
    }
  });
});

describe.skipIf(!redisAvailable)(`the check schedule in Redis${skipReason}`, () => {
  it('stays bounded by the job TTL even when nothing checks it (STALE_JOB_CHECK_MS=0)', async () => {
    const prefix = uniquePrefix();
    const redis = createRedis({ url: REDIS_URL, keyPrefix: prefix, commandTimeoutMs: 500 }, silent as never);
    await waitForRedis(redis, 2_000);
    try {
      const store = new RedisJobStore(redis, 300);
      await store.record('old-1', 'team-a', 1);
      await store.record('old-2', 'team-a', 1);
      await new Promise((r) => setTimeout(r, 400));
      await store.record('new-1', 'team-a', 1);
      expect(await redis.zrange('jobs-unchecked', 0, -1)).toEqual(['new-1']);
      // A settled job leaves it at once.
      await store.mark('new-1', 'settled');
      expect(await redis.zcard('jobs-unchecked')).toBe(0);
    } finally {
      const keys = await redis.keys(`${prefix}*`);
      if (keys.length) await redis.del(...keys.map((k) => k.slice(prefix.length)));
      await redis.quit();
    }
  });
});

describe.skipIf(!redisAvailable)(`a REDIS_URL with a password Redis refuses${skipReason}`, () => {
  it('says so in the log, once, and the gateway stays not ready', async () => {
    const server = new PrivateRedis(await freePort(), 'the-right-password');
    await server.start();
    const url = new URL(server.url);
    url.password = 'a-wrong-password';
    const stack = await startStack({ env: { REDIS_URL: url.toString(), REDIS_KEY_PREFIX: uniquePrefix() } });
    try {
      expect((await fetch(`${stack.url}/readyz`)).status).toBe(503);
      // Several reconnect attempts later, still one line.
      await new Promise((r) => setTimeout(r, 1_000));
      const refused = stack.logs.filter((l) => l.includes('Redis refused the credentials in REDIS_URL'));
      expect(refused).toHaveLength(1);
      expect(refused[0]).toMatch(/WRONGPASS/);
      expect(refused[0]).not.toContain('a-wrong-password');
      expect(JSON.parse(refused[0]!)).toMatchObject({ level: 50 });
    } finally {
      await stack.close();
      await server.stop();
    }
  });
});

describe.skipIf(!redisAvailable)(`a REDIS_URL with its password in the query (?password=)${skipReason}`, () => {
  it('connects, and the password is in no log line', async () => {
    const password = 'query-string-password-7d1e';
    const server = new PrivateRedis(await freePort(), password);
    await server.start();
    const stack = await startStack({ env: { REDIS_URL: `redis://127.0.0.1:${server.port}/0?password=${password}`, REDIS_KEY_PREFIX: uniquePrefix() } });
    try {
      expect((await fetch(`${stack.url}/readyz`)).status).toBe(200);
      const connected = stack.logs.find((l) => l.includes('redis connected'));
      expect(connected).toContain('password=***');
      expect(stack.logs.join('\n')).not.toContain(password);
    } finally {
      await stack.close();
      await server.stop();
    }
  });
});

describe.skipIf(!redisAvailable)(`a REDIS_URL naming a database this Redis does not have${skipReason}`, () => {
  it('is never used (Redis would fall back to database 0): not ready, submits refused, nothing written', async () => {
    const probe = inspect('');
    const databases = Number(((await probe.config('GET', 'databases')) as string[])[1]);
    const prefix = uniquePrefix();
    const url = new URL(REDIS_URL);
    url.pathname = `/${databases}`;
    const stack = await startStack({ env: { REDIS_URL: url.toString(), REDIS_KEY_PREFIX: prefix } });
    try {
      expect((await fetch(`${stack.url}/readyz`)).status).toBe(503);
      const res = await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-a') }, body: JSON.stringify(SEED_REQUEST) });
      expect(res.status).toBe(503);
      expect(((await res.json()) as { error_type: string }).error_type).toBe('store_unavailable');
      expect(upstreamCalls(stack).filter((c) => c.method === 'POST')).toEqual([]);
      expect(stack.logs.some((l) => l.includes('REDIS_URL selects a database this Redis does not have'))).toBe(true);
      // Closed for good, so not "reconnecting in the background" either.
      expect(stack.logs.filter((l) => l.includes('reconnecting'))).toEqual([]);
      for (let db = 0; db < databases; db++) {
        await probe.select(db);
        expect(await probe.keys(`${prefix}*`), `database ${db}`).toEqual([]);
      }
    } finally {
      await stack.close();
      // Only a failure above leaves keys: remove them wherever they went.
      for (let db = 0; db < databases; db++) {
        await probe.select(db);
        const keys = await probe.keys(`${prefix}*`);
        if (keys.length) await probe.del(...keys);
      }
      await probe.quit();
    }
  });
});

describe.skipIf(!redisAvailable)(`the jobs-in-flight gauge with two replicas${skipReason}`, () => {
  it('reads the shared slots at each scrape: both replicas report what is in flight, whichever saw the job end', async () => {
    const prefix = uniquePrefix();
    const stack = await startStack({
      env: { REDIS_URL, REDIS_KEY_PREFIX: prefix },
      tenants: [{ id: 'team-a', maxConcurrentJobs: 3 }, { id: 'team-b' }],
      sim: { queueMs: 300, runMs: 200 },
    });
    const other = await stack.addReplica();
    const gauge = async (url: string) => {
      const text = await (await fetch(`${url}/metrics`)).text();
      const line = text.split('\n').find((l) => l.startsWith('fal_gateway_concurrent_jobs{tenant="team-a"}'));
      return line === undefined ? undefined : Number(line.split(' ').at(-1));
    };
    try {
      const ids: string[] = [];
      for (let i = 0; i < 2; i++) {
        const res = await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-a') }, body: JSON.stringify(SEED_REQUEST) });
        ids.push(((await res.json()) as { request_id: string }).request_id);
      }
      expect(await gauge(stack.url)).toBe(2);
      expect(await gauge(other.url)).toBe(2);
      // Only the other replica sees the jobs end.
      for (const id of ids) {
        const deadline = Date.now() + 5_000;
        while ((await fetch(`${other.url}/v1/requests/${id}/status`, { headers: stack.bearer('team-a') })).status !== 200) {
          if (Date.now() > deadline) throw new Error('job did not complete');
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      await other.app.whenIdle();
      expect(await gauge(other.url)).toBe(0);
      expect(await gauge(stack.url)).toBe(0);
      // Tenants without a cap have no series.
      expect((await (await fetch(`${stack.url}/metrics`)).text())).not.toContain('fal_gateway_concurrent_jobs{tenant="team-b"}');
    } finally {
      await stack.close();
      const client = inspect('');
      const keys = await client.keys(`${prefix}*`);
      if (keys.length) await client.del(...keys);
      await client.quit();
    }
  });
});

describe.skipIf(!redisAvailable)(`two replicas sharing one Redis${skipReason}`, () => {
  let stack: Stack;
  let other: { url: string; logs: string[] };
  const prefix = uniquePrefix();

  beforeAll(async () => {
    const env = { REDIS_URL, REDIS_KEY_PREFIX: prefix, REDIS_COMMAND_TIMEOUT_MS: '1000' };
    stack = await startStack({
      env,
      tenants: [{ id: 'team-a', submit: { max: 10, timeWindowMs: 60_000 } }, { id: 'team-b' }],
      sim: { queueMs: 600_000 },
    });
    other = await stack.addReplica();
  });
  afterAll(async () => {
    const client = inspect('');
    const keys = await client.keys(`${prefix}*`);
    if (keys.length) await client.del(...keys);
    await client.quit();
    await stack?.close();
  });

  const submitTo = (url: string, tenant: string) =>
    fetch(`${url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer(tenant) }, body: JSON.stringify(SEED_REQUEST) });

  it('holds a submit limit of 10 exactly across both replicas under 40 concurrent submits', async () => {
    const before = upstreamCalls(stack).filter((c) => c.method === 'POST').length;
    const responses = await Promise.all(Array.from({ length: 40 }, (_, i) => submitTo(i % 2 ? other.url : stack.url, 'team-a')));
    const statuses = responses.map((r) => r.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(10);
    expect(statuses.filter((s) => s === 429)).toHaveLength(30);
    // Both replicas turned callers away: the budget was really shared, not split.
    expect(new Set(responses.map((r, i) => (r.status === 429 ? i % 2 : -1)).filter((x) => x >= 0)).size).toBe(2);
    expect(upstreamCalls(stack).filter((c) => c.method === 'POST').length - before).toBe(10);
    for (const r of responses.filter((x) => x.status === 429)) {
      expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0);
    }
  });

  it("serves a job submitted through one replica on the other, and hides it from another tenant on both", async () => {
    const job = (await (await submitTo(stack.url, 'team-b')).json()) as { request_id: string };
    const id = job.request_id;
    const onB = await fetch(`${other.url}/v1/requests/${id}/status`, { headers: stack.bearer('team-b') });
    expect([200, 202]).toContain(onB.status);
    for (const url of [stack.url, other.url]) {
      const foreign = await fetch(`${url}/v1/requests/${id}/status`, { headers: stack.bearer('team-a') });
      expect(foreign.status).toBe(404);
      const foreignCancel = await fetch(`${url}/v1/requests/${id}/cancel`, { method: 'PUT', headers: stack.bearer('team-a') });
      expect(foreignCancel.status).toBe(404);
    }
    const cancel = await fetch(`${other.url}/v1/requests/${id}/cancel`, { method: 'PUT', headers: stack.bearer('team-b') });
    expect(cancel.status).toBe(202);
    const result = await fetch(`${stack.url}/fal-ai/flux-lora/requests/${id}`, { headers: stack.bearer('team-b') });
    expect(result.status).toBe(400);
  });

  it('keeps every key under REDIS_KEY_PREFIX, with the job TTL on ownership records', async () => {
    const client = inspect('');
    try {
      const keys = await client.keys(`${prefix}*`);
      expect(keys.some((k) => k.startsWith(`${prefix}jobs:`))).toBe(true);
      expect(keys).toContain(`${prefix}rl:submit:team-a`);
      expect(keys).toContain(`${prefix}rl:read:team-b`);
      const job = keys.find((k) => k.startsWith(`${prefix}jobs:`))!;
      const ttl = await client.pttl(job);
      expect(ttl).toBeGreaterThan(86_000_000);
      expect(ttl).toBeLessThanOrEqual(86_400_000);
      expect(await client.hget(job, 't')).toMatch(/^team-[ab]$/);
    } finally {
      await client.quit();
    }
  });

  it('replays an idempotent submit through the other replica', async () => {
    const key = `k-${Date.now()}`;
    const send = (url: string) =>
      fetch(`${url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-b'), 'idempotency-key': key }, body: JSON.stringify(SEED_REQUEST) });
    const first = (await (await send(stack.url)).json()) as { request_id: string };
    const replay = await send(other.url);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(((await replay.json()) as { request_id: string }).request_id).toBe(first.request_id);
  });

  it('reports Redis in readiness', async () => {
    const ready = await fetch(`${other.url}/readyz`);
    expect(ready.status).toBe(200);
  });
});

describe.skipIf(!redisAvailable)(`the gateway's Redis scripts${skipReason}`, () => {
  it('are sent in full once per connection, then by their SHA1 alone (EVALSHA), and survive SCRIPT FLUSH', async () => {
    const redis = new PrivateRedis(await freePort());
    await redis.start();
    const observer = new Redis(redis.url);
    const stack = await startStack({
      env: { REDIS_URL: redis.url, STALE_JOB_CHECK_MS: '50' },
      tenants: [{ id: 'team-a', quota: { imagesPerDay: 1_000 }, maxConcurrentJobs: 50 }],
    });
    const calls = async (command: 'eval' | 'evalsha') => {
      const line = String(await observer.info('commandstats'))
        .split('\r\n')
        .find((l) => l.startsWith(`cmdstat_${command}:`));
      return Number(/calls=(\d+)/.exec(line ?? '')?.[1] ?? 0);
    };
    // Every script path a job takes: rate limit, quota, concurrency slot, ownership record,
    // status and result reads, settlement, a cancel, an Idempotency-Key replay.
    const jobCycle = async (round: number) => {
      const headers = { ...json, ...stack.bearer('team-a'), 'idempotency-key': `scripts-${round}` };
      const send = () => fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers, body: JSON.stringify(SEED_REQUEST) });
      const job = (await (await send()).json()) as { request_id: string; status_url: string; response_url: string };
      expect((await send()).headers.get('idempotent-replayed')).toBe('true');
      await waitForCompletion(job.status_url, stack.bearer('team-a'));
      expect((await fetch(job.response_url, { headers: stack.bearer('team-a') })).status).toBe(200);
      const other = (await (await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-a') }, body: JSON.stringify(SEED_REQUEST) })).json()) as { request_id: string };
      const cancel = await fetch(`${stack.url}/v1/requests/${other.request_id}/cancel`, { method: 'PUT', headers: stack.bearer('team-a') });
      expect([202, 400]).toContain(cancel.status);
    };
    try {
      await jobCycle(0);
      const [evalBefore, shaBefore] = [await calls('eval'), await calls('evalsha')];
      expect(evalBefore).toBeGreaterThan(0);
      for (let round = 1; round <= 4; round++) await jobCycle(round);
      // Four more cycles: not one script text more, every script call by its SHA1.
      expect(await calls('eval')).toBe(evalBefore);
      expect((await calls('evalsha')) - shaBefore).toBeGreaterThanOrEqual(4 * 5);
      // A Redis that forgot its scripts (restarted, or flushed): each is sent in full again, once.
      await observer.script('FLUSH');
      await jobCycle(5);
      const evalAfterFlush = await calls('eval');
      expect(evalAfterFlush).toBeGreaterThan(evalBefore);
      await jobCycle(6);
      expect(await calls('eval')).toBe(evalAfterFlush);
    } finally {
      await stack.close();
      await observer.quit();
      await redis.stop();
    }
  });
});

describe.skipIf(!redisAvailable)(`Redis connections${skipReason}`, () => {
  it('closes its Redis connection on shutdown', async () => {
    const redis = new PrivateRedis(await freePort());
    await redis.start();
    const observer = new Redis(redis.url);
    try {
      const named = async () => String(await observer.client('LIST')).split('\n').filter((l: string) => l.includes('name=fal-gateway')).length;
      const stack = await startStack({ env: { REDIS_URL: redis.url } });
      expect(await named()).toBe(1);
      await stack.close();
      expect(await named()).toBe(0);
      // Its own close is not an outage (the client sees its socket close a moment after QUIT's answer).
      await new Promise((r) => setTimeout(r, 200));
      expect(stack.logs.filter((l) => l.includes('redis unavailable'))).toEqual([]);
    } finally {
      observer.disconnect();
      await redis.stop();
    }
  });
});

describe.skipIf(!redisAvailable)(`a Redis that may evict keys when full${skipReason}`, () => {
  it('is used, with a warning at connection that it could drop job ownership and counters', async () => {
    const redis = new PrivateRedis(await freePort());
    await redis.start();
    const admin = new Redis(redis.url);
    try {
      await admin.config('SET', 'maxmemory', '100mb');
      await admin.config('SET', 'maxmemory-policy', 'allkeys-lru');
      const stack = await startStack({ env: { REDIS_URL: redis.url } });
      try {
        expect((await fetch(`${stack.url}/readyz`)).status).toBe(200);
        await expect.poll(() => stack.logs.filter((l) => l.includes('maxmemory-policy allkeys-lru')).length).toBe(1);
        const line = JSON.parse(stack.logs.find((l) => l.includes('maxmemory-policy allkeys-lru'))!) as { level: number; msg: string };
        expect(line.level).toBe(40);
        expect(line.msg).toMatch(/set maxmemory-policy noeviction/);
      } finally {
        await stack.close();
      }
      // noeviction (Redis's default): nothing to say.
      await admin.config('SET', 'maxmemory-policy', 'noeviction');
      const quiet = await startStack({ env: { REDIS_URL: redis.url } });
      try {
        expect((await fetch(`${quiet.url}/readyz`)).status).toBe(200);
        expect(quiet.logs.filter((l) => l.includes('maxmemory-policy'))).toEqual([]);
      } finally {
        await quiet.close();
      }
    } finally {
      admin.disconnect();
      await redis.stop();
    }
  });
});

describe.skipIf(!redisAvailable)(`a Redis that becomes a read-only replica (a primary demoted by a failover)${skipReason}`, () => {
  it('makes the gateway not ready and refuses submits, reconnects once to look for the primary, and serves again once it is one', async () => {
    const redis = new PrivateRedis(await freePort());
    await redis.start();
    const observer = new Redis(redis.url);
    const stack = await startStack({ env: { REDIS_URL: redis.url, REDIS_COMMAND_TIMEOUT_MS: '500' } });
    const submit = () => fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-a') }, body: JSON.stringify(SEED_REQUEST) });
    const readiness = async () => (await fetch(`${stack.url}/readyz`)).status;
    const logged = (text: string) => stack.logs.filter((l) => l.includes(text)).length;
    try {
      expect(await readiness()).toBe(200);
      expect((await submit()).status).toBe(200);
      // A replica of a primary that is not there: it keeps its data, answers PING and reads, refuses writes.
      await observer.replicaof('127.0.0.1', await freePort());
      expect(await readiness()).toBe(503);
      const refused = await submit();
      expect(refused.status).toBe(503);
      expect(((await refused.json()) as { error_type: string }).error_type).toBe('store_unavailable');
      await expect.poll(() => logged('READONLY: a replica, not the primary'), { timeout: 3_000 }).toBe(1);
      // The gateway reconnected (where a failover endpoint would lead it to the new primary) and,
      // finding a replica again, says so.
      await expect.poll(() => logged('redis connected'), { timeout: 3_000 }).toBe(2);
      await expect.poll(() => logged('REDIS_URL leads to a read-only replica'), { timeout: 3_000 }).toBe(1);
      // More refused writes within a few seconds: no reconnection each time.
      for (let i = 0; i < 5; i++) expect((await submit()).status).toBe(503);
      expect(logged('READONLY: a replica, not the primary')).toBe(1);
      await observer.replicaof('NO', 'ONE');
      await expect.poll(readiness, { timeout: 3_000 }).toBe(200);
      expect((await submit()).status).toBe(200);
    } finally {
      await stack.close();
      observer.disconnect();
      await redis.stop();
    }
  });
});

describe.skipIf(!redisAvailable)(`a Redis user not granted ROLE (least privilege: +@all -@dangerous)${skipReason}`, () => {
  it('is ready and serves; the log says its role cannot be checked', async () => {
    const redis = new PrivateRedis(await freePort());
    await redis.start();
    const observer = new Redis(redis.url);
    await observer.call('ACL', 'SETUSER', 'gateway', 'on', '>gateway-password-7f1c', '~*', '&*', '+@all', '-@dangerous');
    const stack = await startStack({ env: { REDIS_URL: `redis://gateway:gateway-password-7f1c@127.0.0.1:${redis.port}/0` } });
    try {
      await expect.poll(async () => (await fetch(`${stack.url}/readyz`)).status, { timeout: 3_000 }).toBe(200);
      const submitted = await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-a') }, body: JSON.stringify(SEED_REQUEST) });
      expect(submitted.status).toBe(200);
      await expect.poll(() => stack.logs.filter((l) => l.includes('Redis refuses ROLE to this connection')).length, { timeout: 3_000 }).toBe(1);
      expect(stack.logs.join('\n')).not.toContain('gateway-password-7f1c');
    } finally {
      await stack.close();
      observer.disconnect();
      await redis.stop();
    }
  });
});

describe('what the gateway makes of a Redis server, from INFO', () => {
  const info = (fields: Record<string, string>) => `# Server\r\n${Object.entries(fields).map(([k, v]) => `${k}:${v}`).join('\r\n')}\r\n`;
  it('refuses a Redis older than 7 (no SET ... NX GET)', () => {
    expect(redisProblems(info({ redis_version: '6.2.14', maxmemory: '0', maxmemory_policy: 'noeviction' })).fatal).toMatch(/Redis 6\.2\.14 is older than 7/);
    expect(redisProblems(info({ redis_version: '7.0.15', maxmemory: '0', maxmemory_policy: 'noeviction' }))).toEqual({});
    expect(redisProblems(info({ redis_version: '8.2.1' }))).toEqual({});
  });
  it('warns of an eviction policy only where a memory limit makes it bite', () => {
    expect(redisProblems(info({ redis_version: '7.2.4', maxmemory: '1073741824', maxmemory_policy: 'volatile-ttl' })).warning).toMatch(/maxmemory-policy volatile-ttl/);
    expect(redisProblems(info({ redis_version: '7.2.4', maxmemory: '0', maxmemory_policy: 'allkeys-lru' }))).toEqual({});
    expect(redisProblems(info({ redis_version: '7.2.4', maxmemory: '1073741824', maxmemory_policy: 'noeviction' }))).toEqual({});
  });
  it('warns of a replica, which refuses every write', () => {
    expect(redisProblems(info({ redis_version: '7.2.4', role: 'slave' })).warning).toMatch(/read-only replica/);
    expect(redisProblems(info({ redis_version: '7.2.4', role: 'master' }))).toEqual({});
  });
});

describe('without REDIS_URL', () => {
  it('warns once at start in production that limits and ownership are per replica', async () => {
    const production = await startStack({ env: { NODE_ENV: 'production' }, listen: false });
    const development = await startStack({ listen: false });
    try {
      const warnings = (logs: string[]) => logs.filter((l) => l.includes('REDIS_URL is not set')).length;
      expect(warnings(production.logs)).toBe(1);
      expect(warnings(development.logs)).toBe(0);
    } finally {
      await production.close();
      await development.close();
    }
  });
});

describe('a REDIS_URL where no Redis listens', () => {
  it('says why in the log, once per cause, and the gateway stays not ready', async () => {
    const port = await freePort();
    const stack = await startStack({ env: { REDIS_URL: `redis://:a-password-never-logged@127.0.0.1:${port}/0`, REDIS_KEY_PREFIX: uniquePrefix() } });
    try {
      expect((await fetch(`${stack.url}/readyz`)).status).toBe(503);
      // Several reconnect attempts later, still one line naming the cause.
      await new Promise((r) => setTimeout(r, 1_000));
      const failed = stack.logs.filter((l) => l.includes('redis connection failed'));
      expect(failed).toHaveLength(1);
      expect(JSON.parse(failed[0]!)).toMatchObject({ level: 40, err: expect.stringContaining('ECONNREFUSED') });
      for (const line of stack.logs) expect(line).not.toContain('a-password-never-logged');
    } finally {
      await stack.close();
    }
  });
});
