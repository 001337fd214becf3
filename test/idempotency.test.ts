import { randomUUID } from 'node:crypto';
import { connect } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, type GatewayApp } from '../src/app.js';
import { newKey } from '../src/cli/key.js';
import { parseConfig } from '../src/config.js';
import { MemoryJobStore } from '../src/jobs/memory-job-store.js';
import { digestKey } from '../src/tenants/registry.js';
import { json, SEED_REQUEST, startStack, upstreamCalls, UPSTREAM_TOKEN, type Stack } from './helpers.js';
import { startFaultyUpstream, type FaultyUpstream } from './support/faulty-upstream.js';

const posts = (stack: Stack) => upstreamCalls(stack).filter((c) => c.method === 'POST').length;

describe('Idempotency-Key on submit', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack();
  });
  afterAll(() => stack.close());

  const submit = (tenant: string, key: string | undefined, body: unknown = SEED_REQUEST, path = '/v1/image-to-image') =>
    fetch(`${stack.url}${path}`, {
      method: 'POST',
      headers: { ...json, ...stack.bearer(tenant), ...(key ? { 'idempotency-key': key } : {}) },
      body: JSON.stringify(body),
    });

  it('replays the first answer to a retried submit instead of queuing a second job', async () => {
    const key = randomUUID();
    const before = posts(stack);
    const first = await submit('team-a', key);
    const firstBody = (await first.json()) as Record<string, string>;
    expect(first.status).toBe(200);
    expect(first.headers.get('idempotent-replayed')).toBeNull();
    // Same input, keys in another order, through fal's path: the same request.
    const reordered = Object.fromEntries(Object.entries(SEED_REQUEST).reverse());
    const again = await submit('team-a', key, reordered, '/fal-ai/flux-lora/image-to-image');
    expect(again.status).toBe(200);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(again.headers.get('x-fal-request-id')).toBe(firstBody.request_id);
    // The first answer, its queue URLs in the shape of the path the retry called (fal's here).
    const fal = (url: string) => url.replace('/v1/requests/', '/fal-ai/flux-lora/requests/');
    expect(await again.json()).toEqual({ ...firstBody, status_url: fal(firstBody.status_url!), response_url: fal(firstBody.response_url!), cancel_url: fal(firstBody.cancel_url!) });
    expect(posts(stack) - before).toBe(1);
    // Both request lines name the job; the second says it was replayed (no line of its own says so).
    const submitLines = stack.logs
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .filter((line) => line.msg === 'request' && line.method === 'POST' && line.requestId === firstBody.request_id);
    expect(submitLines.map((line) => line.replayed)).toEqual([undefined, true]);
    expect(stack.logs.filter((line) => line.includes(firstBody.request_id!))).toHaveLength(2);
    const status = await fetch(firstBody.status_url!, { headers: stack.bearer('team-a') });
    expect([200, 202]).toContain(status.status);
  });

  it('refuses the same key with a different body (422), queuing nothing', async () => {
    const key = randomUUID();
    expect((await submit('team-a', key)).status).toBe(200);
    const before = posts(stack);
    const other = await submit('team-a', key, { ...SEED_REQUEST, prompt: 'a different picture' });
    expect(other.status).toBe(422);
    const body = (await other.json()) as { detail: Array<{ loc: unknown[]; type: string }> };
    expect(body.detail[0]).toMatchObject({ loc: ['header', 'idempotency-key'], type: 'idempotency_key_reused' });
    expect(posts(stack)).toBe(before);
  });

  it('refuses the same key with other queue headers (another priority is another request)', async () => {
    const key = randomUUID();
    const withPriority = (priority: string) =>
      fetch(`${stack.url}/v1/image-to-image`, {
        method: 'POST',
        headers: { ...json, ...stack.bearer('team-a'), 'idempotency-key': key, 'x-fal-queue-priority': priority },
        body: JSON.stringify(SEED_REQUEST),
      });
    expect((await withPriority('low')).status).toBe(200);
    expect((await withPriority('low')).headers.get('idempotent-replayed')).toBe('true');
    const before = posts(stack);
    const other = await withPriority('normal');
    expect(other.status).toBe(422);
    expect(((await other.json()) as { detail: Array<{ type: string }> }).detail[0]!.type).toBe('idempotency_key_reused');
    expect(posts(stack)).toBe(before);
  });

  it("keeps keys per tenant: another tenant's same key is a new job, and never a replay of someone else's", async () => {
    const key = randomUUID();
    const a = (await (await submit('team-a', key)).json()) as Record<string, string>;
    const bRes = await submit('team-b', key);
    expect(bRes.headers.get('idempotent-replayed')).toBeNull();
    const b = (await bRes.json()) as Record<string, string>;
    expect(b.request_id).not.toBe(a.request_id);
    expect((await fetch(a.status_url!, { headers: stack.bearer('team-b') })).status).toBe(404);
  });

  it('queues once when the same key arrives many times at once', async () => {
    const key = randomUUID();
    const before = posts(stack);
    const responses = await Promise.all(Array.from({ length: 8 }, () => submit('team-a', key)));
    expect(posts(stack) - before).toBe(1);
    const ids = new Set<string>();
    for (const res of responses) {
      expect([200, 409]).toContain(res.status);
      const body = (await res.json()) as { request_id?: string; error_type?: string };
      if (res.status === 200) ids.add(body.request_id!);
      else expect(body.error_type).toBe('idempotency_in_progress');
    }
    expect(ids.size).toBe(1);
  });

  it.each([
    ['spaced', 'has a space'],
    ['too long', 'k'.repeat(256)],
  ])('rejects a %s key with 422', async (_name, key) => {
    const res = await fetch(`${stack.url}/v1/image-to-image`, {
      method: 'POST',
      headers: { ...json, ...stack.bearer('team-a'), 'idempotency-key': key },
      body: JSON.stringify(SEED_REQUEST),
    });
    expect(res.status).toBe(422);
  });
});

