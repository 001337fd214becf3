import { manualClock } from '../src/simulator/index.js';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryJobStore } from '../src/jobs/memory-job-store.js';
import { GatewayMetrics } from '../src/metrics.js';
import { json, SEED_REQUEST, startStack, UPSTREAM_TOKEN, upstreamCalls, type Stack } from './helpers.js';
import { startFaultyUpstream, type FaultyUpstream } from './support/faulty-upstream.js';

/**
 * GET /metrics: real requests through the gateway, then the Prometheus text it serves, parsed
 * and checked sample by sample; its token; and that labels never carry raw paths, request ids
 * or credentials.
 */

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?\s*/gy;

/** Parses the Prometheus text exposition format (comments skipped, label escapes undone). */
function parseExposition(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '' || line.startsWith('#')) continue;
    const match = SAMPLE.exec(line);
    if (!match) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    const body = match[2] ?? '';
    LABEL.lastIndex = 0;
    let consumed = 0;
    for (let m = LABEL.exec(body); m; m = LABEL.exec(body)) {
      labels[m[1]!] = m[2]!.replace(/\\(.)/g, (_all, c: string) => (c === 'n' ? '\n' : c));
      consumed = LABEL.lastIndex;
    }
    if (consumed !== body.length) throw new Error(`unparsed labels in: ${line}`);
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return samples;
}

/** The value of the one sample named `name` whose labels include `labels` (0 when absent). */
function valueOf(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (found.length > 1) throw new Error(`${found.length} samples of ${name} match ${JSON.stringify(labels)}`);
  return found[0]?.value ?? 0;
}

/** Sum over every sample named `name` whose labels include `labels`. */
function sumOf(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  return samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((total, s) => total + s.value, 0);
}

async function scrape(url: string, headers: Record<string, string> = {}): Promise<{ text: string; samples: Sample[] }> {
  const res = await fetch(`${url}/metrics`, { headers });
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  return { text, samples: parseExposition(text) };
}

const SUBMIT_ROUTE = '/v1/image-to-image';
const STATUS_ROUTE = '/v1/requests/:request_id/status';
const RESULT_ROUTE = '/v1/requests/:request_id';
const HTTP = 'fal_gateway_http_requests_total';

/** A real memory store whose ownership lookups can be made to fail. */
class FlakyOwnerStore extends MemoryJobStore {
  failOwnerOf = false;
  override async ownerOf(requestId: string): Promise<string | undefined> {
    if (this.failOwnerOf) throw new Error('store down');
    return super.ownerOf(requestId);
  }
}

