import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { buildApp, type GatewayApp } from '../src/app.js';
import { newKey } from '../src/cli/key.js';
import { parseConfig } from '../src/config.js';
import { digestKey } from '../src/tenants/registry.js';
import { CircuitBreaker } from '../src/upstream/circuit-breaker.js';
import { backoffDelay, parseRetryAfter } from '../src/upstream/retry.js';
import { json, SEED_REQUEST, UPSTREAM_TOKEN } from './helpers.js';
import { startFaultyUpstream, type FaultyUpstream } from './support/faulty-upstream.js';

const ID = '6f1c2b8e-0000-4000-8000-000000000001';
const queued = (res: import('node:http').ServerResponse) =>
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'IN_QUEUE', request_id: ID, queue_position: 0 }));
const failing = (status: number, headers: Record<string, string> = {}) => (res: import('node:http').ServerResponse) =>
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify({ detail: 'Runner scheduling failure', error_type: 'runner_scheduling_failure' }));

describe('upstream resilience', () => {
  let upstream: FaultyUpstream;
  let app: GatewayApp;
  let url: string;
  const key = newKey();
  const auth = { authorization: `Bearer ${key}` };

  async function start(env: Record<string, string>) {
    const config = parseConfig({ UPSTREAM_TOKEN, UPSTREAM_BASE_URL: upstream.url, TENANTS_FILE: 'x', LOG_LEVEL: 'silent', ...env });
    const big = { max: 100_000, timeWindowMs: 60_000 };
    app = await buildApp({ config, tenants: [{ id: 'team-a', keyDigests: [digestKey(key)], limits: { submit: big, read: big } }] });
    url = await app.listen({ port: 0, host: '127.0.0.1' });
  }
  /** Submits once (upstream answering normally) so the job is owned, then installs `handler`. */
  async function ownJob() {
    upstream.setHandler((_req, res) => queued(res));
    const res = await fetch(`${url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...auth }, body: JSON.stringify(SEED_REQUEST) });
    expect(res.status).toBe(200);
  }
  const calls = (method: string) => upstream.requests.filter((r) => r.method === method).length;
  const timed = async (call: () => Promise<Response>) => {
    const started = performance.now();
    const res = await call();
    return { res, body: (await res.json()) as { error_type?: string; detail?: unknown }, ms: performance.now() - started };
  };

  beforeEach(async () => {
    upstream = await startFaultyUpstream();
  });
  afterEach(async () => {
    await app?.close();
    await upstream.close();
  });

  it('gives up on an upstream that trickles bytes forever, at the total request deadline', async () => {
    await start({ UPSTREAM_REQUEST_TIMEOUT_MS: '500', UPSTREAM_BODY_TIMEOUT_MS: '5000', UPSTREAM_READ_RETRIES: '0' });
    await ownJob();
    upstream.setHandler((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"status":"IN_QUEUE",');
      const drip = setInterval(() => res.write(' '), 50);
      res.on('close', () => clearInterval(drip));
    });
    const { res, body, ms } = await timed(() => fetch(`${url}/v1/requests/${ID}/status`, { headers: auth }));
    expect(res.status).toBe(504);
    expect(body.error_type).toBe('upstream_timeout');
    expect(ms).toBeLessThan(2_000);
    // The same trickle on a submit: the job may exist, so the answer is one clients do not retry.
    const submit = await timed(() => fetch(`${url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...auth }, body: JSON.stringify(SEED_REQUEST) }));
    expect(submit.res.status).toBe(500);
    expect(submit.body.error_type).toBe('submit_outcome_unknown');
    expect(submit.ms).toBeLessThan(2_000);
  });

  it('retries a status read after 503s and answers with the eventual success', async () => {
    await start({ UPSTREAM_READ_RETRIES: '2' });
    await ownJob();
    let n = 0;
    upstream.setHandler((_req, res) => {
      if (++n <= 2) return failing(503)(res);
      res.writeHead(202, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'IN_PROGRESS', request_id: ID }));
    });
    const res = await fetch(`${url}/v1/requests/${ID}/status`, { headers: auth });
    expect(res.status).toBe(202);
    expect(((await res.json()) as { status: string }).status).toBe('IN_PROGRESS');
    expect(calls('GET')).toBe(3);
  });

  it('honours Retry-After between read attempts, and stops at the retry budget', async () => {
    await start({ UPSTREAM_READ_RETRIES: '1', UPSTREAM_READ_DEADLINE_MS: '5000' });
    await ownJob();
    upstream.setHandler((_req, res) => failing(429, { 'retry-after': '1' })(res));
    const { res, ms } = await timed(() => fetch(`${url}/v1/requests/${ID}`, { headers: auth }));
    expect(res.status).toBe(429);
    expect(res.headers.get('retry-after')).toBe('1');
    expect(calls('GET')).toBe(2);
    expect(ms).toBeGreaterThanOrEqual(950);
  });

  it('does not retry past the read deadline: a long Retry-After is passed to the client instead', async () => {
    await start({ UPSTREAM_READ_RETRIES: '3', UPSTREAM_READ_DEADLINE_MS: '300' });
    await ownJob();
    upstream.setHandler((_req, res) => failing(503, { 'retry-after': '30' })(res));
    const { res, ms } = await timed(() => fetch(`${url}/v1/requests/${ID}/status`, { headers: auth }));
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('30');
    expect(calls('GET')).toBe(1);
    expect(ms).toBeLessThan(1_000);
  });

  it('never retries a submit or a cancel', async () => {
    await start({ UPSTREAM_READ_RETRIES: '3' });
    upstream.setHandler((_req, res) => failing(503)(res));
    const submit = await fetch(`${url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...auth }, body: JSON.stringify(SEED_REQUEST) });
    expect(submit.status).toBe(503);
    expect(calls('POST')).toBe(1);
    await ownJob();
    upstream.setHandler((req, res) => (req.method === 'PUT' ? failing(503)(res) : queued(res)));
    const cancel = await fetch(`${url}/v1/requests/${ID}/cancel`, { method: 'PUT', headers: auth });
    expect(cancel.status).toBe(503);
    expect(calls('PUT')).toBe(1);
  });

  it('opens the circuit after repeated failures, fails fast with Retry-After, then closes after a good probe', async () => {
    await start({ CIRCUIT_BREAKER_THRESHOLD: '3', CIRCUIT_BREAKER_COOLDOWN_MS: '600', UPSTREAM_READ_RETRIES: '0' });
    upstream.setHandler((_req, res) => failing(503)(res));
    const submit = () => fetch(`${url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...auth }, body: JSON.stringify(SEED_REQUEST) });
    for (let i = 0; i < 3; i++) expect((await submit()).status).toBe(503);
    expect(calls('POST')).toBe(3);

    const { res, body, ms } = await timed(submit);
    expect(res.status).toBe(503);
    expect(body.error_type).toBe('upstream_circuit_open');
    expect(Number(res.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(calls('POST')).toBe(3);
    expect(ms).toBeLessThan(200);

    await new Promise((r) => setTimeout(r, 650));
    upstream.setHandler((_req, res) => queued(res));
    expect((await submit()).status).toBe(200);
    expect((await submit()).status).toBe(200);
    expect(calls('POST')).toBe(5);
  });

  it('does not count callers who hang up on a status stream that is still opening as upstream failures', async () => {
    await start({ CIRCUIT_BREAKER_THRESHOLD: '2', UPSTREAM_READ_RETRIES: '0', METRICS_ENABLED: 'true' });
    await ownJob();
    // The stream takes 400 ms to answer; each caller leaves after 100 ms.
    upstream.setHandler((req, res) => {
      if (req.url?.includes('/status/stream')) {
        setTimeout(() => {
          if (!res.destroyed) res.writeHead(200, { 'content-type': 'text/event-stream' }).end();
        }, 400);
        return;
      }
      res.writeHead(202, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'IN_QUEUE', request_id: ID, queue_position: 0 }));
    });
    for (let i = 0; i < 4; i++) {
      await fetch(`${url}/v1/requests/${ID}/status/stream?logs=${i % 2}`, { headers: auth, signal: AbortSignal.timeout(100) }).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 150));
    }
    await app.whenIdle();
    const status = await fetch(`${url}/v1/requests/${ID}/status`, { headers: auth });
    expect(status.status).toBe(202);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).toContain('fal_gateway_circuit_state 0');
    expect(metrics).toMatch(/fal_gateway_upstream_calls_total\{operation="stream",outcome="aborted"\} [1-9]/);
  });

  it('ends a half-open probe whose answer is over the size limit, so the next call can probe', async () => {
    await start({ CIRCUIT_BREAKER_THRESHOLD: '1', CIRCUIT_BREAKER_COOLDOWN_MS: '300', UPSTREAM_READ_RETRIES: '0', UPSTREAM_MAX_RESPONSE_BYTES: '1024' });
    await ownJob();
    upstream.setHandler((_req, res) => failing(503)(res));
    expect((await fetch(`${url}/v1/requests/${ID}/status`, { headers: auth })).status).toBe(503);
    await new Promise((r) => setTimeout(r, 350));
    // The probe: an answer too large to read.
    upstream.setHandler((_req, res) => res.writeHead(202, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'IN_QUEUE', pad: 'x'.repeat(4_000) })));
    const probe = await timed(() => fetch(`${url}/v1/requests/${ID}/status`, { headers: auth }));
    expect(probe.body.error_type).toBe('upstream_response_too_large');
    // Not stuck half open: the next call goes upstream (and closes the circuit).
    upstream.setHandler((_req, res) => res.writeHead(202, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'IN_QUEUE', request_id: ID, queue_position: 0 })));
    expect((await fetch(`${url}/v1/requests/${ID}/status`, { headers: auth })).status).toBe(202);
  });
  /** The job's status reads IN_QUEUE; its result is whatever `result` answers (fal relays the model's own code). */
  const jobWhoseResultIs = (result: (res: import('node:http').ServerResponse) => void) =>
    upstream.setHandler((req, res) => {
      if (req.method === 'GET' && req.url?.split('?')[0] === `/fal-ai/flux-lora/requests/${ID}`) return result(res);
      if (req.method === 'POST') return queued(res);
      res.writeHead(202, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'IN_QUEUE', request_id: ID, queue_position: 0 }));
    });
  const submitStatus = async () =>
    (await fetch(`${url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...auth }, body: JSON.stringify(SEED_REQUEST) })).status;

  it("does not let a model's failed jobs (a 500 result) open the circuit for every tenant", async () => {
    await start({ CIRCUIT_BREAKER_THRESHOLD: '2', UPSTREAM_READ_RETRIES: '0' });
    await ownJob();
    jobWhoseResultIs((res) => res.writeHead(500, { 'content-type': 'application/json' }).end('{"detail":"CUDA out of memory"}'));
    for (let i = 0; i < 4; i++) expect((await fetch(`${url}/v1/requests/${ID}`, { headers: auth })).status).toBe(500);
    expect(await submitStatus()).toBe(200);
    expect((await fetch(`${url}/v1/requests/${ID}/status`, { headers: auth })).status).toBe(202);
  });

  it('still opens the circuit when fal is down, whatever result reads come in between', async () => {
    await start({ CIRCUIT_BREAKER_THRESHOLD: '3', CIRCUIT_BREAKER_COOLDOWN_MS: '60000', UPSTREAM_READ_RETRIES: '0' });
    await ownJob();
    upstream.setHandler((_req, res) => failing(503)(res));
    const read = async (path: string) => (await timed(() => fetch(`${url}/v1/requests/${ID}${path}`, { headers: auth }))).body.error_type;
    // Three failing status reads with a failing result read between each (neutral, not a success).
    for (let i = 0; i < 3; i++) {
      if (i > 0) expect(await read('')).not.toBe('upstream_circuit_open');
      expect(await read('/status')).not.toBe('upstream_circuit_open');
    }
    expect(await read('/status')).toBe('upstream_circuit_open');
    expect(await read('')).toBe('upstream_circuit_open');
  });

  it("reads a job that outlived the caller's own start timeout once: no retry, and no mark against the upstream", async () => {
    await start({ CIRCUIT_BREAKER_THRESHOLD: '2', UPSTREAM_READ_RETRIES: '3' });
    await ownJob();
    const before = calls('GET');
    jobWhoseResultIs((res) =>
      res
        .writeHead(504, { 'content-type': 'application/json', 'x-fal-request-timeout-type': 'user', 'x-fal-error-type': 'request_timeout' })
        .end('{"detail":"Request timed out before it started","error_type":"request_timeout"}'),
    );
    const first = await fetch(`${url}/v1/requests/${ID}`, { headers: auth });
    expect(first.status).toBe(504);
    expect(first.headers.get('x-fal-request-timeout-type')).toBe('user');
    expect(calls('GET') - before).toBe(1);
    for (let i = 0; i < 3; i++) expect((await fetch(`${url}/v1/requests/${ID}`, { headers: auth })).status).toBe(504);
    expect(await submitStatus()).toBe(200);
  });
});

describe('circuit breaker', () => {
  it('frees the probe when the probe itself says nothing about the upstream, and only then', () => {
    let now = 0;
    const breaker = new CircuitBreaker({ threshold: 1, cooldownMs: 1_000, now: () => now });
    // A call that started while the circuit was closed...
    const early = breaker.before();
    expect(early).toBe(false);
    breaker.failure();
    now = 1_000;
    const probe = breaker.before();
    expect(probe).toBe(true);
    expect(() => breaker.before()).toThrow();
    // ...and ends without a verdict while the probe runs: the probe stays the only one.
    breaker.release(early);
    expect(() => breaker.before()).toThrow();
    breaker.release(probe);
    expect(breaker.state).toBe('half_open');
    expect(breaker.before()).toBe(true);
    breaker.success();
    expect(breaker.state).toBe('closed');
  });

  it('lets one probe through after the cool-down, and reopens when it fails', () => {
    let now = 0;
    const states: string[] = [];
    const breaker = new CircuitBreaker({ threshold: 2, cooldownMs: 1_000, now: () => now, onStateChange: (s) => states.push(s) });
    breaker.before();
    breaker.failure();
    breaker.success();
    breaker.failure();
    expect(breaker.state).toBe('closed');
    breaker.failure();
    expect(breaker.state).toBe('open');
    expect(() => breaker.before()).toThrow(/not sending it requests/);
    now = 1_000;
    expect(breaker.state).toBe('half_open');
    breaker.before();
    expect(() => breaker.before()).toThrow();
    breaker.failure();
    expect(breaker.state).toBe('open');
    now = 2_000;
    breaker.before();
    breaker.success();
    expect(breaker.state).toBe('closed');
    expect(states).toEqual(['open', 'half_open', 'open', 'half_open', 'closed']);
  });

  it('says when to retry', () => {
    let now = 0;
    const breaker = new CircuitBreaker({ threshold: 1, cooldownMs: 5_000, now: () => now });
    breaker.failure();
    now = 1_200;
    try {
      breaker.before();
      expect.unreachable();
    } catch (err) {
      expect((err as { headers: Record<string, string> }).headers['retry-after']).toBe('4');
    }
  });
});

describe('retry policy', () => {
  it('backs off exponentially with jitter, capped', () => {
    const policy = { retries: 5, deadlineMs: 10_000, baseDelayMs: 100, maxDelayMs: 1_000 };
    expect(backoffDelay(0, policy, () => 0)).toBe(50);
    expect(backoffDelay(0, policy, () => 1)).toBe(100);
    expect(backoffDelay(3, policy, () => 1)).toBe(800);
    expect(backoffDelay(10, policy, () => 1)).toBe(1_000);
  });

  it('reads Retry-After as seconds or an HTTP date', () => {
    expect(parseRetryAfter('7')).toBe(7_000);
    expect(parseRetryAfter(new Date(10_000).toUTCString(), 4_000)).toBe(6_000);
    expect(parseRetryAfter('soon')).toBeUndefined();
    expect(parseRetryAfter(undefined)).toBeUndefined();
  });
});