describe('Idempotency-Key and the submit rate limit', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ tenants: [{ id: 'team-a', submit: { max: 2, timeWindowMs: 60_000 }, read: { max: 4, timeWindowMs: 60_000 } }] });
  });
  afterAll(() => stack.close());

  const submit = (key?: string, body: unknown = SEED_REQUEST) =>
    fetch(`${stack.url}/v1/image-to-image`, {
      method: 'POST',
      headers: { ...json, ...stack.bearer('team-a'), ...(key ? { 'idempotency-key': key } : {}) },
      body: JSON.stringify(body),
    });

  it('answers a retry that only replays with its job even when the submit budget is spent, charging the read budget instead', async () => {
    const key = randomUUID();
    const first = await submit(key);
    expect(first.status).toBe(200);
    const job = (await first.json()) as { request_id: string };
    expect((await submit()).status).toBe(200);
    // The budget (2 a minute) is spent: a new job is refused...
    expect((await submit()).status).toBe(429);
    // ...but a client that lost its first answer still learns its job, from its read budget (4 a minute).
    for (let i = 0; i < 3; i++) {
      const replay = await submit(key);
      expect(replay.status).toBe(200);
      expect(replay.headers.get('idempotent-replayed')).toBe('true');
      expect(replay.headers.get('ratelimit-policy')).toBe('"read";q=4;w=60');
      expect(replay.headers.get('x-ratelimit-remaining')).toBe(String(3 - i));
      expect(((await replay.json()) as { request_id: string }).request_id).toBe(job.request_id);
    }
    expect(posts(stack)).toBe(2);
    // The same key with another body queues nothing either: the usual 422, charged as well.
    expect((await submit(key, { ...SEED_REQUEST, prompt: 'another picture' })).status).toBe(422);
    // A new key is a new job: refused.
    expect((await submit(randomUUID())).status).toBe(429);
    // Replays (each a body read, parsed and compared) are not free: past the read budget, 429.
    const flood = await submit(key, { ...SEED_REQUEST, prompt: 'x'.repeat(100_000) });
    expect(flood.status).toBe(429);
    expect(((await flood.json()) as { detail: string }).detail).toMatch(/^Rate limit exceeded for read requests/);
  });
});