describe('GET /metrics on a working gateway', () => {
  let stack: Stack;
  const store = new FlakyOwnerStore({ ttlMs: 60_000, maxEntries: 1_000 });
  beforeAll(async () => {
    stack = await startStack({
      tenants: [{ id: 'team-a' }, { id: 'team-b', submit: { max: 1, timeWindowMs: 60_000 } }],
      app: { jobs: store },
    });
  });
  afterAll(() => stack.close());

  const submit = (tenant: string) =>
    fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer(tenant) }, body: JSON.stringify(SEED_REQUEST) });

  it('counts requests by route pattern, method, status and tenant, and upstream calls by operation and outcome', async () => {
    const before = (await scrape(stack.url)).samples;
    const simBefore = upstreamCalls(stack).length;
    const jobs: Array<Record<string, string>> = [];
    for (let i = 0; i < 3; i++) {
      const res = await submit('team-a');
      expect(res.status).toBe(200);
      jobs.push((await res.json()) as Record<string, string>);
    }
    const auth = stack.bearer('team-a');
    // Polls until COMPLETED (bounded), counting every poll.
    let polls = 0;
    for (let status = 0; status !== 200; polls++) {
      if (polls > 500) throw new Error('job did not complete');
      if (polls > 0) await new Promise((resolve) => setTimeout(resolve, 20));
      status = (await fetch(jobs[0]!.status_url!, { headers: auth })).status;
    }
    expect((await fetch(jobs[0]!.response_url!, { headers: auth })).status).toBe(200);
    const sim = upstreamCalls(stack)
      .slice(simBefore)
      .map((r) => ({ method: r.method, path: r.path.split('?')[0]! }));
    const upstreamStatusCalls = sim.filter((r) => r.path.endsWith('/status')).length;

    const after = (await scrape(stack.url)).samples;
    const delta = (name: string, labels: Record<string, string>) => valueOf(after, name, labels) - valueOf(before, name, labels);
    const sumDelta = (name: string, labels: Record<string, string>) => sumOf(after, name, labels) - sumOf(before, name, labels);

    expect(delta(HTTP, { route: SUBMIT_ROUTE, method: 'POST', status: '200', tenant: 'team-a' })).toBe(3);
    expect(delta('fal_gateway_http_request_duration_seconds_count', { route: SUBMIT_ROUTE, method: 'POST', tenant: 'team-a' })).toBe(3);
    // Every status poll (202 while running, 200 once completed) is one request on the status route.
    expect(sumDelta(HTTP, { route: STATUS_ROUTE, method: 'GET', tenant: 'team-a' })).toBe(polls);
    expect(delta(HTTP, { route: STATUS_ROUTE, method: 'GET', status: '200', tenant: 'team-a' })).toBe(1);
    expect(delta(HTTP, { route: RESULT_ROUTE, method: 'GET', status: '200', tenant: 'team-a' })).toBe(1);

    // What the upstream received is exactly what was counted.
    expect(delta('fal_gateway_upstream_calls_total', { operation: 'submit', outcome: '2xx' })).toBe(3);
    expect(delta('fal_gateway_upstream_call_duration_seconds_count', { operation: 'submit' })).toBe(3);
    expect(delta('fal_gateway_upstream_calls_total', { operation: 'status', outcome: '2xx' })).toBe(upstreamStatusCalls);
    expect(delta('fal_gateway_upstream_calls_total', { operation: 'result', outcome: '2xx' })).toBe(
      sim.filter((r) => r.method === 'GET' && !r.path.endsWith('/status')).length,
    );

    expect(valueOf(after, 'fal_gateway_circuit_state')).toBe(0);
    expect(valueOf(after, 'fal_gateway_build_info', { version: '0.1.0' })).toBe(1);
    expect(after.some((s) => s.name === 'fal_gateway_process_cpu_user_seconds_total')).toBe(true);
  });

  it('labels unauthenticated requests anonymous, and counts rate-limit rejections per tenant and policy', async () => {
    const before = (await scrape(stack.url)).samples;
    for (let i = 0; i < 2; i++) {
      const res = await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, authorization: 'Bearer wrong' }, body: '{}' });
      expect(res.status).toBe(401);
    }
    expect((await submit('team-b')).status).toBe(200);
    expect((await submit('team-b')).status).toBe(429);
    const after = (await scrape(stack.url)).samples;
    const delta = (name: string, labels: Record<string, string>) => valueOf(after, name, labels) - valueOf(before, name, labels);

    expect(delta(HTTP, { route: SUBMIT_ROUTE, method: 'POST', status: '401', tenant: 'anonymous' })).toBe(2);
    expect(delta(HTTP, { route: SUBMIT_ROUTE, method: 'POST', status: '429', tenant: 'team-b' })).toBe(1);
    expect(delta('fal_gateway_rejections_total', { tenant: 'team-b', policy: 'submit' })).toBe(1);
    expect(delta('fal_gateway_rejections_total', { tenant: 'team-a', policy: 'submit' })).toBe(0);
  });

  it('counts job-store failures behind a 503', async () => {
    const job = (await (await submit('team-a')).json()) as Record<string, string>;
    const before = (await scrape(stack.url)).samples;
    store.failOwnerOf = true;
    try {
      expect((await fetch(job.status_url!, { headers: stack.bearer('team-a') })).status).toBe(503);
    } finally {
      store.failOwnerOf = false;
    }
    const after = (await scrape(stack.url)).samples;
    const labels = { store: 'jobs', operation: 'owner_of' };
    expect(valueOf(after, 'fal_gateway_store_errors_total', labels) - valueOf(before, 'fal_gateway_store_errors_total', labels)).toBe(1);
  });

  it('keeps raw paths, request ids and credentials out of the labels; scrapes are not counted', async () => {
    const before = (await scrape(stack.url)).samples;
    const paths = [`/nope-${randomUUID()}`, `/v1/requests/${randomUUID()}/nothing-here`, `/v2/${randomUUID()}`];
    const requestIds: string[] = [];
    for (const path of paths) {
      const res = await fetch(stack.url + path);
      expect(res.status).toBe(404);
      requestIds.push(res.headers.get('x-request-id')!);
    }
    const job = await submit('team-a');
    requestIds.push(job.headers.get('x-request-id')!);
    const { request_id: upstreamRequestId } = (await job.json()) as { request_id: string };

    const { text, samples: after } = await scrape(stack.url);
    expect(valueOf(after, HTTP, { route: 'unmatched', method: 'GET', status: '404', tenant: 'anonymous' }) -
      valueOf(before, HTTP, { route: 'unmatched', method: 'GET', status: '404', tenant: 'anonymous' })).toBe(3);
    for (const secret of [...paths, ...requestIds, upstreamRequestId, UPSTREAM_TOKEN, ...Object.values(stack.keys)]) {
      expect(text).not.toContain(secret);
    }
    const routes = new Set(after.filter((s) => s.name === HTTP).map((s) => s.labels.route));
    expect([...routes].every((route) => route === 'unmatched' || route!.startsWith('/'))).toBe(true);
    expect(routes.has('/metrics')).toBe(false);
    const tenants = new Set(after.filter((s) => s.name === HTTP).map((s) => s.labels.tenant));
    expect([...tenants].sort()).toEqual(['anonymous', 'team-a', 'team-b']);
  });
});

