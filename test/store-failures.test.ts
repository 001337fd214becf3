import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { JobStore } from '../src/jobs/job-store.js';
import { MemoryJobStore } from '../src/jobs/memory-job-store.js';
import { json, SEED_REQUEST, startStack, upstreamCalls, type Stack } from './helpers.js';
import { startFaultyUpstream } from './support/faulty-upstream.js';

/**
 * A real memory store whose operations can be switched to fail, standing in for a store whose
 * backend (later: Redis) is down. What is under test is the gateway's answer, not the store.
 */
class BreakableStore implements JobStore {
  readonly kind = 'memory' as const;
  private readonly inner = new MemoryJobStore({ ttlMs: 60_000, maxEntries: 1_000 });
  broken = { record: false, ownerOf: false, ready: false };
  /** What a broken ownerOf says: a fault of the store by default, or its connection failing. */
  ownerOfError = 'store down';
  /** Record writes still to fail, one by one (a write timing out once). */
  recordFailures = 0;
  available() {
    return true;
  }
  async record(...args: Parameters<JobStore['record']>) {
    if (this.broken.record) throw new Error('store down');
    if (this.recordFailures > 0) {
      this.recordFailures--;
      throw new Error('Command timed out');
    }
    return this.inner.record(...args);
  }
  job(id: string) {
    return this.inner.job(id);
  }
  mark(...args: Parameters<JobStore['mark']>) {
    return this.inner.mark(...args);
  }
  dueForCheck(...args: Parameters<JobStore['dueForCheck']>) {
    return this.inner.dueForCheck(...args);
  }
  async ownerOf(id: string) {
    if (this.broken.ownerOf) throw new Error(this.ownerOfError);
    return this.inner.ownerOf(id);
  }
  async ready() {
    return !this.broken.ready;
  }
  claimIdempotencyKey(...args: Parameters<JobStore['claimIdempotencyKey']>) {
    return this.inner.claimIdempotencyKey(...args);
  }
  idempotencyRecord(key: string) {
    return this.inner.idempotencyRecord(key);
  }
  completeIdempotencyKey(...args: Parameters<JobStore['completeIdempotencyKey']>) {
    return this.inner.completeIdempotencyKey(...args);
  }
  releaseIdempotencyKey(...args: Parameters<JobStore['releaseIdempotencyKey']>) {
    return this.inner.releaseIdempotencyKey(...args);
  }
  close() {
    return this.inner.close();
  }
}