describe('Idempotency-Key when the upstream fails', () => {
  let upstream: FaultyUpstream;
  let app: GatewayApp;
  let url: string;
  const key = newKey();
  const headers = (idem: string) => ({ ...json, authorization: `Bearer ${key}`, 'idempotency-key': idem });
  const submit = (idem: string) => fetch(`${url}/v1/image-to-image`, { method: 'POST', headers: headers(idem), body: JSON.stringify(SEED_REQUEST) });
  const queued = (res: import('node:http').ServerResponse) =>
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'IN_QUEUE', request_id: randomUUID(), queue_position: 0 }));

  beforeAll(async () => {
    upstream = await startFaultyUpstream();
    const config = parseConfig({
      UPSTREAM_TOKEN,
      UPSTREAM_BASE_URL: upstream.url,
      TENANTS_FILE: 'x',
      LOG_LEVEL: 'silent',
      UPSTREAM_HEADERS_TIMEOUT_MS: '300',
      CIRCUIT_BREAKER_THRESHOLD: '1000',
    });
    const big = { max: 100_000, timeWindowMs: 60_000 };
    app = await buildApp({ config, tenants: [{ id: 'team-a', keyDigests: [digestKey(key)], limits: { submit: big, read: big } }] });
    url = await app.listen({ port: 0, host: '127.0.0.1' });
  });
  afterAll(async () => {
    await app.close();
    await upstream.close();
  });
  afterEach(() => {
    upstream.requests.length = 0;
  });

  it('frees the key after a failure that queued nothing, so the retry goes through', async () => {
    const idem = randomUUID();
    upstream.setHandler((_req, res) => res.writeHead(503, { 'content-type': 'application/json' }).end('{"detail":"Runner scheduling failure","error_type":"runner_scheduling_failure"}'));
    expect((await submit(idem)).status).toBe(503);
    upstream.setHandler((_req, res) => queued(res));
    const retry = await submit(idem);
    expect(retry.status).toBe(200);
    expect(retry.headers.get('idempotent-replayed')).toBeNull();
    expect(upstream.requests.filter((r) => r.method === 'POST')).toHaveLength(2);
  });

  it('keeps the key after a failure that may have queued a job: the retry replays the error, queuing nothing', async () => {
    const idem = randomUUID();
    upstream.setHandler(() => {
      // never answers: the submit may or may not have been queued
    });
    const first = await submit(idem);
    expect(first.status).toBe(500);
    upstream.setHandler((_req, res) => queued(res));
    const retry = await submit(idem);
    expect(retry.status).toBe(500);
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect(((await retry.json()) as { error_type: string }).error_type).toBe('submit_outcome_unknown');
    expect(upstream.requests.filter((r) => r.method === 'POST')).toHaveLength(1);
  });

  it('answers 409 with Retry-After while the first attempt is still in flight', async () => {
    const idem = randomUUID();
    upstream.setHandler((_req, res) => setTimeout(() => queued(res), 200));
    const first = submit(idem);
    await new Promise((r) => setTimeout(r, 50));
    const second = await submit(idem);
    expect(second.status).toBe(409);
    expect(second.headers.get('retry-after')).toBe('1');
    expect((await first).status).toBe(200);
    expect((await submit(idem)).headers.get('idempotent-replayed')).toBe('true');
  });
});