describe('GET /metrics with a failing upstream', () => {
  let upstream: FaultyUpstream;
  let stack: Stack;
  beforeAll(async () => {
    upstream = await startFaultyUpstream();
    stack = await startStack({
      env: { UPSTREAM_BASE_URL: upstream.url, CIRCUIT_BREAKER_THRESHOLD: '2', CIRCUIT_BREAKER_COOLDOWN_MS: '600000' },
    });
  });
  afterAll(async () => {
    await stack.close();
    await upstream.close();
  });

  it('counts upstream errors by kind and follows the circuit breaker', async () => {
    const submit = () =>
      fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-a') }, body: JSON.stringify(SEED_REQUEST) });
    upstream.setHandler((_req, res) => res.writeHead(500, { 'content-type': 'application/json' }).end('{"detail":"boom"}'));
    expect((await submit()).status).toBeGreaterThanOrEqual(500);
    expect(valueOf((await scrape(stack.url)).samples, 'fal_gateway_circuit_state')).toBe(0);

    // The second consecutive failure opens the circuit; the third submit never leaves the gateway.
    upstream.setHandler((req) => req.socket.destroy());
    expect((await submit()).status).toBeGreaterThanOrEqual(500);
    const sent = upstream.requests.length;
    expect((await submit()).status).toBe(503);
    expect(upstream.requests.length).toBe(sent);

    const { samples, text } = await scrape(stack.url);
    expect(valueOf(samples, 'fal_gateway_upstream_calls_total', { operation: 'submit', outcome: '5xx' })).toBe(1);
    expect(valueOf(samples, 'fal_gateway_upstream_calls_total', { operation: 'submit', outcome: 'connection' })).toBe(1);
    expect(valueOf(samples, 'fal_gateway_upstream_calls_total', { operation: 'submit', outcome: 'circuit_open' })).toBe(1);
    expect(valueOf(samples, 'fal_gateway_circuit_state')).toBe(2);
    expect(text).not.toContain(UPSTREAM_TOKEN);
  });
});

describe('GET /metrics access', () => {
  const METRICS_TOKEN = `metrics-${randomUUID()}`;
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ env: { METRICS_TOKEN } });
  });
  afterAll(() => stack.close());

  it('requires the metrics token when one is set, and accepts no tenant key instead', async () => {
    for (const headers of [{}, { authorization: 'Bearer wrong-token-of-some-length' }, { authorization: METRICS_TOKEN }, stack.bearer('team-a')]) {
      const res = await fetch(`${stack.url}/metrics`, { headers });
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toMatch(/^Bearer /);
      const body = (await res.json()) as { detail: string; error_type: string };
      expect(body.error_type).toBe('unauthorized');
      expect(body.detail).toContain('METRICS_TOKEN');
    }
    const { samples } = await scrape(stack.url, { authorization: `Bearer ${METRICS_TOKEN}` });
    expect(valueOf(samples, 'fal_gateway_build_info', { version: '0.1.0' })).toBe(1);
    expect(stack.logs.join('\n')).not.toContain(METRICS_TOKEN);
  });

  it('warns once at a production start when /metrics is open beyond this machine', async () => {
    const warned = async (env: Record<string, string>) => {
      const started = await startStack({ env, listen: false });
      try {
        return started.logs.filter((l) => l.includes('METRICS_TOKEN is not set')).map((l) => JSON.parse(l) as { level: number; msg: string });
      } finally {
        await started.close();
      }
    };
    const open = await warned({ NODE_ENV: 'production', HOST: '0.0.0.0' });
    expect(open).toHaveLength(1);
    expect(open[0]).toMatchObject({ level: 40, msg: expect.stringContaining('GET /metrics') });
    const quiet: Array<Record<string, string>> = [
      { NODE_ENV: 'production', HOST: '0.0.0.0', METRICS_TOKEN },
      { NODE_ENV: 'production', HOST: '127.0.0.1' },
      { NODE_ENV: 'production', HOST: '::1' },
      { NODE_ENV: 'production', HOST: '0.0.0.0', METRICS_ENABLED: 'false' },
      { NODE_ENV: 'development', HOST: '0.0.0.0' },
    ];
    for (const env of quiet) {
      expect(await warned(env), JSON.stringify(env)).toEqual([]);
    }
  });

  it('serves no /metrics route when METRICS_ENABLED=false', async () => {
    const other = await startStack({ env: { METRICS_ENABLED: 'false' } });
    try {
      const res = await fetch(`${other.url}/metrics`);
      expect(res.status).toBe(404);
      expect(((await res.json()) as { error_type: string }).error_type).toBe('route_not_found');
    } finally {
      await other.close();
    }
  });
});

