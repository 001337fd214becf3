import { afterEach, describe, expect, it } from 'vitest';
import { json, SEED_REQUEST, startStack, upstreamCalls, type Stack } from './helpers.js';
import { inspect, REDIS_URL, redisAvailable, skipReason, uniquePrefix } from './support/redis.js';

describe('per-tenant rate limits', () => {
  let stack: Stack | undefined;
  afterEach(async () => {
    await stack?.close();
    stack = undefined;
  });

  const submit = (s: Stack, tenant: string) =>
    fetch(`${s.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...s.bearer(tenant) }, body: JSON.stringify(SEED_REQUEST) });

  it("limits submits per tenant with 429, Retry-After and x-ratelimit-* headers, without touching another tenant's budget", async () => {
    stack = await startStack({
      tenants: [
        { id: 'team-a', submit: { max: 3, timeWindowMs: 60_000 } },
        { id: 'team-b', submit: { max: 3, timeWindowMs: 60_000 } },
      ],
    });
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await submit(stack, 'team-a');
      statuses.push(res.status);
      expect(res.headers.get('x-ratelimit-limit')).toBe('3');
      expect(res.headers.get('x-ratelimit-remaining')).toBe(String(2 - i));
    }
    expect(statuses).toEqual([200, 200, 200]);

    await stack.app.whenIdle();

    const before = upstreamCalls(stack).length;
    const limited = await submit(stack, 'team-a');
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(Number(limited.headers.get('retry-after'))).toBeLessThanOrEqual(60);
    expect(limited.headers.get('x-ratelimit-remaining')).toBe('0');
    const body = (await limited.json()) as { detail: string; error_type: string };
    expect(body.error_type).toBe('rate_limited');
    expect(body.detail).toMatch(/submit requests \(3 per 1 minute\)/);
    await stack.app.whenIdle();
    expect(upstreamCalls(stack).length).toBe(before);

    // team-b's budget is its own.
    for (let i = 0; i < 3; i++) expect((await submit(stack, 'team-b')).status).toBe(200);
    expect((await submit(stack, 'team-b')).status).toBe(429);
  });

  it('keeps submit and read budgets apart, and status, result, cancel and usage share the read budget', async () => {
    stack = await startStack({
      tenants: [{ id: 'team-a', submit: { max: 1, timeWindowMs: 60_000 }, read: { max: 4, timeWindowMs: 60_000 } }],
      // The job stays queued for the whole test, so each read's answer is known in advance.
      sim: { queueMs: 600_000 },
    });
    const job = (await (await submit(stack, 'team-a')).json()) as Record<string, string>;
    expect((await submit(stack, 'team-a')).status).toBe(429);
    const auth = stack.bearer('team-a');
    expect((await fetch(job.status_url!, { headers: auth })).status).toBe(202);
    expect((await fetch(job.response_url!, { headers: auth })).status).toBe(400);
    expect((await fetch(job.cancel_url!, { method: 'PUT', headers: auth })).status).toBe(202);
    // Usage reads count against the same budget (they had a counter of their own).
    expect((await fetch(`${stack.url}/v1/usage`, { headers: auth })).status).toBe(200);
    const fifth = await fetch(job.status_url!, { headers: auth });
    expect(fifth.status).toBe(429);
    expect(((await fifth.json()) as { detail: string }).detail).toMatch(/read requests \(4 per 1 minute\)/);
  });

  it('does not count unauthenticated calls against a tenant, and opens a new window when the old one ends', async () => {
    stack = await startStack({ tenants: [{ id: 'team-a', submit: { max: 2, timeWindowMs: 1_000 } }] });
    for (let i = 0; i < 5; i++) {
      const res = await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, authorization: 'Bearer wrong' }, body: '{}' });
      expect(res.status).toBe(401);
    }
    expect((await submit(stack, 'team-a')).status).toBe(200);
    expect((await submit(stack, 'team-a')).status).toBe(200);
    expect((await submit(stack, 'team-a')).status).toBe(429);
    await new Promise((r) => setTimeout(r, 1_050));
    expect((await submit(stack, 'team-a')).status).toBe(200);
  });

  it('counts requests the validation rejects: a tenant cannot probe without limit', async () => {
    stack = await startStack({ tenants: [{ id: 'team-a', submit: { max: 1, timeWindowMs: 60_000 } }] });
    const bad = await fetch(`${stack.url}/v1/image-to-image`, {
      method: 'POST',
      headers: { ...json, ...stack.bearer('team-a') },
      body: JSON.stringify({ ...SEED_REQUEST, strength: 5 }),
    });
    expect(bad.status).toBe(422);
    expect((await submit(stack, 'team-a')).status).toBe(429);
  });

  // The counters in memory and in Redis (shared by replicas) must behave alike.
  for (const store of ['memory', 'redis'] as const) {
    it.skipIf(store === 'redis' && !redisAvailable)(
      `applies a shortened window from the next request: a tenant is not kept waiting out the old one (${store}${store === 'redis' ? skipReason : ''})`,
      async () => {
        const prefix = uniquePrefix();
        stack = await startStack({
          tenants: [{ id: 'team-a', submit: { max: 1, timeWindowMs: 3_600_000 } }],
          ...(store === 'redis' ? { env: { REDIS_URL, REDIS_KEY_PREFIX: prefix } } : {}),
        });
        expect((await submit(stack, 'team-a')).status).toBe(200);
        const locked = await submit(stack, 'team-a');
        expect(locked.status).toBe(429);
        expect(Number(locked.headers.get('retry-after'))).toBeGreaterThan(3_000);
        // The operator meant one second, not one hour: the file is fixed and reloaded.
        const app = stack.app;
        app.replaceTenants(app.tenants().tenants.map((t) => ({ ...t, limits: { ...t.limits, submit: { max: 1, timeWindowMs: 1_000 } } })));
        const next = await submit(stack, 'team-a');
        expect(next.status).toBe(429);
        expect(Number(next.headers.get('retry-after'))).toBeLessThanOrEqual(1);
        expect(((await next.json()) as { detail: string }).detail).toMatch(/1 per 1 second\b.*Retry in 1 second\b/);
        await new Promise((r) => setTimeout(r, 1_100));
        expect((await submit(stack, 'team-a')).status).toBe(200);
        if (store === 'redis') {
          const client = inspect(prefix);
          try {
            // Named by policy and tenant, nothing else.
            expect(await client.keys(`${prefix}rl:*`)).toEqual([`${prefix}rl:submit:team-a`]);
          } finally {
            const keys = await client.keys(`${prefix}*`);
            if (keys.length) await client.del(...keys.map((k) => k.slice(prefix.length)));
            await client.quit();
          }
        }
      },
    );
  }
});