describe('Idempotency-Key when the store cannot save the answer', () => {
  /** A store whose next write of a settled key fails, as a Redis SET past its command timeout would. */
  class FailingWrites extends MemoryJobStore {
    /** Writes of a settled key still to fail, one by one. */
    failures = 0;
    override async completeIdempotencyKey(...args: Parameters<MemoryJobStore['completeIdempotencyKey']>): Promise<void> {
      if (this.failures > 0) {
        this.failures--;
        throw new Error('Command timed out');
      }
      return super.completeIdempotencyKey(...args);
    }
  }
  const store = new FailingWrites({ ttlMs: 3_600_000, maxEntries: 1_000 });
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ app: { jobs: store }, tenants: [{ id: 'team-a', quota: { imagesPerDay: 10 } }] });
  });
  afterAll(() => stack.close());

  it('writes the answer again when the first write fails: a retry gets the replay', async () => {
    const headers = { ...json, ...stack.bearer('team-a'), 'idempotency-key': randomUUID() };
    const submit = () => fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers, body: JSON.stringify(SEED_REQUEST) });
    const before = posts(stack);
    store.failures = 1;
    const first = (await (await submit()).json()) as { request_id: string };
    const retry = await submit();
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect(((await retry.json()) as { request_id: string }).request_id).toBe(first.request_id);
    expect(posts(stack) - before).toBe(1);
  });

  it('still answers with the queued job when the answer cannot be saved at all, and keeps the key claimed', async () => {
    const headers = { ...json, ...stack.bearer('team-a'), 'idempotency-key': randomUUID() };
    const submit = () => fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers, body: JSON.stringify(SEED_REQUEST) });
    const before = posts(stack);
    store.failures = 2;
    const first = await submit();
    expect(first.status).toBe(200);
    const job = (await first.json()) as { request_id: string };
    expect(job.request_id).toMatch(/^[0-9a-f-]{36}$/);
    // The key stays claimed: the retry is told to wait, it does not take the key over.
    const retry = await submit();
    expect(retry.status).toBe(409);
    expect(posts(stack) - before).toBe(1);
    expect(stack.logs.some((line) => line.includes('could not save the answer for its Idempotency-Key'))).toBe(true);
  });
});

describe('Idempotency-Key whose answer lapses while the body arrives', () => {
  /** A store on a clock the test moves, telling when the rate-limit stage has looked a key up. */
  class WatchedStore extends MemoryJobStore {
    lookedUp: (() => void) | undefined;
    override async idempotencyRecord(key: string) {
      const record = await super.idempotencyRecord(key);
      this.lookedUp?.();
      return record;
    }
  }
  let now = Date.UTC(2031, 0, 20, 12);
  const store = new WatchedStore({ ttlMs: 3_600_000, maxEntries: 1_000, now: () => now });
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ app: { jobs: store }, tenants: [{ id: 'team-a', submit: { max: 1, timeWindowMs: 3_600_000 } }] });
  });
  afterAll(() => stack.close());

  it('refuses a request let through as a replay whose answer lapsed before its body arrived (409), queuing nothing', async () => {
    const key = randomUUID();
    const headers = { ...json, ...stack.bearer('team-a'), 'idempotency-key': key };
    const body = JSON.stringify(SEED_REQUEST);
    expect((await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers, body })).status).toBe(200);
    const before = posts(stack);

    // The same key again, its body held back: when it arrives, the key's answer has lapsed.
    const lookedUp = new Promise<void>((resolve) => (store.lookedUp = resolve));
    const socket = connect(Number(new URL(stack.url).port), '127.0.0.1');
    const answered = new Promise<string>((resolve) => {
      let text = '';
      socket.on('data', (chunk: Buffer) => {
        text += chunk.toString();
        const head = text.indexOf('\r\n\r\n');
        const length = Number(/content-length: (\d+)/i.exec(text)?.[1]);
        if (head !== -1 && text.length - head - 4 >= length) resolve(text);
      });
    });
    const head = Object.entries({ host: new URL(stack.url).host, ...headers, 'content-length': String(body.length) })
      .map(([name, value]) => `${name}: ${value}\r\n`)
      .join('');
    socket.write(`POST /v1/image-to-image HTTP/1.1\r\n${head}\r\n`);
    await lookedUp;
    now += 86_400_000 + 1; // past IDEMPOTENCY_TTL_SECONDS
    socket.write(body);
    const answer = await answered;
    socket.destroy();
    // Nothing to replay, and no job queued on the read budget: sent again, it is a submit.
    expect(answer.slice(9, 12)).toBe('409');
    expect(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)).error_type).toBe('idempotency_key_expired');
    expect(posts(stack)).toBe(before);
    const again = await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers, body });
    expect(again.status).toBe(429);
    expect(((await again.json()) as { detail: string }).detail).toMatch(/^Rate limit exceeded for submit requests \(1 per 1 hour\)/);
    expect(posts(stack)).toBe(before);
  });
});