describe('when the job store fails', () => {
  let stack: Stack;
  const store = new BreakableStore();
  beforeAll(async () => {
    stack = await startStack({ app: { jobs: store } });
  });
  afterAll(() => stack.close());
  afterEach(() => {
    store.broken = { record: false, ownerOf: false, ready: false };
  });

  it('tells the client the queued request id when ownership cannot be recorded, rather than losing the job', async () => {
    store.broken.record = true;
    const res = await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-a') }, body: JSON.stringify(SEED_REQUEST) });
    // 500, a status fal's clients do not retry: a retried submit would be another paid job.
    expect(res.status).toBe(500);
    const body = (await res.json()) as { detail: string; error_type: string };
    expect(body.error_type).toBe('ownership_not_recorded');
    const queued = upstreamCalls(stack).filter((c) => c.method === 'POST');
    expect(queued).toHaveLength(1);
    // The id the upstream queued is in the message, so the job is not silently lost.
    expect(body.detail).toMatch(/The job [0-9a-f-]{36} was queued upstream/);
    expect(stack.logs.some((l) => l.includes('ownership could not be recorded'))).toBe(true);
  });

  it('tries the ownership write once more before giving up on a queued job', async () => {
    store.recordFailures = 1;
    const res = await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-a') }, body: JSON.stringify(SEED_REQUEST) });
    expect(res.status).toBe(200);
    const job = (await res.json()) as { status_url: string };
    expect(store.recordFailures).toBe(0);
    expect([200, 202]).toContain((await fetch(job.status_url, { headers: stack.bearer('team-a') })).status);
  });

  it('answers 503 store_unavailable, never 404, when ownership cannot be looked up', async () => {
    const ok = await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-a') }, body: JSON.stringify(SEED_REQUEST) });
    const { status_url } = (await ok.json()) as { status_url: string };
    store.broken.ownerOf = true;
    await stack.app.whenIdle();
    const before = upstreamCalls(stack).length;
    for (const tenant of ['team-a', 'team-b']) {
      const res = await fetch(status_url, { headers: stack.bearer(tenant) });
      expect(res.status).toBe(503);
      expect(((await res.json()) as { error_type: string }).error_type).toBe('store_unavailable');
    }
    await stack.app.whenIdle();
    expect(upstreamCalls(stack).length).toBe(before);
    store.broken.ownerOf = false;
    expect((await fetch(status_url, { headers: stack.bearer('team-a') })).status).toBeLessThan(300);
  });

  it('logs a store fault at error with its stack each time, and a lost connection once per 10 s at warn', async () => {
    const ok = await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-a') }, body: JSON.stringify(SEED_REQUEST) });
    const { status_url } = (await ok.json()) as { status_url: string };
    const refusals = async (count: number) => {
      const from = stack.logs.length;
      for (let i = 0; i < count; i++) expect((await fetch(status_url, { headers: stack.bearer('team-a') })).status).toBe(503);
      await stack.app.whenIdle();
      return stack.logs.slice(from).map((l) => JSON.parse(l) as { level: number; msg: string; err?: { stack?: string }; cause?: string }).filter((l) => l.msg !== 'request');
    };
    store.broken.ownerOf = true;
    try {
      const faults = await refusals(3);
      expect(faults).toHaveLength(3);
      expect(faults.every((l) => l.level === 50 && l.err?.stack?.includes('store down'))).toBe(true);
      store.ownerOfError = 'Connection is closed.';
      const outage = await refusals(3);
      expect(outage).toEqual([expect.objectContaining({ level: 40, cause: 'Connection is closed.' })]);
      expect(JSON.stringify(outage)).not.toContain('"stack"');
    } finally {
      store.broken.ownerOf = false;
      store.ownerOfError = 'store down';
    }
  });

  it('reports not ready while the store is down and while draining', async () => {
    store.broken.ready = true;
    const down = await fetch(`${stack.url}/readyz`);
    expect(down.status).toBe(503);
    expect(await down.json()).toEqual({ status: 'not_ready', checks: { store: 'failing', server: 'ok' } });
    store.broken.ready = false;
    expect((await fetch(`${stack.url}/readyz`)).status).toBe(200);
    stack.app.startDraining();
    const draining = await fetch(`${stack.url}/readyz`);
    expect(draining.status).toBe(503);
    expect(await draining.json()).toEqual({ status: 'not_ready', checks: { store: 'ok', server: 'shutting_down' } });
    expect((await fetch(`${stack.url}/healthz`)).status).toBe(200);
  });
});

describe('an upstream that hands out one request id twice', () => {
  it("keeps the job its first tenant's: the second submit is a 500 naming the id, and the second tenant cannot read the first's job", async () => {
    const upstream = await startFaultyUpstream();
    const id = '7c2d1e40-0000-4000-8000-00000000d0d0';
    upstream.setHandler((req, res) => {
      const send = (code: number, body: unknown) => res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      if (req.method === 'POST') return send(200, { status: 'IN_QUEUE', request_id: id, queue_position: 0 });
      return send(202, { status: 'IN_QUEUE', request_id: id, queue_position: 0 });
    });
    const stack = await startStack({ env: { UPSTREAM_BASE_URL: upstream.url, STALE_JOB_CHECK_MS: '0' } });
    try {
      const submit = (tenant: string) => fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer(tenant) }, body: JSON.stringify(SEED_REQUEST) });
      expect((await submit('team-a')).status).toBe(200);
      const second = await submit('team-b');
      expect(second.status).toBe(500);
      expect((await second.json()) as { error_type: string }).toMatchObject({ error_type: 'ownership_not_recorded' });
      const read = (tenant: string) => fetch(`${stack.url}/v1/requests/${id}/status`, { headers: stack.bearer(tenant) });
      expect((await read('team-a')).status).toBe(202);
      expect((await read('team-b')).status).toBe(404);
      expect(stack.logs.some((l) => l.includes("another tenant's job already holds"))).toBe(true);
    } finally {
      await stack.close();
      await upstream.close();
    }
  });
});