describe('job times in GET /metrics', () => {
  it("takes a job's running time from fal's inference_time, also for a job only read once it had ended", async () => {
    const clock = manualClock(Date.now());
    // No status cache: the read that settles the job must not be served the IN_QUEUE just read.
    const stack = await startStack({ sim: { now: clock.now, queueMs: 1_000, runMs: 7_000 }, env: { STATUS_CACHE_MS: '0' } });
    try {
      const auth = stack.bearer('team-a');
      const accepted = await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...auth }, body: JSON.stringify(SEED_REQUEST) });
      const job = (await accepted.json()) as { status_url: string; response_url: string };
      expect(((await (await fetch(job.status_url, { headers: auth })).json()) as { status: string }).status).toBe('IN_QUEUE');
      // Never seen running: the next read is of the result, after the job has ended.
      clock.advance(8_000);
      expect((await fetch(job.response_url, { headers: auth })).status).toBe(200);
      await stack.app.whenIdle();
      const text = await (await fetch(`${stack.url}/metrics`)).text();
      expect(text).toContain('fal_gateway_jobs_finished_total{tenant="team-a",outcome="completed"} 1');
      expect(text).toContain('fal_gateway_job_running_seconds_count{tenant="team-a"} 1');
      expect(text).toContain('fal_gateway_job_running_seconds_sum{tenant="team-a"} 7');
      // When it started is not known here: no queued time rather than a wrong one.
      expect(text).not.toContain('fal_gateway_job_queued_seconds_count{tenant="team-a"}');
    } finally {
      await stack.close();
    }
  });
});

