import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, type GatewayApp } from '../src/app.js';
import { parseConfig } from '../src/config.js';
import { manualClock } from '../src/simulator/index.js';
import { digestKey } from '../src/tenants/registry.js';
import { json, SEED_REQUEST, startStack, UPSTREAM_TOKEN, upstreamCalls, waitForCompletion, type Stack } from './helpers.js';
import { startFaultyUpstream, type FaultyUpstream } from './support/faulty-upstream.js';
import { redisAvailable, REDIS_URL, skipReason, uniquePrefix } from './support/redis.js';

const submit = async (stack: Stack, url = stack.url, tenant = 'team-a') => {
  const res = await fetch(`${url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer(tenant) }, body: JSON.stringify(SEED_REQUEST) });
  expect(res.status).toBe(200);
  return (await res.json()) as { request_id: string; status_url: string; response_url: string; cancel_url: string };
};
/** A gateway in front of `upstream`, for team-a with `key` and room for every request of a test. */
async function gatewayInFront(upstream: FaultyUpstream, key: string, env: Record<string, string> = {}): Promise<{ app: GatewayApp; url: string }> {
  const app = await buildApp({
    config: parseConfig({ UPSTREAM_TOKEN, UPSTREAM_BASE_URL: upstream.url, TENANTS_FILE: 'x', LOG_LEVEL: 'silent', ...env }),
    tenants: [{ id: 'team-a', keyDigests: [digestKey(key)], limits: { submit: { max: 100, timeWindowMs: 60_000 }, read: { max: 10_000, timeWindowMs: 60_000 } } }],
  });
  return { app, url: await app.listen({ port: 0, host: '127.0.0.1' }) };
}

/**
 * `clients` clients each reading `url` `times` times, 100 ms apart, starting `spreadMs` apart;
 * `check` looks at every answer. Returns how many reads were made and over how many seconds.
 */
async function pollTogether(stack: Stack, url: string, clients: number, times: number, spreadMs: number, check: (res: Response) => Promise<void>) {
  const started = Date.now();
  let reads = 0;
  await Promise.all(
    Array.from({ length: clients }, async (_, client) => {
      await new Promise((r) => setTimeout(r, client * spreadMs));
      for (let i = 0; i < times; i++) {
        await check(await fetch(url, { headers: stack.bearer('team-a') }));
        reads++;
        await new Promise((r) => setTimeout(r, 100));
      }
    }),
  );
  return { reads, seconds: (Date.now() - started) / 1000 };
}

const callsFor = (stack: Stack, id: string, suffix: string) =>
  upstreamCalls(stack).filter((c) => c.method === 'GET' && c.path.split('?')[0]!.endsWith(`/requests/${id}${suffix}`)).length;

describe('status polling', () => {
  let stack: Stack;
  beforeAll(async () => {
    // Jobs stay queued for the whole test: every poll sees a non-terminal status.
    stack = await startStack({ sim: { queueMs: 600_000, runMs: 1_000 } });
  });
  afterAll(() => stack.close());

  it('keeps 100 clients polling one job at 10 Hz to at most ~4 upstream calls a second', async () => {
    const job = await submit(stack);
    // The clients start spread over the first 100 ms.
    const { reads, seconds } = await pollTogether(stack, job.status_url, 100, 15, 1, async (res) => {
      expect(res.status).toBe(202);
      expect(((await res.json()) as { status: string }).status).toBe('IN_QUEUE');
    });
    const calls = callsFor(stack, job.request_id, '/status');
    expect(reads).toBe(1_500);
    expect(calls).toBeGreaterThanOrEqual(1);
    // STATUS_CACHE_MS (300 ms) bounds the rate whatever the load: at most one call per period, plus the first.
    expect(calls).toBeLessThanOrEqual(Math.ceil(seconds / 0.3) + 1);
    expect(calls / seconds).toBeLessThanOrEqual(4.5);
  });

  it('keeps clients polling a result before it is ready to the same few upstream calls a second as status polling', async () => {
    const job = await submit(stack);
    const { reads, seconds } = await pollTogether(stack, job.response_url, 20, 10, 5, async (res) => {
      expect(res.status).toBe(400);
      expect(((await res.json()) as { detail: string }).detail).toContain('in progress');
    });
    const calls = callsFor(stack, job.request_id, '');
    expect(reads).toBe(200);
    expect(calls).toBeGreaterThanOrEqual(1);
    expect(calls).toBeLessThanOrEqual(Math.ceil(seconds / 0.3) + 1);
    // A cancel is seen at once, not after the reuse period.
    expect((await fetch(job.cancel_url, { method: 'PUT', headers: stack.bearer('team-a') })).status).toBe(202);
    const cancelled = await fetch(job.response_url, { headers: stack.bearer('team-a') });
    expect(((await cancelled.json()) as { detail: string }).detail).toContain('cancelled');
  });

  it('hints when to poll again with Retry-After, from the queue position', async () => {
    const job = await submit(stack);
    const res = await fetch(job.status_url, { headers: stack.bearer('team-a') });
    const body = (await res.json()) as { queue_position: number };
    expect(res.status).toBe(202);
    expect(res.headers.get('retry-after')).toBe(String(Math.min(10, 1 + Math.floor(body.queue_position / 2))));
  });

  it('reads a job again right after it is cancelled, not the copy from before', async () => {
    const job = await submit(stack);
    expect(((await (await fetch(job.status_url, { headers: stack.bearer('team-a') })).json()) as { status: string }).status).toBe('IN_QUEUE');
    const cancel = await fetch(job.cancel_url, { method: 'PUT', headers: stack.bearer('team-a') });
    expect(cancel.status).toBe(202);
    const after = (await (await fetch(job.status_url, { headers: stack.bearer('team-a') })).json()) as { status: string; error_type?: string };
    expect(after.status).toBe('COMPLETED');
    expect(after.error_type).toBe('request_cancelled');
  });
});

describe('concurrent reads of one job', () => {
  let upstream: FaultyUpstream;
  let app: GatewayApp;
  let url: string;
  const key = `key-${randomUUID()}`;
  let release: () => void = () => undefined;

  beforeAll(async () => {
    upstream = await startFaultyUpstream();
    upstream.setHandler((req, res) => {
      const id = /requests\/([^/?]+)/.exec(req.url ?? '')?.[1] ?? randomUUID();
      const send = (code: number, body: unknown) => res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      if (req.method === 'POST') return send(200, { status: 'IN_QUEUE', request_id: id, queue_position: 3 });
      // Status answers wait until the test lets them go, so every read arrives while one is in flight.
      new Promise<void>((resolve) => (release = resolve)).then(() => send(202, { status: 'IN_PROGRESS', request_id: id, logs: null, metrics: {} }));
    });
    ({ app, url } = await gatewayInFront(upstream, key, { STATUS_CACHE_MS: '0' }));
  });
  afterAll(async () => {
    await app.close();
    await upstream.close();
  });

  it('share one upstream call (single flight), even with no status reuse', async () => {
    const res = await fetch(`${url}/v1/image-to-image`, { method: 'POST', headers: { ...json, authorization: `Bearer ${key}` }, body: JSON.stringify(SEED_REQUEST) });
    const { request_id: id } = (await res.json()) as { request_id: string };
    const statusCalls = () => upstream.requests.filter((r) => r.method === 'GET' && r.url.includes(`/requests/${id}/status`)).length;
    const reads = Array.from({ length: 50 }, () => fetch(`${url}/v1/requests/${id}/status`, { headers: { authorization: `Bearer ${key}` } }));
    // Released only once every read has arrived: the first went upstream, the 49 others joined it.
    // (However slow the machine: a read arriving after the release would ask upstream again.)
    const joined = async () => Number(/fal_gateway_cache_lookups_total\{kind="status",outcome="shared"\} (\d+)/.exec(await (await fetch(`${url}/metrics`)).text())?.[1] ?? 0);
    while (statusCalls() === 0 || (await joined()) < 49) await new Promise((r) => setTimeout(r, 10));
    release();
    const answers = await Promise.all(reads);
    for (const answer of answers) {
      expect(answer.status).toBe(202);
      expect(((await answer.json()) as { status: string }).status).toBe('IN_PROGRESS');
      expect(answer.headers.get('retry-after')).toBe('1');
    }
    expect(statusCalls()).toBe(1);
  });
});

describe('finished jobs', () => {
  const clock = manualClock(Date.now());
  let stack: Stack;
  beforeAll(async () => {
    // The simulator forgets a job an hour after it completed, as fal does (its retention).
    stack = await startStack({ sim: { queueMs: 10, runMs: 10, now: clock.now } });
  });
  afterAll(() => stack.close());

  it('never asks upstream again for a COMPLETED status or its result, and keeps the result after fal drops it', async () => {
    const job = await submit(stack);
    clock.advance(100);
    const { body } = await waitForCompletion(job.status_url, stack.bearer('team-a'));
    expect(body.status).toBe('COMPLETED');
    // The gateway fetched the result as soon as it saw the job end.
    await stack.app.whenIdle();
    expect(callsFor(stack, job.request_id, '')).toBe(1);
    const statusCalls = callsFor(stack, job.request_id, '/status');

    clock.advance(60 * 60_000); // past fal's retention: the simulator forgets the job
    const direct = await fetch(`${stack.sim.url}/fal-ai/flux-lora/requests/${job.request_id}`, { headers: { authorization: `Key ${UPSTREAM_TOKEN}` } });
    expect(direct.status).toBe(404);
    const resultCalls = callsFor(stack, job.request_id, ''); // the gateway's one, and this direct check

    for (let i = 0; i < 5; i++) {
      const status = await fetch(job.status_url, { headers: stack.bearer('team-a') });
      expect(status.status).toBe(200);
      expect(((await status.json()) as { status: string; response_url: string }).response_url).toBe(job.response_url);
      const result = await fetch(job.response_url, { headers: stack.bearer('team-a') });
      expect(result.status).toBe(200);
      expect(((await result.json()) as { images: unknown[] }).images).toHaveLength(1);
    }
    expect(callsFor(stack, job.request_id, '/status')).toBe(statusCalls);
    expect(callsFor(stack, job.request_id, '')).toBe(resultCalls);
    // Another tenant still cannot read what the gateway kept.
    const foreign = await fetch(job.response_url, { headers: stack.bearer('team-b') });
    expect(foreign.status).toBe(404);
  });
});

describe('without result prefetch', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ sim: { queueMs: 10, runMs: 10 }, env: { RESULT_PREFETCH: 'false' } });
  });
  afterAll(() => stack.close());

  it('fetches a result only when a client asks for it, then keeps it', async () => {
    const job = await submit(stack);
    await waitForCompletion(job.status_url, stack.bearer('team-a'));
    await stack.app.whenIdle();
    expect(callsFor(stack, job.request_id, '')).toBe(0);
    for (let i = 0; i < 3; i++) expect((await fetch(job.response_url, { headers: stack.bearer('team-a') })).status).toBe(200);
    expect(callsFor(stack, job.request_id, '')).toBe(1);
  });
});

describe.skipIf(!redisAvailable)(`finished jobs with Redis${skipReason}`, () => {
  let stack: Stack;
  let other: { url: string };
  beforeAll(async () => {
    stack = await startStack({ sim: { queueMs: 10, runMs: 10 }, env: { REDIS_URL, REDIS_KEY_PREFIX: uniquePrefix() } });
    other = await stack.addReplica();
  });
  afterAll(() => stack.close());

  it('serves a result kept by one replica from the other, without asking upstream', async () => {
    const job = await submit(stack);
    await waitForCompletion(job.status_url, stack.bearer('team-a'));
    await stack.app.whenIdle();
    const results = callsFor(stack, job.request_id, '');
    const statuses = callsFor(stack, job.request_id, '/status');
    expect(results).toBe(1);
    const viaOther = (path: string) => fetch(`${other.url}${path}`, { headers: stack.bearer('team-a') });
    const status = await viaOther(`/v1/requests/${job.request_id}/status`);
    expect(status.status).toBe(200);
    expect(((await status.json()) as { status_url: string }).status_url).toBe(`${other.url}/v1/requests/${job.request_id}/status`);
    const result = await viaOther(`/v1/requests/${job.request_id}`);
    expect(result.status).toBe(200);
    expect(callsFor(stack, job.request_id, '')).toBe(results);
    expect(callsFor(stack, job.request_id, '/status')).toBe(statuses);
  });
});

describe('a bad answer to a result read', () => {
  let upstream: FaultyUpstream;
  let app: GatewayApp;
  let url: string;
  const key = `key-${randomUUID()}`;
  const auth = { authorization: `Bearer ${key}` };
  // The first answer to each job's result read is a proxy's error page under a 200; then the images.
  const resultAnswers = new Map<string, number>();

  beforeAll(async () => {
    upstream = await startFaultyUpstream();
    upstream.setHandler((req, res) => {
      const path = req.url ?? '';
      const id = /requests\/([^/?]+)/.exec(path)?.[1] ?? randomUUID();
      const send = (code: number, body: unknown) => res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      if (req.method === 'POST') return send(200, { status: 'IN_QUEUE', request_id: id, queue_position: 0 });
      if (path.includes('/status')) return send(200, { status: 'COMPLETED', request_id: id, logs: null, metrics: { inference_time: 1.2 } });
      const seen = (resultAnswers.get(id) ?? 0) + 1;
      resultAnswers.set(id, seen);
      if (seen === 1) return res.writeHead(200, { 'content-type': 'text/html' }).end('<html><body>502 Bad Gateway</body></html>');
      return send(200, { images: [{ url: 'https://v3.fal.media/files/out.jpg', width: 512, height: 512, content_type: 'image/jpeg' }], seed: 1 });
    });
    // Result prefetch on (the default): the gateway itself meets the bad answer first.
    ({ app, url } = await gatewayInFront(upstream, key));
  });
  afterAll(async () => {
    await app.close();
    await upstream.close();
  });

  it('is not kept as the job\'s result: the next read asks again and gets the images, which are then kept', async () => {
    const res = await fetch(`${url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...auth }, body: JSON.stringify(SEED_REQUEST) });
    const { request_id: id } = (await res.json()) as { request_id: string };
    const resultCalls = () => upstream.requests.filter((r) => r.method === 'GET' && r.url.split('?')[0]!.endsWith(`/requests/${id}`)).length;
    // Seeing COMPLETED makes the gateway fetch the result in the background: it gets the error page.
    expect((await fetch(`${url}/v1/requests/${id}/status`, { headers: auth })).status).toBe(200);
    await app.whenIdle();
    expect(resultCalls()).toBe(1);
    const first = await fetch(`${url}/v1/requests/${id}`, { headers: auth });
    expect(first.status).toBe(200);
    expect(((await first.json()) as { images: unknown[] }).images).toHaveLength(1);
    expect(resultCalls()).toBe(2);
    // Now kept: no more upstream calls.
    for (let i = 0; i < 3; i++) expect((await fetch(`${url}/v1/requests/${id}`, { headers: auth })).status).toBe(200);
    expect(resultCalls()).toBe(2);
  });
});
