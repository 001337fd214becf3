import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { utcDay } from '../src/accounting/accounting-store.js';
import type { JobMark } from '../src/jobs/job-store.js';
import { MemoryJobStore } from '../src/jobs/memory-job-store.js';
import { ErrorEnvelope, UpstreamErrorBody } from '../src/schemas/error.js';
import { manualClock } from '../src/simulator/index.js';
import { json, SEED_REQUEST, startStack, upstreamCalls, waitForCompletion, type Stack } from './helpers.js';
import { startFaultyUpstream } from './support/faulty-upstream.js';
import { redisAvailable, REDIS_URL, skipReason, uniquePrefix } from './support/redis.js';

const ADMIN_TOKEN = 'admin-'.padEnd(48, 'x');

type Usage = {
  from: string;
  to: string;
  tenants: Array<{
    tenant_id: string;
    totals: Record<string, number>;
    days: Array<Record<string, number | string>>;
    quota?: { day?: { limit: number; used: number; remaining: number; resets_at: string } };
    concurrency?: { limit: number; in_use: number };
  }>;
};

const post = (stack: Stack, tenant: string, images = 1, url = stack.url) =>
  fetch(`${url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer(tenant) }, body: JSON.stringify({ ...SEED_REQUEST, num_images: images }) });

const usage = async (stack: Stack, headers: Record<string, string>, query = '') => {
  const res = await fetch(`${stack.url}/v1/usage${query}`, { headers });
  return { res, body: (await res.json()) as Usage };
};

/** Submits every 50 ms (for at most 5 s) while the tenant's concurrency slots are all held; the last status. */
async function submitOnceSlotFrees(stack: Stack, tenant: string): Promise<number> {
  const deadline = Date.now() + 5_000;
  let status = 429;
  while (status === 429 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    status = (await post(stack, tenant)).status;
  }
  return status;
}

const nextUtcMidnight = () => {
  const now = new Date();
  return Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1);
};

describe('image quota', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({
      tenants: [{ id: 'team-a', quota: { imagesPerDay: 4 } }, { id: 'team-b' }],
      sim: { queueMs: 600_000 },
      env: { ADMIN_TOKEN },
    });
  });
  afterAll(() => stack.close());

  it('reserves num_images per submit, refuses the one that would go over with 429 quota_exceeded, and gives images back on cancel', async () => {
    const first = await post(stack, 'team-a', 3);
    expect(first.status).toBe(200);
    expect(first.headers.get('ratelimit-policy')).toContain('"images-day";q=4;w=86400;qu="images"');
    expect(first.headers.get('ratelimit')).toMatch(/"images-day";r=1;t=\d+/);
    expect(first.headers.get('ratelimit')).toMatch(/"submit";r=\d+;t=\d+/);
    const job = (await first.json()) as { cancel_url: string };

    const posts = upstreamCalls(stack).filter((c) => c.method === 'POST').length;
    const over = await post(stack, 'team-a', 2);
    expect(over.status).toBe(429);
    const body = (await over.json()) as { error_type: string; detail: string };
    expect(body.error_type).toBe('quota_exceeded');
    // What is left, and what would pass now: 3 of 4 used, 2 asked for.
    expect(body.detail).toBe(
      `Image quota: this submit asks for 2 images and 1 can be had now (1 of 4 per UTC day left). Ask for 1 or fewer, or submit again from ${new Date(nextUtcMidnight()).toISOString()} (see Retry-After).`,
    );
    const retryAfter = Number(over.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(86_400);
    expect(over.headers.get('ratelimit')).toContain('"images-day";r=1');
    // Refused before anything was sent: no paid job.
    expect(upstreamCalls(stack).filter((c) => c.method === 'POST').length).toBe(posts);

    // Another tenant has no quota and is unaffected.
    expect((await post(stack, 'team-b', 4)).status).toBe(200);

    // The cancel gives the 3 images back, once however often it is sent.
    expect((await fetch(job.cancel_url, { method: 'PUT', headers: stack.bearer('team-a') })).status).toBe(202);
    await fetch(job.cancel_url, { method: 'PUT', headers: stack.bearer('team-a') });
    // The gateway reads the job again at once and sees it ended without output.
    await stack.app.whenIdle();
    const { body: mine } = await usage(stack, stack.bearer('team-a'));
    expect(mine.tenants[0]!.quota!.day).toMatchObject({ limit: 4, used: 0, remaining: 4 });
    expect((await post(stack, 'team-a', 4)).status).toBe(200);
    const spent = await post(stack, 'team-a', 1);
    expect(spent.status).toBe(429);
    expect(((await spent.json()) as { detail: string }).detail).toMatch(/^Image quota: this submit asks for 1 image and none can be had now \(0 of 4 per UTC day left\)\. Submit again from /);
  });

  it('says what each window has left, and from when this very submit fits, when a day and a month are both capped', async () => {
    const both = await startStack({ tenants: [{ id: 'team-a', quota: { imagesPerDay: 10, imagesPerMonth: 12 } }], sim: { queueMs: 600_000 } });
    try {
      const now = new Date();
      const nextMonth = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1)).toISOString();
      const detail = async (images: number) => ((await (await post(both, 'team-a', images)).json()) as { detail: string }).detail;
      expect((await post(both, 'team-a', 4)).status).toBe(200);
      expect((await post(both, 'team-a', 4)).status).toBe(200);
      // 2 left today, 4 this month: 2 can pass now, and 4 would fit from midnight.
      expect(await detail(4)).toBe(
        `Image quota: this submit asks for 4 images and 2 can be had now (2 of 10 per UTC day and 4 of 12 per UTC month left). Ask for 2 or fewer, or submit again from ${new Date(nextUtcMidnight()).toISOString()} (see Retry-After).`,
      );
      expect((await post(both, 'team-a', 2)).status).toBe(200);
      // Today's spent and the month has 2 left: none now, and 4 only from next month.
      expect(await detail(4)).toBe(
        `Image quota: this submit asks for 4 images and none can be had now (0 of 10 per UTC day and 2 of 12 per UTC month left). Submit again from ${nextMonth} (see Retry-After).`,
      );
    } finally {
      await both.close();
    }
  });

  it('keeps the images of a job that finished with its output although it was cancelled', async () => {
    const upstream = await startFaultyUpstream();
    const id = '5b1c9a70-finished-anyway';
    upstream.setHandler((req, res) => {
      const send = (code: number, body: unknown) => res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      if (req.method === 'POST') return send(200, { status: 'IN_QUEUE', request_id: id, queue_position: 0 });
      if (req.method === 'PUT') return send(202, { status: 'CANCELLATION_REQUESTED' });
      if (req.url?.includes('/status')) return send(200, { status: 'COMPLETED', request_id: id, logs: null, metrics: { inference_time: 2 } });
      return send(200, { images: [{ url: 'https://example.com/a.png' }], seed: 1 });
    });
    const running = await startStack({ tenants: [{ id: 'team-a', quota: { imagesPerDay: 4 } }], env: { UPSTREAM_BASE_URL: upstream.url } });
    try {
      const job = (await (await post(running, 'team-a', 3)).json()) as { cancel_url: string };
      expect((await fetch(job.cancel_url, { method: 'PUT', headers: running.bearer('team-a') })).status).toBe(202);
      await running.app.whenIdle();
      const { body } = await usage(running, running.bearer('team-a'));
      // The runner was already done: the images were made, so they stay charged.
      expect(body.tenants[0]!.quota!.day).toMatchObject({ used: 3, remaining: 1 });
      expect(body.tenants[0]!.totals).toMatchObject({ completed: 1, cancelled: 0 });
      expect((await post(running, 'team-a', 2)).status).toBe(429);
    } finally {
      await running.close();
      await upstream.close();
    }
  });

  it('gives images back when the upstream refuses the job', async () => {
    const upstream = await startFaultyUpstream();
    upstream.setHandler((_req, res) => res.writeHead(503, { 'content-type': 'application/json' }).end(JSON.stringify({ detail: 'no runners', error_type: 'runner_scheduling_failure' })));
    const failing = await startStack({ tenants: [{ id: 'team-a', quota: { imagesPerDay: 2 } }], env: { UPSTREAM_BASE_URL: upstream.url } });
    try {
      for (let i = 0; i < 3; i++) {
        const refused = await post(failing, 'team-a', 2);
        expect(refused.status).toBe(503);
        // The answer's RateLimit field counts the images as given back.
        expect(refused.headers.get('ratelimit')).toContain('"images-day";r=2');
      }
      // Each failed submit gave its 2 images back, so the quota never ran out.
      expect(upstream.requests.filter((r) => r.method === 'POST')).toHaveLength(3);
      const { body } = await usage(failing, failing.bearer('team-a'));
      expect(body.tenants[0]!.quota!.day).toMatchObject({ used: 0, remaining: 2 });
      expect(body.tenants[0]!.totals.submitted).toBe(0);
    } finally {
      await failing.close();
      await upstream.close();
    }
  });
});

describe('a cancel of a job admitted just before midnight UTC and answered after it', () => {
  it('gives the images back to the day they were charged to', async () => {
    const midnight = nextUtcMidnight() + 86_400_000;
    const id = 'a7c3e1f0-midnight-job';
    const upstream = await startFaultyUpstream();
    upstream.setHandler((req, res) => {
      const send = (code: number, body: unknown) => res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      if (req.method === 'POST') {
        // fal answers the submit after midnight: the job is recorded on the new day.
        vi.setSystemTime(midnight + 200);
        return send(200, { status: 'IN_QUEUE', request_id: id, queue_position: 0 });
      }
      if (req.method === 'PUT') return send(202, { status: 'CANCELLATION_REQUESTED' });
      if (req.url?.includes('/status')) return send(200, { status: 'COMPLETED', request_id: id, logs: null, metrics: {}, error: 'Request was cancelled', error_type: 'request_cancelled' });
      return send(400, { detail: 'Request was cancelled' });
    });
    // Only Date is faked (timers run as usual): the gateway admits the submit at 23:59:59.900 UTC.
    vi.setSystemTime(midnight - 100);
    const stack = await startStack({ tenants: [{ id: 'team-a', quota: { imagesPerDay: 4 } }], env: { UPSTREAM_BASE_URL: upstream.url } });
    try {
      const submitted = await post(stack, 'team-a', 3);
      expect(submitted.status).toBe(200);
      const job = (await submitted.json()) as { cancel_url: string };
      expect((await fetch(job.cancel_url, { method: 'PUT', headers: stack.bearer('team-a') })).status).toBe(202);
      await stack.app.whenIdle();
      // The day before midnight, which the 3 images were charged to, has them back...
      vi.setSystemTime(midnight - 50);
      expect((await usage(stack, stack.bearer('team-a'))).body.tenants[0]!.quota!.day).toMatchObject({ used: 0, remaining: 4 });
      // ...and the new day was never charged.
      vi.setSystemTime(midnight + 500);
      expect((await usage(stack, stack.bearer('team-a'))).body.tenants[0]!.quota!.day).toMatchObject({ used: 0, remaining: 4 });
    } finally {
      vi.useRealTimers();
      await stack.close();
      await upstream.close();
    }
  });
});

describe('concurrent jobs', () => {
  const clock = manualClock(Date.now());
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({
      tenants: [{ id: 'team-a', maxConcurrentJobs: 2 }, { id: 'team-b' }],
      sim: { queueMs: 1_000, runMs: 1_000, now: clock.now },
      env: { STATUS_CACHE_MS: '0', STALE_JOB_CHECK_MS: '0' },
    });
  });
  afterAll(() => stack.close());

  it('holds a slot from submit until the gateway sees the job end, and refuses more with 429 concurrency_exceeded', async () => {
    const a = (await (await post(stack, 'team-a')).json()) as { status_url: string };
    const second = await post(stack, 'team-a');
    expect(second.status).toBe(200);
    expect(second.headers.get('ratelimit')).toContain('"concurrency";r=0');
    expect(second.headers.get('ratelimit-policy')).toContain('"concurrency";q=2;qu="concurrent-requests"');
    const third = await post(stack, 'team-a');
    expect(third.status).toBe(429);
    expect(((await third.json()) as { error_type: string }).error_type).toBe('concurrency_exceeded');
    expect(third.headers.get('retry-after')).toBe('5');
    expect((await post(stack, 'team-b')).status).toBe(200);

    // The first job ends; a poll sees it, and its slot is free for the next submit.
    clock.advance(2_500);
    await waitForCompletion(a.status_url, stack.bearer('team-a'));
    await stack.app.whenIdle();
    const { body } = await usage(stack, stack.bearer('team-a'));
    expect(body.tenants[0]!.concurrency).toEqual({ limit: 2, in_use: 1 });
    expect((await post(stack, 'team-a')).status).toBe(200);
    expect((await post(stack, 'team-a')).status).toBe(429);
  });

  it('warns at start that with STALE_JOB_CHECK_MS=0 a job nobody reads to its end keeps its slot', async () => {
    const warnings = stack.logs.map((l) => JSON.parse(l) as { level: number; msg: string }).filter((l) => l.msg.startsWith('STALE_JOB_CHECK_MS=0'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.level).toBe(40);
    // Not said where it does not apply: no tenant with maxConcurrentJobs.
    const other = await startStack({ env: { STALE_JOB_CHECK_MS: '0' } });
    try {
      expect(other.logs.filter((l) => l.includes('STALE_JOB_CHECK_MS=0'))).toEqual([]);
    } finally {
      await other.close();
    }
  });
});

describe('a quota and a concurrency limit together', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ tenants: [{ id: 'team-a', quota: { imagesPerDay: 4 }, maxConcurrentJobs: 1 }], sim: { queueMs: 60_000 } });
  });
  afterAll(() => stack.close());

  it('a submit refused for concurrency charges no image, and its RateLimit field says so', async () => {
    const first = await post(stack, 'team-a');
    expect(first.status).toBe(200);
    expect(first.headers.get('ratelimit')).toContain('"images-day";r=3');
    const refused = await post(stack, 'team-a');
    expect(refused.status).toBe(429);
    expect(((await refused.json()) as { error_type: string }).error_type).toBe('concurrency_exceeded');
    // Refused before the quota was touched: no image was held, not even for a moment.
    expect(refused.headers.get('ratelimit')).toContain('"concurrency";r=0');
    expect(refused.headers.get('ratelimit')).not.toContain('images-day');
    const { body } = await usage(stack, stack.bearer('team-a'));
    expect(body.tenants[0]!.quota!.day).toMatchObject({ used: 1, remaining: 3 });
  });
});

describe('a cancel, then a submit at once', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ tenants: [{ id: 'team-a', quota: { imagesPerDay: 1 }, maxConcurrentJobs: 1 }], sim: { queueMs: 60_000 } });
  });
  afterAll(() => stack.close());

  it('finds the image given back and the slot free: the cancel is answered once the job it removed is accounted', async () => {
    for (let round = 0; round < 3; round++) {
      const submitted = await post(stack, 'team-a');
      expect(submitted.status).toBe(200);
      const job = (await submitted.json()) as { cancel_url: string };
      expect((await fetch(job.cancel_url, { method: 'PUT', headers: stack.bearer('team-a') })).status).toBe(202);
      // No wait: a client cancels and resubmits (before: 429 quota_exceeded, retry at midnight UTC).
    }
    const { body } = await usage(stack, stack.bearer('team-a'));
    expect(body.tenants[0]!.quota!.day).toMatchObject({ used: 0 });
    expect(body.tenants[0]!.totals).toMatchObject({ submitted: 3, cancelled: 3 });
  });
});

describe.skipIf(!redisAvailable)(`a burst against a quota and a concurrency limit together, across replicas${skipReason}`, () => {
  let stack: Stack;
  let other: { url: string };
  beforeAll(async () => {
    stack = await startStack({
      tenants: [{ id: 'team-a', quota: { imagesPerDay: 4 }, maxConcurrentJobs: 1 }],
      sim: { queueMs: 60_000 },
      env: { REDIS_URL, REDIS_KEY_PREFIX: uniquePrefix() },
    });
    other = await stack.addReplica();
  });
  afterAll(() => stack.close());

  it('refuses the submits over the concurrency limit for concurrency (retry in seconds), never as a spent quota (retry at midnight)', async () => {
    // Six at once, quota room for four: had refused submits held images while they lost on
    // concurrency, some of the six would have met a quota that only looked spent.
    const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => post(stack, 'team-a', 1, i % 2 === 0 ? stack.url : other.url)));
    const kinds = await Promise.all(answers.map(async (res) => (res.status === 200 ? 'ok' : ((await res.json()) as { error_type: string }).error_type)));
    expect(kinds.sort()).toEqual(['concurrency_exceeded', 'concurrency_exceeded', 'concurrency_exceeded', 'concurrency_exceeded', 'concurrency_exceeded', 'ok']);
    for (const res of answers) if (res.status === 429) expect(res.headers.get('retry-after')).toBe('5');
    const { body } = await usage(stack, stack.bearer('team-a'));
    expect(body.tenants[0]!.quota!.day).toMatchObject({ used: 1, remaining: 3 });
  });
});

describe('a job whose result is read without any status read', () => {
  let stack: Stack;
  beforeAll(async () => {
    // No concurrency limit, so no background check: only the result read can reveal the end.
    stack = await startStack({ tenants: [{ id: 'team-a' }], sim: { queueMs: 20, runMs: 20 }, env: { STALE_JOB_CHECK_MS: '0' } });
  });
  afterAll(() => stack.close());

  it('is counted as completed, with its inference time, once', async () => {
    const job = (await (await post(stack, 'team-a')).json()) as { response_url: string; request_id: string };
    await new Promise((r) => setTimeout(r, 100));
    const read = async () => (await fetch(job.response_url, { headers: stack.bearer('team-a') })).status;
    expect(await read()).toBe(200);
    expect(await read()).toBe(200);
    await stack.app.whenIdle();
    const { body } = await usage(stack, stack.bearer('team-a'));
    expect(body.tenants[0]!.totals).toMatchObject({ submitted: 1, completed: 1, failed: 0, cancelled: 0 });
    expect(body.tenants[0]!.totals.inference_seconds).toBeGreaterThan(0);
    // The gateway asked upstream for the status once, itself; the second result read came from the cache.
    const statusReads = upstreamCalls(stack).filter((c) => c.method === 'GET' && c.path.startsWith(`/fal-ai/flux-lora/requests/${job.request_id}/status`));
    expect(statusReads).toHaveLength(1);
  });
});

describe('a job nobody ever reads', () => {
  let stack: Stack;
  beforeAll(async () => {
    // No concurrency limit: only the check of jobs whose end was not seen can count this one.
    stack = await startStack({ tenants: [{ id: 'team-a' }], sim: { queueMs: 20, runMs: 20 }, env: { STALE_JOB_CHECK_MS: '100' } });
  });
  afterAll(() => stack.close());

  it('is counted as completed, with its inference time, by the background check', async () => {
    const job = (await (await post(stack, 'team-a')).json()) as { request_id: string };
    const totals = async () => (await usage(stack, stack.bearer('team-a'))).body.tenants[0]!.totals;
    const deadline = Date.now() + 5_000;
    while ((await totals()).completed === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(await totals()).toMatchObject({ submitted: 1, completed: 1 });
    expect((await totals()).inference_seconds).toBeGreaterThan(0);
    // The gateway asked upstream itself; once the end is counted it stops asking.
    const statusReads = () => upstreamCalls(stack).filter((c) => c.method === 'GET' && c.path.startsWith(`/fal-ai/flux-lora/requests/${job.request_id}/status`)).length;
    const asked = statusReads();
    expect(asked).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 400));
    expect(statusReads()).toBe(asked);
  });
});

describe('a job the upstream no longer knows', () => {
  it('is asked about once by the background check, then no more', async () => {
    const upstream = await startFaultyUpstream();
    const id = '7c2d1e40-forgotten-upstream';
    upstream.setHandler((req, res) => {
      const send = (code: number, body: unknown) => res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      if (req.method === 'POST') return send(200, { status: 'IN_QUEUE', request_id: id, queue_position: 0 });
      return send(404, { detail: 'Request not found' });
    });
    const stack = await startStack({ tenants: [{ id: 'team-a' }], env: { UPSTREAM_BASE_URL: upstream.url, STALE_JOB_CHECK_MS: '100' } });
    try {
      expect((await post(stack, 'team-a')).status).toBe(200);
      const statusReads = () => upstream.requests.filter((r) => r.method === 'GET' && r.url.includes('/status')).length;
      const deadline = Date.now() + 3_000;
      while (statusReads() === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(statusReads()).toBeGreaterThan(0);
      const asked = statusReads();
      await new Promise((r) => setTimeout(r, 500));
      expect(statusReads()).toBe(asked);
      expect(stack.logs.some((line) => line.includes('unknown upstream; no longer checked'))).toBe(true);
      // Its owner asking gets fal's 404 as it came: the shape the routes document for a 404.
      const read = await fetch(`${stack.url}/v1/requests/${id}/status`, { headers: stack.bearer('team-a') });
      expect(read.status).toBe(404);
      const body: unknown = await read.json();
      expect(body).toEqual({ detail: 'Request not found' });
      expect(UpstreamErrorBody.safeParse(body).success).toBe(true);
      expect(ErrorEnvelope.safeParse(body).success).toBe(false);
    } finally {
      await stack.close();
      await upstream.close();
    }
  });
});

describe('jobs nobody polls', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({
      tenants: [{ id: 'team-a', maxConcurrentJobs: 1 }],
      sim: { queueMs: 20, runMs: 20 },
      env: { STALE_JOB_CHECK_MS: '100' },
    });
  });
  afterAll(() => stack.close());

  it('frees the slot of a finished job through the background check', async () => {
    expect((await post(stack, 'team-a')).status).toBe(200);
    expect((await post(stack, 'team-a')).status).toBe(429);
    // No client polls: the gateway checks the job itself and frees its slot.
    expect(await submitOnceSlotFrees(stack, 'team-a')).toBe(200);
    const statusReads = upstreamCalls(stack).filter((c) => c.method === 'GET' && c.path.includes('/status'));
    expect(statusReads.length).toBeGreaterThan(0);
  });
});

describe('a finished job whose accounting failed once', () => {
  /** A real memory store whose first `settled` mark fails, as a store blip would. */
  class FlakyStore extends MemoryJobStore {
    failures = 1;
    override async mark(requestId: string, mark: JobMark): Promise<boolean> {
      if (mark === 'settled' && this.failures > 0) {
        this.failures--;
        throw new Error('store blip');
      }
      return super.mark(requestId, mark);
    }
  }
  let stack: Stack;
  const store = new FlakyStore({ ttlMs: 60_000, maxEntries: 1_000 });
  beforeAll(async () => {
    stack = await startStack({
      tenants: [{ id: 'team-a', maxConcurrentJobs: 1 }],
      sim: { queueMs: 10, runMs: 10 },
      env: { STALE_JOB_CHECK_MS: '100' },
      app: { jobs: store },
    });
  });
  afterAll(() => stack.close());

  it('is settled by the background check from the kept COMPLETED status, freeing its slot', async () => {
    const job = (await (await post(stack, 'team-a')).json()) as { status_url: string };
    await waitForCompletion(job.status_url, stack.bearer('team-a'));
    await stack.app.whenIdle();
    expect(store.failures).toBe(0);
    expect(stack.logs.some((l) => l.includes('could not account for a finished job'))).toBe(true);
    // The status is now served from the cache; the check must still settle the job.
    expect(await submitOnceSlotFrees(stack, 'team-a')).toBe(200);
    const { body } = await usage(stack, stack.bearer('team-a'));
    expect(body.tenants[0]!.totals.completed).toBe(1);
  });
});

describe('usage', () => {
  const clock = manualClock(Date.now());
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ sim: { queueMs: 10, runMs: 10, now: clock.now }, env: { ADMIN_TOKEN } });
  });
  afterAll(() => stack.close());

  it('counts jobs, images, outcomes and inference seconds per tenant and UTC day', async () => {
    const ok = (await (await post(stack, 'team-a', 2)).json()) as { status_url: string };
    const cancelled = (await (await post(stack, 'team-a', 3)).json()) as { cancel_url: string; status_url: string };
    expect((await fetch(cancelled.cancel_url, { method: 'PUT', headers: stack.bearer('team-a') })).status).toBe(202);
    await post(stack, 'team-b', 4);
    clock.advance(100);
    const done = await waitForCompletion(ok.status_url, stack.bearer('team-a'));
    await waitForCompletion(cancelled.status_url, stack.bearer('team-a'));
    // Polled twice more: a job's end is counted once.
    await waitForCompletion(ok.status_url, stack.bearer('team-a'));
    await stack.app.whenIdle();

    const inference = [done.body].reduce((sum, b) => sum + ((b as { metrics?: { inference_time?: number } }).metrics?.inference_time ?? 0), 0);
    const { res, body } = await usage(stack, stack.bearer('team-a'));
    expect(res.status).toBe(200);
    const today = utcDay(Date.now());
    expect(body.to).toBe(today);
    expect(body.from).toBe(`${today.slice(0, 8)}01`);
    expect(body.tenants).toHaveLength(1);
    const mine = body.tenants[0]!;
    expect(mine.tenant_id).toBe('team-a');
    expect(mine.totals).toMatchObject({ submitted: 2, images: 2 + 3, completed: 1, failed: 0, cancelled: 1 });
    expect(mine.totals.inference_seconds).toBeGreaterThan(0);
    expect(mine.totals.inference_seconds).toBeGreaterThanOrEqual(Math.round(inference * 1000) / 1000 - 0.002);
    expect(mine.days).toEqual([{ day: today, ...mine.totals }]);
    expect(mine.quota).toBeUndefined();

    // A tenant cannot read another's usage; the admin token reads everyone's.
    expect((await usage(stack, stack.bearer('team-a'), '?tenant=team-b')).res.status).toBe(422);
    const admin = await usage(stack, { authorization: `Bearer ${ADMIN_TOKEN}` });
    expect(admin.res.status).toBe(200);
    expect(admin.body.tenants.map((t) => t.tenant_id)).toEqual(['team-a', 'team-b']);
    expect(admin.body.tenants[1]!.totals).toMatchObject({ submitted: 1, images: 4 });
    const one = await usage(stack, { authorization: `Bearer ${ADMIN_TOKEN}` }, '?tenant=team-b');
    expect(one.body.tenants.map((t) => t.tenant_id)).toEqual(['team-b']);
  });

  it("lists every tenant of the tenants file in the admin view, those that used nothing with zeros", async () => {
    const idle = await startStack({ env: { ADMIN_TOKEN }, tenants: [{ id: 'team-a' }, { id: 'team-idle' }] });
    try {
      await post(idle, 'team-a', 1);
      await idle.app.whenIdle();
      const admin = await usage(idle, { authorization: `Bearer ${ADMIN_TOKEN}` });
      expect(admin.body.tenants.map((t) => t.tenant_id)).toEqual(['team-a', 'team-idle']);
      expect(admin.body.tenants[1]!.days).toEqual([]);
      expect(admin.body.tenants[1]!.totals).toMatchObject({ submitted: 0, images: 0, completed: 0, failed: 0, cancelled: 0, inference_seconds: 0 });
    } finally {
      await idle.close();
    }
  });

  it('counts a job that ends with an error as failed, with its inference time', async () => {
    const upstream = await startFaultyUpstream();
    upstream.setHandler((req, res) => {
      const id = '7a3e0c2b-failed-job';
      const send = (code: number, body: unknown) => res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      if (req.method === 'POST') return send(200, { status: 'IN_QUEUE', request_id: id, queue_position: 0 });
      if (req.url?.includes('/status')) {
        return send(200, { status: 'COMPLETED', request_id: id, logs: null, metrics: { inference_time: 1.25 }, error: 'Unprocessable Entity', error_type: 'validation_error' });
      }
      return send(422, { detail: [{ loc: ['body', 'image_url'], msg: 'could not load the image', type: 'value_error' }] });
    });
    const failing = await startStack({ env: { UPSTREAM_BASE_URL: upstream.url } });
    try {
      const job = (await (await post(failing, 'team-a', 2)).json()) as { status_url: string; response_url: string };
      expect((await fetch(job.status_url, { headers: failing.bearer('team-a') })).status).toBe(200);
      await failing.app.whenIdle();
      const { body } = await usage(failing, failing.bearer('team-a'));
      expect(body.tenants[0]!.totals).toEqual({ submitted: 1, images: 2, completed: 0, failed: 1, cancelled: 0, inference_seconds: 1.25 });
      // The model's verdict is final, so it is kept like a result.
      expect((await fetch(job.response_url, { headers: failing.bearer('team-a') })).status).toBe(422);
      expect(upstream.requests.filter((r) => r.method === 'GET' && !r.url.includes('/status'))).toHaveLength(1);
    } finally {
      await failing.close();
      await upstream.close();
    }
  });

  it('validates the range and refuses unknown callers', async () => {
    const h = stack.bearer('team-a');
    expect((await usage(stack, h, '?from=2026-02-30')).res.status).toBe(422);
    // Not a day at all: one entry, saying the form it must have.
    const malformed = await fetch(`${stack.url}/v1/usage?from=abc`, { headers: h });
    expect(malformed.status).toBe(422);
    expect(((await malformed.json()) as { detail: Array<{ loc: unknown[]; msg: string }> }).detail).toEqual([
      expect.objectContaining({ loc: ['query', 'from'], msg: expect.stringContaining('YYYY-MM-DD') }),
    ]);
    expect((await usage(stack, h, '?from=2026-11-02&to=2026-11-01')).res.status).toBe(422);
    expect((await usage(stack, h, '?from=2024-01-01&to=2026-01-01')).res.status).toBe(422);
    const empty = await usage(stack, h, '?from=2020-01-01&to=2020-01-31');
    expect(empty.res.status).toBe(200);
    expect(empty.body.tenants[0]!.totals.submitted).toBe(0);
    expect((await usage(stack, {})).res.status).toBe(401);
    expect((await usage(stack, { authorization: `Bearer ${ADMIN_TOKEN}x` })).res.status).toBe(401);
  });
});

describe.skipIf(!redisAvailable)(`quotas across replicas${skipReason}`, () => {
  let stack: Stack;
  let other: { url: string };
  beforeAll(async () => {
    stack = await startStack({
      tenants: [{ id: 'team-a', quota: { imagesPerDay: 10 } }, { id: 'team-c', maxConcurrentJobs: 3 }],
      sim: { queueMs: 600_000 },
      // Atomicity is under test, not the timeout: a loaded test machine must not turn commands into 503s.
      env: { REDIS_URL, REDIS_KEY_PREFIX: uniquePrefix(), REDIS_COMMAND_TIMEOUT_MS: '5000' },
    });
    other = await stack.addReplica();
  });
  afterAll(() => stack.close());

  it('lets exactly the quota through when two replicas take submits at once', async () => {
    const answers = await Promise.all(Array.from({ length: 30 }, (_, i) => post(stack, 'team-a', 1, i % 2 ? other.url : stack.url)));
    const codes = answers.map((r) => r.status);
    expect(codes.filter((c) => c === 200)).toHaveLength(10);
    expect(codes.filter((c) => c === 429)).toHaveLength(20);
    expect(upstreamCalls(stack).filter((c) => c.method === 'POST')).toHaveLength(10);
  });

  it('holds exactly maxConcurrentJobs slots when two replicas take submits at once', async () => {
    const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => post(stack, 'team-c', 1, i % 2 ? other.url : stack.url)));
    expect(answers.filter((r) => r.status === 200)).toHaveLength(3);
    expect(answers.filter((r) => r.status === 429)).toHaveLength(9);
  });
});

describe("fal's account concurrency limit", () => {
  let stack: Stack;
  beforeAll(async () => {
    // fal refuses a submit while as many jobs as the account may run are queued or running.
    stack = await startStack({ tenants: [{ id: 'team-a', quota: { imagesPerDay: 10 }, maxConcurrentJobs: 5 }], sim: { queueMs: 600_000, accountConcurrency: 1 } });
  });
  afterAll(() => stack.close());

  it("passes fal's 429 on as it came, and gives the images and the concurrency slot back (nothing was queued)", async () => {
    expect((await post(stack, 'team-a', 2)).status).toBe(200);
    const refused = await post(stack, 'team-a', 3);
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(await refused.json()).toEqual({ detail: 'Concurrency limit reached: 1 requests are already queued or running for this account' });
    await stack.app.whenIdle();
    const { body } = await usage(stack, stack.bearer('team-a'));
    expect(body.tenants[0]!.quota!.day).toMatchObject({ limit: 10, used: 2, remaining: 8 });
    expect(body.tenants[0]!.concurrency).toMatchObject({ limit: 5, in_use: 1 });
  });
});