describe('GatewayMetrics', () => {
  const samplesOf = async (metrics: GatewayMetrics) => parseExposition(await metrics.metricsText());

  it('records job, store, cache, circuit and concurrency metrics with bounded labels', async () => {
    const metrics = new GatewayMetrics({ defaultMetrics: false, version: '9.9.9' });
    metrics.jobSubmitted('team-a');
    metrics.jobSubmitted('team-a');
    metrics.jobState('team-a', 'IN_QUEUE');
    metrics.jobState('team-a', 'IN_PROGRESS');
    metrics.jobState('team-a', 'COMPLETED');
    metrics.jobFinished('team-a', 'completed', 0.3, 45);
    metrics.jobFinished('team-a', 'cancelled', 2, undefined);
    metrics.rejected('team-a', 'quota_day');
    metrics.storeError('accounting', 'record');
    metrics.cache('status', 'hit');
    metrics.cache('status', 'hit');
    metrics.cache('result', 'shared');
    metrics.readConcurrencyFrom(async () => [['team-a', 2]]);
    metrics.circuitState('half_open');

    const s = await samplesOf(metrics);
    expect(valueOf(s, 'fal_gateway_jobs_submitted_total', { tenant: 'team-a' })).toBe(2);
    for (const state of ['IN_QUEUE', 'IN_PROGRESS', 'COMPLETED']) {
      expect(valueOf(s, 'fal_gateway_jobs_observed_total', { tenant: 'team-a', state })).toBe(1);
    }
    expect(valueOf(s, 'fal_gateway_jobs_finished_total', { tenant: 'team-a', outcome: 'completed' })).toBe(1);
    expect(valueOf(s, 'fal_gateway_jobs_finished_total', { tenant: 'team-a', outcome: 'cancelled' })).toBe(1);
    // Queued 0.3 s and 2 s: one in the first bucket (0.5 s), both by 2 s. Running: only the 45 s one.
    expect(valueOf(s, 'fal_gateway_job_queued_seconds_bucket', { tenant: 'team-a', le: '0.5' })).toBe(1);
    expect(valueOf(s, 'fal_gateway_job_queued_seconds_bucket', { tenant: 'team-a', le: '2' })).toBe(2);
    expect(valueOf(s, 'fal_gateway_job_queued_seconds_bucket', { tenant: 'team-a', le: '600' })).toBe(2);
    expect(valueOf(s, 'fal_gateway_job_running_seconds_count', { tenant: 'team-a' })).toBe(1);
    expect(valueOf(s, 'fal_gateway_job_running_seconds_bucket', { tenant: 'team-a', le: '30' })).toBe(0);
    expect(valueOf(s, 'fal_gateway_job_running_seconds_bucket', { tenant: 'team-a', le: '60' })).toBe(1);
    expect(valueOf(s, 'fal_gateway_job_running_seconds_sum', { tenant: 'team-a' })).toBe(45);
    expect(valueOf(s, 'fal_gateway_rejections_total', { tenant: 'team-a', policy: 'quota_day' })).toBe(1);
    expect(valueOf(s, 'fal_gateway_store_errors_total', { store: 'accounting', operation: 'record' })).toBe(1);
    expect(valueOf(s, 'fal_gateway_cache_lookups_total', { kind: 'status', outcome: 'hit' })).toBe(2);
    expect(valueOf(s, 'fal_gateway_cache_lookups_total', { kind: 'result', outcome: 'shared' })).toBe(1);
    expect(valueOf(s, 'fal_gateway_concurrent_jobs', { tenant: 'team-a' })).toBe(2);
    expect(valueOf(s, 'fal_gateway_circuit_state')).toBe(1);
    expect(valueOf(s, 'fal_gateway_build_info', { version: '9.9.9' })).toBe(1);
    // No default process metrics were asked for.
    expect(s.some((sample) => sample.name.startsWith('fal_gateway_process_'))).toBe(false);
  });

  it('reads jobs in flight at each scrape, reporting none (not the last counts) while the store cannot answer', async () => {
    const metrics = new GatewayMetrics({ defaultMetrics: false });
    let answer: () => Promise<Array<[string, number]>> = async () => [['team-a', 2], ['team-b', 1]];
    metrics.readConcurrencyFrom(() => answer());
    let s = await samplesOf(metrics);
    expect(valueOf(s, 'fal_gateway_concurrent_jobs', { tenant: 'team-a' })).toBe(2);
    expect(valueOf(s, 'fal_gateway_concurrent_jobs', { tenant: 'team-b' })).toBe(1);
    answer = async () => {
      throw new Error('store down');
    };
    s = await samplesOf(metrics);
    expect(s.some((sample) => sample.name === 'fal_gateway_concurrent_jobs')).toBe(false);
    // The failure is counted as it happens; the counter is read before the gauge, so it shows next time.
    s = await samplesOf(metrics);
    expect(valueOf(s, 'fal_gateway_store_errors_total', { store: 'accounting', operation: 'slots_in_use' })).toBe(1);
    // A tenant no longer capped (or removed) loses its series.
    answer = async () => [['team-a', 0]];
    s = await samplesOf(metrics);
    expect(valueOf(s, 'fal_gateway_concurrent_jobs', { tenant: 'team-a' })).toBe(0);
    expect(s.some((sample) => sample.name === 'fal_gateway_concurrent_jobs' && sample.labels.tenant === 'team-b')).toBe(false);
  });

  it('keeps each instance in its own registry', async () => {
    const one = new GatewayMetrics({ defaultMetrics: false });
    const two = new GatewayMetrics({ defaultMetrics: false });
    one.httpRequest('/healthz', 'GET', 200, undefined, 0.01);
    one.httpRequest('/healthz', 'GET', 200, undefined, 0.02);
    two.httpRequest('/healthz', 'GET', 200, 'team-a', 0.01);
    const labels = { route: '/healthz', method: 'GET', status: '200' };
    expect(valueOf(await samplesOf(one), HTTP, { ...labels, tenant: 'anonymous' })).toBe(2);
    expect(valueOf(await samplesOf(two), HTTP, { ...labels, tenant: 'anonymous' })).toBe(0);
    expect(valueOf(await samplesOf(two), HTTP, { ...labels, tenant: 'team-a' })).toBe(1);
  });
});
