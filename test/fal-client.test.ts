import { ApiError, createFalClient } from '@fal-ai/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gatewayPathFor } from '../src/http/fal-proxy.js';
import { MODEL_ID } from '../src/model.js';
import { manualClock } from '../src/simulator/index.js';
import { SEED_REQUEST, startStack, upstreamCalls, UPSTREAM_TOKEN, type Stack } from './helpers.js';

/**
 * fal's own JS client, unchanged, through the gateway's implementation of fal's proxy protocol.
 * Outside a browser the client only proxies with `when: "always"`; it sends the tenant key it is
 * given as `Authorization: Key <key>`, which the gateway accepts, and never reaches fal itself.
 */
describe('@fal-ai/client through the gateway', () => {
  let stack: Stack;
  const client = (tenant: string) =>
    createFalClient({ proxyUrl: { url: `${stack.url}/api/fal/proxy`, when: 'always' }, credentials: stack.keys[tenant] });

  beforeAll(async () => {
    // Long enough that a cancel right after submit always finds the job queued or running.
    stack = await startStack({ sim: { queueMs: 400, runMs: 400 } });
  });
  afterAll(() => stack.close());

  it('subscribe resolves with the model output, with status updates and logs on the way', async () => {
    const updates: Array<{ status: string; logs?: unknown[] }> = [];
    const result = await client('team-a').subscribe(MODEL_ID, {
      input: SEED_REQUEST,
      logs: true,
      pollInterval: 40,
      onQueueUpdate: (update) => updates.push(update as { status: string; logs?: unknown[] }),
    });
    const data = result.data as { images: Array<{ url: string; content_type: string }>; prompt: string };
    expect(result.requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(data.prompt).toBe(SEED_REQUEST.prompt);
    expect(data.images).toHaveLength(1);
    expect(data.images[0]!.content_type).toBe('image/jpeg');
    const seen = new Set(updates.map((u) => u.status));
    expect(seen.has('IN_QUEUE') || seen.has('IN_PROGRESS')).toBe(true);
    expect(seen.has('COMPLETED')).toBe(true);
    expect(updates.some((u) => Array.isArray(u.logs) && u.logs.length > 0)).toBe(true);
    // Every call reached the simulated fal with the gateway's token, never the tenant key.
    const calls = upstreamCalls(stack).filter((c) => c.path.includes(result.requestId) || c.method === 'POST');
    expect(calls.every((c) => c.headers.authorization === `Key ${UPSTREAM_TOKEN}`)).toBe(true);
    expect(JSON.stringify(calls.map((c) => c.headers))).not.toContain(stack.keys['team-a']);
  });

  it("subscribe in streaming mode ends with the job's logs once each, as polling shows them", async () => {
    const fal = client('team-a');
    let lastLogs: Array<{ message: string }> = [];
    const result = await fal.subscribe(MODEL_ID, {
      input: SEED_REQUEST,
      logs: true,
      mode: 'streaming',
      onQueueUpdate: (update) => {
        if ('logs' in update && Array.isArray(update.logs)) lastLogs = update.logs as Array<{ message: string }>;
      },
    });
    const polled = (await fal.queue.status(MODEL_ID, { requestId: result.requestId, logs: true })) as { logs: Array<{ message: string }> };
    expect(polled.logs.length).toBeGreaterThan(1);
    // The client adds up each event's logs: an event that repeated earlier lines would double them.
    expect(lastLogs.map((l) => l.message)).toEqual(polled.logs.map((l) => l.message));
  });

  it('queue.submit, then status, then result, separately', async () => {
    const fal = client('team-a');
    const queued = await fal.queue.submit(MODEL_ID, { input: { ...SEED_REQUEST, num_images: 2 } });
    expect(queued.status).toBe('IN_QUEUE');
    const status = await fal.queue.status(MODEL_ID, { requestId: queued.request_id, logs: false });
    expect(['IN_QUEUE', 'IN_PROGRESS', 'COMPLETED']).toContain(status.status);
    let done = status;
    for (let i = 0; i < 100 && done.status !== 'COMPLETED'; i++) {
      await new Promise((r) => setTimeout(r, 30));
      done = await fal.queue.status(MODEL_ID, { requestId: queued.request_id, logs: false });
    }
    expect(done.status).toBe('COMPLETED');
    const result = await fal.queue.result(MODEL_ID, { requestId: queued.request_id });
    expect((result.data as { images: unknown[] }).images).toHaveLength(2);
    // Each call's line names the route that served it and the proxy path it came in on.
    const submitLine = stack.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'request' && l.method === 'POST' && l.requestId === queued.request_id);
    expect(submitLine).toMatchObject({ url: `/${MODEL_ID}`, proxiedFrom: '/api/fal/proxy', statusCode: 200 });
  });

  it('queue.cancel cancels a queued job', async () => {
    const fal = client('team-a');
    const queued = await fal.queue.submit(MODEL_ID, { input: SEED_REQUEST });
    await fal.queue.cancel(MODEL_ID, { requestId: queued.request_id });
    const result = await fetch(`${stack.url}/v1/requests/${queued.request_id}`, { headers: stack.bearer('team-a') });
    expect(result.status).toBe(400);
    expect(await result.json()).toEqual({ detail: 'Request was cancelled' });
  });

  it("keeps tenants apart through the proxy too: another tenant's job is 404", async () => {
    const queued = await client('team-a').queue.submit(MODEL_ID, { input: SEED_REQUEST });
    await expect(client('team-b').queue.status(MODEL_ID, { requestId: queued.request_id, logs: false })).rejects.toMatchObject({ status: 404 });
  });

  it('validates proxied input like any other: 422 before anything is queued', async () => {
    await stack.app.whenIdle();
    const before = upstreamCalls(stack).length;
    await expect(client('team-a').queue.submit(MODEL_ID, { input: { ...SEED_REQUEST, strength: 3 } })).rejects.toMatchObject({ status: 422 });
    await stack.app.whenIdle();
    expect(upstreamCalls(stack).length).toBe(before);
  });

  it('serves a proxyUrl written with a trailing slash the same (the router takes every route either way)', async () => {
    const fal = createFalClient({ proxyUrl: { url: `${stack.url}/api/fal/proxy/`, when: 'always' }, credentials: stack.keys['team-a'] });
    const result = await fal.subscribe(MODEL_ID, { input: SEED_REQUEST, pollInterval: 40 });
    expect((result.data as { prompt: string }).prompt).toBe(SEED_REQUEST.prompt);
    const status = await fal.queue.status(MODEL_ID, { requestId: result.requestId });
    expect(status.status).toBe('COMPLETED');
    // Still only the proxy path itself: a longer path is no proxy call.
    const longer = await fetch(`${stack.url}/api/fal/proxy/x`, { headers: { ...stack.bearer('team-a'), 'x-fal-target-url': `https://queue.fal.run/fal-ai/flux-lora/requests/${result.requestId}/status` } });
    expect(longer.status).toBe(404);
  });

  it('survives malformed escapes in the target from an anonymous caller (once a crash)', async () => {
    for (const target of ['https://queue.fal.run/fal-ai/flux-lora/requests/%ZZ', 'https://queue.fal.run/%E0%A4%A/x']) {
      const res = await fetch(`${stack.url}/api/fal/proxy`, { headers: { 'x-fal-target-url': target } });
      expect(res.status).toBe(401);
    }
    expect((await fetch(`${stack.url}/healthz`)).status).toBe(200);
  });

  it('refuses anonymous callers and targets other than this model on the fal queue host', async () => {
    const proxy = `${stack.url}/api/fal/proxy`;
    const anonymous = await fetch(proxy, { method: 'POST', headers: { 'x-fal-target-url': `https://queue.fal.run/${MODEL_ID}`, 'content-type': 'application/json' }, body: JSON.stringify(SEED_REQUEST) });
    expect(anonymous.status).toBe(401);
    await stack.app.whenIdle();
    const before = upstreamCalls(stack).length;
    for (const [method, target] of [
      ['POST', 'https://queue.fal.run/fal-ai/flux-pro/v1.1'],
      ['POST', 'https://fal.run/fal-ai/flux-lora/image-to-image'],
      ['POST', 'https://evil.example/fal-ai/flux-lora/image-to-image'],
      ['GET', 'https://rest.alpha.fal.ai/storage/upload/initiate'],
      ['GET', 'http://queue.fal.run/fal-ai/flux-lora/requests/abc/status'],
      ['GET', 'https://queue.fal.run/fal-ai/flux-lora/image-to-image'],
      ['DELETE', 'https://queue.fal.run/fal-ai/flux-lora/requests/abc'],
      ['GET', 'not a url'],
      ['GET', 'https://queue.fal.run/fal-ai/flux-lora/requests/%ZZ/status'],
      ['GET', 'https://queue.fal.run/fal-ai/flux-lora/requests/%E0%A4%A'],
      ['GET', 'https://queue.fal.run/fal-ai/flux-lora/requests/a%2Fb/status'],
      ['GET', undefined],
    ] as const) {
      const res = await fetch(proxy, {
        method,
        headers: { ...stack.bearer('team-a'), ...(target ? { 'x-fal-target-url': target } : {}) },
      });
      expect(res.status, `${method} ${target}`).toBe(400);
      expect(((await res.json()) as { error_type: string }).error_type).toBe('proxy_target_not_allowed');
      // Refused, yet counted against the tenant's read budget like any other call.
      expect(res.headers.get('ratelimit-policy'), `${method} ${target}`).toMatch(/^"read";/);
    }
    // A large body to a target not allowed (fal.run with an inline image) hears why, not that it is too large.
    const large = await fetch(proxy, {
      method: 'POST',
      headers: { ...stack.bearer('team-a'), 'x-fal-target-url': `https://fal.run/${MODEL_ID}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ...SEED_REQUEST, image_url: `data:image/png;base64,${'A'.repeat(100_000)}` }),
    });
    expect(large.status).toBe(400);
    expect(((await large.json()) as { error_type: string }).error_type).toBe('proxy_target_not_allowed');
    await stack.app.whenIdle();
    expect(upstreamCalls(stack).length).toBe(before);
  });

  it('maps only the allowed targets', () => {
    expect(gatewayPathFor('POST', `https://queue.fal.run/${MODEL_ID}`)).toBe(`/${MODEL_ID}`);
    expect(gatewayPathFor('GET', 'https://queue.fal.run/fal-ai/flux-lora/requests/abc-1/status?logs=1')).toBe('/fal-ai/flux-lora/requests/abc-1/status?logs=1');
    expect(gatewayPathFor('PUT', 'https://queue.fal.run/fal-ai/flux-lora/requests/abc-1/cancel')).toBe('/fal-ai/flux-lora/requests/abc-1/cancel');
    expect(gatewayPathFor('GET', 'https://queue.fal.run/fal-ai/flux-lora/requests/abc-1/cancel')).toBeUndefined();
    expect(gatewayPathFor('GET', 'https://queue.fal.run/fal-ai/flux-lora/requests/..%2F..%2Fadmin')).toBeUndefined();
    expect(gatewayPathFor('GET', 'https://user:pw@queue.fal.run/fal-ai/flux-lora/requests/a')).toBeUndefined();
    expect(gatewayPathFor('GET', 'https://queue.fal.run:8443/fal-ai/flux-lora/requests/a')).toBeUndefined();
  });
});

describe("@fal-ai/client's startTimeout through the gateway", () => {
  const clock = manualClock(Date.now());
  let stack: Stack;
  beforeAll(async () => {
    // Jobs wait 5 s in the queue (on a clock the test moves): a 2 s start timeout runs out first.
    stack = await startStack({ sim: { queueMs: 5_000, runMs: 100, now: clock.now } });
  });
  afterAll(() => stack.close());

  it("ends a job that could not start in time with fal's 504, marked as the caller's own, asked for once and counted as failed", async () => {
    const fal = createFalClient({ proxyUrl: { url: `${stack.url}/api/fal/proxy`, when: 'always' }, credentials: stack.keys['team-a'] });
    const updates: string[] = [];
    let requestId = '';
    const subscribed = fal.subscribe(MODEL_ID, {
      input: SEED_REQUEST,
      startTimeout: 2,
      pollInterval: 20,
      onEnqueue: (id) => (requestId = id),
      onQueueUpdate: (update) => updates.push(update.status),
    });
    const failure = subscribed.then(
      () => undefined,
      (err: unknown) => err,
    );
    await expect.poll(() => updates.length).toBeGreaterThan(0);
    expect(upstreamCalls(stack).find((c) => c.method === 'POST')?.headers['x-fal-request-timeout']).toBe('2');
    clock.advance(2_500);
    const err = (await failure) as ApiError<unknown> | undefined;
    expect(err).toBeInstanceOf(ApiError);
    expect(err!.status).toBe(504);
    expect(err!.isUserTimeout).toBe(true);
    expect(updates.at(-1)).toBe('COMPLETED');
    const status = (await (await fetch(`${stack.url}/v1/requests/${requestId}/status`, { headers: stack.bearer('team-a') })).json()) as Record<string, unknown>;
    expect(status).toMatchObject({ status: 'COMPLETED', error_type: 'request_timeout' });
    // The caller's own deadline is final: the gateway does not ask again (fal's 504 is otherwise retried).
    await stack.app.whenIdle();
    expect(upstreamCalls(stack).filter((c) => c.method === 'GET' && c.path === `/fal-ai/flux-lora/requests/${requestId}`)).toHaveLength(1);
    const usage = (await (await fetch(`${stack.url}/v1/usage`, { headers: stack.bearer('team-a') })).json()) as { tenants: Array<{ totals: Record<string, number> }> };
    expect(usage.tenants[0]!.totals).toMatchObject({ submitted: 1, failed: 1, completed: 0 });
  });
});
