import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { json, SEED_REQUEST, startStack, upstreamCalls, type Stack } from './helpers.js';
import { freePort, PrivateRedis, redisAvailable, skipReason } from './support/redis.js';

/**
 * Redis trouble must never hang a request: each answer comes fast, says what happened, and the
 * gateway recovers by itself. Two replicas share a redis-server this test owns: one fails the
 * rate limit open (the default), the other closed.
 */
describe.skipIf(!redisAvailable)(`when Redis goes away${skipReason}`, () => {
  let redis: PrivateRedis;
  let stack: Stack;
  let closed: { url: string };
  let jobId: string;

  beforeAll(async () => {
    redis = new PrivateRedis(await freePort());
    await redis.start();
    stack = await startStack({ env: { REDIS_URL: redis.url, REDIS_COMMAND_TIMEOUT_MS: '100' } });
    closed = await stack.addReplica({ RATE_LIMIT_ON_STORE_ERROR: 'closed' });
    const res = await submit(stack.url);
    jobId = ((await res.json()) as { request_id: string }).request_id;
  });
  afterAll(async () => {
    await stack?.close();
    await redis?.stop();
  });

  const submit = (url: string) =>
    fetch(`${url}/v1/image-to-image`, {
      method: 'POST',
      headers: { ...json, ...stack.bearer('team-a') },
      body: JSON.stringify(SEED_REQUEST),
      signal: AbortSignal.timeout(5_000),
    });
  const status = (url: string, id = jobId) => fetch(`${url}/v1/requests/${id}/status`, { headers: stack.bearer('team-a'), signal: AbortSignal.timeout(5_000) });

  async function timed(call: () => Promise<Response>) {
    const started = performance.now();
    const res = await call();
    const body = (await res.json()) as { error_type?: string; detail?: string };
    return { status: res.status, body, ms: performance.now() - started };
  }

  async function untilReady(url: string) {
    const deadline = Date.now() + 10_000;
    while ((await fetch(`${url}/readyz`)).status !== 200) {
      if (Date.now() > deadline) throw new Error('gateway did not become ready again');
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  it('answers fast and by the configured policy while Redis is frozen (connected, silent)', async () => {
    redis.pause();
    try {
      const postsBefore = upstreamCalls(stack).filter((c) => c.method === 'POST').length;
      // Fail closed: refused before anything is queued.
      const refused = await timed(() => submit(closed.url));
      expect(refused.status).toBe(503);
      expect(refused.body.error_type).toBe('rate_limit_unavailable');
      expect(upstreamCalls(stack).filter((c) => c.method === 'POST').length).toBe(postsBefore);
      // Fail open: the limit is skipped, but a submit is not queued either: the store that did not
      // answer its rate limit is the one its job would be recorded in (a paid job nobody could reach).
      const open = await timed(() => submit(stack.url));
      expect(open.status).toBe(503);
      expect(open.body.error_type).toBe('store_unavailable');
      expect(upstreamCalls(stack).filter((c) => c.method === 'POST').length).toBe(postsBefore);
      // Reads: never a 404 that would make a client think its job is gone.
      const read = await timed(() => status(stack.url));
      expect(read.status).toBe(503);
      expect(read.body.error_type).toBe('store_unavailable');
      const readClosed = await timed(() => status(closed.url));
      expect(readClosed.status).toBe(503);
      expect(readClosed.body.error_type).toBe('rate_limit_unavailable');
      for (const r of [refused, open, read, readClosed]) expect(r.ms).toBeLessThan(1_500);
      expect((await fetch(`${stack.url}/readyz`)).status).toBe(503);
      expect((await fetch(`${stack.url}/healthz`)).status).toBe(200);
    } finally {
      redis.resume();
    }
    await untilReady(stack.url);
    expect((await status(stack.url)).status).toBeLessThan(300);
  });

  it('leaves no claim behind for an Idempotency-Key whose submit met a frozen Redis: the retry is served', async () => {
    const withKey = () =>
      fetch(`${stack.url}/v1/image-to-image`, {
        method: 'POST',
        headers: { ...json, ...stack.bearer('team-a'), 'idempotency-key': 'order-7f3a-frozen-redis' },
        body: JSON.stringify(SEED_REQUEST),
        signal: AbortSignal.timeout(5_000),
      });
    const postsBefore = upstreamCalls(stack).filter((c) => c.method === 'POST').length;
    redis.pause();
    let refused: Awaited<ReturnType<typeof timed>>;
    try {
      refused = await timed(withKey);
    } finally {
      // The claim that timed out is carried out now, once Redis runs again.
      redis.resume();
    }
    expect(refused.status).toBe(503);
    expect(refused.body.error_type).toBe('store_unavailable');
    expect(upstreamCalls(stack).filter((c) => c.method === 'POST').length).toBe(postsBefore);
    await untilReady(stack.url);
    // Nothing was queued: the retry queues the job (before: 409 for the claim's 90 s).
    const retried = await withKey();
    expect(retried.status).toBe(200);
    const job = (await retried.json()) as { request_id: string };
    expect(upstreamCalls(stack).filter((c) => c.method === 'POST').length).toBe(postsBefore + 1);
    // And the key now stands for that job.
    const replayed = await withKey();
    expect(replayed.headers.get('idempotent-replayed')).toBe('true');
    expect(((await replayed.json()) as { request_id: string }).request_id).toBe(job.request_id);
  });

  /** Until the replica has seen its Redis connection close (a few ms after the server dies). */
  async function untilNotReady(url: string) {
    const deadline = Date.now() + 5_000;
    while ((await fetch(`${url}/readyz`)).status !== 503) {
      if (Date.now() > deadline) throw new Error('gateway did not notice that Redis went away');
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  it('answers fast while Redis is down, queues nothing it cannot record, and recovers when it returns', async () => {
    await redis.stop();
    await untilNotReady(stack.url);
    await untilNotReady(closed.url);
    const postsBefore = upstreamCalls(stack).filter((c) => c.method === 'POST').length;
    const open = await timed(() => submit(stack.url));
    expect(open.status).toBe(503);
    expect(open.body.error_type).toBe('store_unavailable');
    const closedSubmit = await timed(() => submit(closed.url));
    expect(closedSubmit.status).toBe(503);
    expect(closedSubmit.body.error_type).toBe('rate_limit_unavailable');
    expect(upstreamCalls(stack).filter((c) => c.method === 'POST').length).toBe(postsBefore);
    const read = await timed(() => status(stack.url));
    expect(read.status).toBe(503);
    expect(read.body.error_type).toBe('store_unavailable');
    for (const r of [open, closedSubmit, read]) expect(r.ms).toBeLessThan(1_000);
    const ready = await fetch(`${closed.url}/readyz`);
    expect(ready.status).toBe(503);
    expect(((await ready.json()) as { checks: { store: string } }).checks.store).toBe('failing');

    await redis.start();
    await untilReady(stack.url);
    await untilReady(closed.url);
    const again = await submit(closed.url);
    expect(again.status).toBe(200);
    const { request_id: id } = (await again.json()) as { request_id: string };
    expect([200, 202]).toContain((await status(stack.url, id)).status);
    expect(stack.logs.some((l) => l.includes('redis unavailable; reconnecting'))).toBe(true);
  });
});

describe.skipIf(!redisAvailable)(`a concurrency slot taken while Redis is frozen${skipReason}`, () => {
  let redis: PrivateRedis;
  let stack: Stack;
  beforeAll(async () => {
    redis = new PrivateRedis(await freePort());
    await redis.start();
    stack = await startStack({ tenants: [{ id: 'team-a', maxConcurrentJobs: 1 }], sim: { queueMs: 60_000 }, env: { REDIS_URL: redis.url, REDIS_COMMAND_TIMEOUT_MS: '100' } });
  });
  afterAll(async () => {
    await stack?.close();
    await redis?.stop();
  });

  it('is given back when Redis resumes: the refused submit holds no slot, and the next one is served', async () => {
    const submit = () =>
      fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-a') }, body: JSON.stringify(SEED_REQUEST), signal: AbortSignal.timeout(5_000) });
    redis.pause();
    let refused: Response;
    try {
      refused = await submit();
    } finally {
      redis.resume();
    }
    expect(refused.status).toBe(503);
    expect(((await refused.json()) as { error_type: string }).error_type).toBe('store_unavailable');
    const deadline = Date.now() + 10_000;
    while ((await fetch(`${stack.url}/readyz`)).status !== 200) {
      if (Date.now() > deadline) throw new Error('gateway did not become ready again');
      await new Promise((r) => setTimeout(r, 50));
    }
    // The one slot is free (before: held by the refused submit until the stale-slot sweep, minutes later).
    const next = await submit();
    expect(next.status).toBe(200);
    expect((await submit()).status).toBe(429);
  });
});

describe.skipIf(!redisAvailable)(`the log while Redis is down${skipReason}`, () => {
  it('says so once per kind of refusal, at warn and without a stack, not once per request; each request keeps its own line', async () => {
    const redis = new PrivateRedis(await freePort());
    await redis.start();
    const stack = await startStack({ env: { REDIS_URL: redis.url, REDIS_COMMAND_TIMEOUT_MS: '100' } });
    try {
      const submitted = await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-a') }, body: JSON.stringify(SEED_REQUEST) });
      const { request_id: id } = (await submitted.json()) as { request_id: string };
      await redis.stop();
      const deadline = Date.now() + 5_000;
      while ((await fetch(`${stack.url}/readyz`)).status !== 503) {
        if (Date.now() > deadline) throw new Error('the gateway did not notice that Redis went away');
        await new Promise((r) => setTimeout(r, 20));
      }
      const from = stack.logs.length;
      for (let i = 0; i < 20; i++) {
        const read = await fetch(`${stack.url}/v1/requests/${id}/status`, { headers: stack.bearer('team-a') });
        expect(read.status).toBe(503);
        await read.arrayBuffer();
      }
      const parsed = () => stack.logs.slice(from).map((l) => JSON.parse(l) as { msg: string; statusCode?: number });
      await expect.poll(() => parsed().filter((l) => l.msg === 'request').length).toBe(20);
      const lines = stack.logs.slice(from).map((l) => JSON.parse(l) as { level: number; msg: string; statusCode?: number; err?: unknown; suppressed?: number });
      expect(lines.filter((l) => l.msg === 'request' && l.statusCode === 503)).toHaveLength(20);
      const others = lines.filter((l) => l.msg !== 'request');
      // One line for the rate limit that could not be counted, one for the refusals it led to.
      expect(others.map((l) => l.msg)).toEqual([
        'rate-limit store unavailable (logged at most every 10 s)',
        'The job store is unavailable; try again shortly (refusals like this are logged at most every 10 s)',
      ]);
      expect(others.every((l) => l.level === 40 && !JSON.stringify(l).includes('"stack"'))).toBe(true);
    } finally {
      await stack.close();
      await redis.stop();
    }
  });
});

describe.skipIf(!redisAvailable)(`the background check while Redis is down${skipReason}`, () => {
  let redis: PrivateRedis;
  let stack: Stack;
  beforeAll(async () => {
    redis = new PrivateRedis(await freePort());
    await redis.start();
    stack = await startStack({ env: { REDIS_URL: redis.url, REDIS_COMMAND_TIMEOUT_MS: '100', STALE_JOB_CHECK_MS: '100' } });
  });
  afterAll(async () => {
    await stack?.close();
    await redis?.stop();
  });

  it('says it was skipped because Redis is not connected, not in the client library\'s words', async () => {
    await redis.stop();
    const skipped = () =>
      stack.logs.map((l) => JSON.parse(l) as { level: number; msg: string; err?: string }).filter((l) => / check skipped: the store \(Redis\) is not connected; it runs again at the next check$/.test(l.msg));
    await expect.poll(() => skipped().length, { timeout: 5_000 }).toBeGreaterThan(0);
    expect(skipped()[0]!.level).toBe(40);
    // No line says only "failed" with the library's message.
    expect(stack.logs.filter((l) => l.includes('check failed'))).toEqual([]);
  });
});
