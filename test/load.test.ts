import { performance } from 'node:perf_hooks';
import autocannon from 'autocannon';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SEED_REQUEST, startStack, upstreamCalls, type Stack } from './helpers.js';

/**
 * Load test (issue: "2,000 submits and 20,000 status reads across 5 tenants in under a minute;
 * every accepted submit's job is readable afterwards by its tenant and by no other; zero 5xx").
 *
 * autocannon drives the gateway over loopback, in front of the simulated fal queue. Both phases
 * are bounded by count (`amount`) and in time (an `instance.stop()` once the minute is spent).
 * Throughput and latencies are printed, not asserted: the machines are shared and noisy.
 */

const TENANTS = ['tenant-1', 'tenant-2', 'tenant-3', 'tenant-4', 'tenant-5'] as const;
const SUBMITS = 2_000;
const STATUS_READS = 20_000;
const CONNECTIONS = 20;
const BUDGET_MS = 60_000;
const VERIFY_CONCURRENCY = 50;
const UNLIMITED = { max: 1_000_000, timeWindowMs: 60_000 };
const SUBMIT_PATH = '/fal-ai/flux-lora/image-to-image';
const STATUS_STATES = new Set(['IN_QUEUE', 'IN_PROGRESS', 'COMPLETED']);

interface Accepted {
  id: string;
  tenant: string;
  seed: number;
}

/** What a connection has in flight (autocannon passes the same context to setupRequest and onResponse). */
interface Flight {
  tenant?: string;
  seed?: number;
  id?: string;
}

/** Runs autocannon, stopping it when `deadline` (performance.now()) passes. */
async function cannon(options: autocannon.Options, deadline: number): Promise<{ result: autocannon.Result; ms: number }> {
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(options, (err: unknown, res: autocannon.Result) => (err ? reject(err) : resolve(res)));
    timer = setTimeout(() => instance.stop(), Math.max(0, deadline - performance.now()));
  }).finally(() => clearTimeout(timer));
  return { result, ms: performance.now() - started };
}

/** Calls `fn` on every item, at most `limit` at a time. */
async function forEachLimit<T>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      await fn(items[index]!, index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

const statusCounts = (result: autocannon.Result) =>
  Object.fromEntries(Object.entries(result.statusCodeStats ?? {}).map(([code, stat]) => [code, stat.count ?? 0]));

const seconds = (ms: number) => (ms / 1000).toFixed(2);

function parseBody(body: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(body);
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

const upstreamSubmits = (stack: Stack) => upstreamCalls(stack).filter((r) => r.method === 'POST' && r.path === SUBMIT_PATH);
const upstreamStatusReads = (stack: Stack) =>
  upstreamCalls(stack).filter((r) => r.method === 'GET' && /^\/fal-ai\/flux-lora\/requests\/[^/]+\/status(\?|$)/.test(r.path));

function openConnections(stack: Stack): Promise<number> {
  return new Promise((resolve, reject) => stack.app.server.getConnections((err, count) => (err ? reject(err) : resolve(count))));
}

describe('load: 2,000 submits and 20,000 status reads across 5 tenants', () => {
  let stack: Stack;
  const accepted: Accepted[] = [];
  /** Responses whose body did not match what was asked (kept short: the first few). */
  const problems: string[] = [];
  let problemCount = 0;
  const problem = (text: string) => {
    problemCount++;
    if (problems.length < 10) problems.push(text);
  };
  let upstreamSubmitsAfterPhase1 = -1;
  const summary: string[] = [];

  beforeAll(async () => {
    stack = await startStack({
      tenants: TENANTS.map((id) => ({ id, submit: UNLIMITED, read: UNLIMITED })),
      // No job is forgotten upstream, and every call stays recorded (2,000 + 20,000 + checks).
      sim: { queueMs: 20, runMs: 50, maxJobs: 10_000, maxRecordedRequests: 100_000 },
      // No result prefetch: this test never fetches results, and the simulator renders every image it is asked for.
      env: { LOG_LEVEL: 'warn', RESULT_PREFETCH: 'false' },
    });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('serves both phases in under a minute, with zero 5xx and every submit accepted', { timeout: 120_000 }, async () => {
    const heapBefore = process.memoryUsage().heapUsed;
    const started = performance.now();
    const deadline = started + BUDGET_MS;
    const bearer = Object.fromEntries(TENANTS.map((t) => [t, stack.bearer(t).authorization!]));

    // Phase 1: submits, round-robin over the tenants, each with its own seed so upstream bodies are traceable.
    let submitSeq = 0;
    const submitResponses = new Map<number, number>();
    const phase1 = await cannon(
      {
        url: stack.url,
        connections: CONNECTIONS,
        amount: SUBMITS,
        timeout: 20,
        requests: [
          {
            method: 'POST',
            path: '/v1/image-to-image',
            setupRequest: (req, context) => {
              const flight = context as Flight;
              const seed = submitSeq++;
              const tenant = TENANTS[seed % TENANTS.length]!;
              flight.tenant = tenant;
              flight.seed = seed;
              return {
                ...req,
                headers: {
                  ...req.headers,
                  'content-type': 'application/json',
                  authorization: bearer[tenant],
                  'x-request-id': `load-submit-${seed}`,
                },
                body: JSON.stringify({ ...SEED_REQUEST, seed }),
              };
            },
            onResponse: (status, body, context) => {
              const { tenant, seed } = context as Flight;
              if (tenant === undefined || seed === undefined) return problem(`submit response without a request in flight (${status})`);
              submitResponses.set(seed, (submitResponses.get(seed) ?? 0) + 1);
              if (status !== 200) return problem(`submit seed ${seed} by ${tenant}: ${status} ${body.slice(0, 200)}`);
              const id = parseBody(body)?.request_id;
              if (typeof id !== 'string') return problem(`submit seed ${seed} by ${tenant}: 200 without request_id: ${body.slice(0, 200)}`);
              accepted.push({ id, tenant, seed });
            },
          },
        ],
      },
      deadline,
    );
    upstreamSubmitsAfterPhase1 = upstreamSubmits(stack).length;
    expect(accepted.length, 'phase 1 accepted no job: nothing to read in phase 2').toBeGreaterThan(0);

    // Phase 2: status reads spread evenly over the accepted jobs, each with its owner's key.
    let readSeq = 0;
    const phase2 = await cannon(
      {
        url: stack.url,
        connections: CONNECTIONS,
        amount: STATUS_READS,
        timeout: 20,
        requests: [
          {
            method: 'GET',
            path: '/',
            setupRequest: (req, context) => {
              const flight = context as Flight;
              const job = accepted[readSeq++ % accepted.length]!;
              flight.id = job.id;
              flight.tenant = job.tenant;
              return { ...req, path: `/v1/requests/${job.id}/status`, headers: { ...req.headers, authorization: bearer[job.tenant] } };
            },
            onResponse: (status, body, context) => {
              const { id, tenant } = context as Flight;
              if (status !== 200 && status !== 202) return problem(`status of ${id} by ${tenant}: ${status} ${body.slice(0, 200)}`);
              const parsed = parseBody(body);
              if (parsed?.request_id !== id || !STATUS_STATES.has(String(parsed?.status))) {
                problem(`status of ${id} by ${tenant}: ${status} with a body for another job or state: ${body.slice(0, 200)}`);
              }
            },
          },
        ],
      },
      deadline,
    );
    const totalMs = performance.now() - started;
    const heapAfter = process.memoryUsage().heapUsed;

    const line = (name: string, { result, ms }: { result: autocannon.Result; ms: number }) =>
      `${result.requests.sent} ${name} in ${seconds(ms)} s (${Math.round((result.requests.sent * 1000) / ms)} req/s, ` +
      `p50 ${result.latency.p50} ms, p99 ${result.latency.p99} ms, max ${result.latency.max} ms; ` +
      `statuses ${JSON.stringify(statusCounts(result))}, errors ${result.errors}, timeouts ${result.timeouts})`;
    summary.push(
      `load: ${line('submits', phase1)}; ${line('status reads', phase2)}; both phases ${seconds(totalMs)} s; ` +
        `${accepted.length} accepted, ${new Set(accepted.map((a) => a.id)).size} distinct ids; ` +
        `heap ${Math.round(heapBefore / 2 ** 20)} -> ${Math.round(heapAfter / 2 ** 20)} MiB; gateway log lines ${stack.logs.length}`,
    );
    // eslint-disable-next-line no-console
    console.log(summary[0]);

    expect(totalMs, 'both phases within a minute').toBeLessThan(BUDGET_MS);
    expect(problems, `${problemCount} unexpected responses`).toEqual([]);

    // Phase 1: every submit answered once, all 200, no connection error or timeout.
    expect(phase1.result.errors, 'phase 1 connection errors / timeouts').toBe(0);
    expect(phase1.result['5xx'], 'phase 1 5xx').toBe(0);
    expect(phase1.result.non2xx, 'phase 1 non-2xx').toBe(0);
    expect(phase1.result['2xx'], 'phase 1 2xx').toBe(SUBMITS);
    expect(submitResponses.size, 'distinct submits answered').toBe(SUBMITS);
    expect([...submitResponses.values()].every((n) => n === 1), 'each submit answered exactly once').toBe(true);
    expect(accepted).toHaveLength(SUBMITS);
    expect(new Set(accepted.map((a) => a.id)).size, 'distinct request ids').toBe(SUBMITS);
    for (const tenant of TENANTS) expect(accepted.filter((a) => a.tenant === tenant), tenant).toHaveLength(SUBMITS / TENANTS.length);

    // Phase 2: all 200/202, no 5xx, no connection error.
    expect(phase2.result.errors, 'phase 2 connection errors / timeouts').toBe(0);
    expect(phase2.result['5xx'], 'phase 2 5xx').toBe(0);
    expect(phase2.result.non2xx, 'phase 2 non-2xx').toBe(0);
    expect(phase2.result['2xx'], 'phase 2 2xx').toBe(STATUS_READS);

    // Nothing went wrong inside the gateway either (LOG_LEVEL warn: only warnings and errors are written).
    const errorLines = stack.logs.filter((l) => ((parseBody(l)?.level as number | undefined) ?? 0) >= 50);
    expect(errorLines.slice(0, 5), 'gateway error log lines').toEqual([]);
  });

  it('shows every accepted job to its tenant, and to no other tenant', { timeout: 60_000 }, async () => {
    expect(accepted.length, 'phase 1 accepted jobs').toBeGreaterThan(0);
    const agent = new Agent({ connections: VERIFY_CONCURRENCY });
    const failures: string[] = [];
    const read = async (path: string, tenant: string) => {
      const res = await request(`${stack.url}${path}`, { dispatcher: agent, headers: stack.bearer(tenant) });
      return { status: res.statusCode, body: await res.body.text() };
    };
    try {
      // Its owner: 200 (COMPLETED) or 202 (still queued/running), about that very job.
      await forEachLimit(accepted, VERIFY_CONCURRENCY, async ({ id, tenant }) => {
        const { status, body } = await read(`/v1/requests/${id}/status`, tenant);
        if ((status !== 200 && status !== 202) || parseBody(body)?.request_id !== id) failures.push(`owner ${tenant} reads ${id}: ${status} ${body.slice(0, 200)}`);
      });
      const upstreamReadsBefore = upstreamStatusReads(stack).length;

      // Every other tenant in turn (each job tried by one of the four, on both route variants): 404, as for an unknown id.
      await forEachLimit(accepted, VERIFY_CONCURRENCY, async ({ id, tenant }, i) => {
        const owner = TENANTS.indexOf(tenant as (typeof TENANTS)[number]);
        const other = TENANTS[(owner + 1 + (i % (TENANTS.length - 1))) % TENANTS.length]!;
        const path = i % 2 === 0 ? `/v1/requests/${id}/status` : `/fal-ai/flux-lora/requests/${id}/status`;
        const { status, body } = await read(path, other);
        if (status !== 404) failures.push(`${other} reads ${tenant}'s ${id} via ${path}: ${status} ${body.slice(0, 200)}`);
      });
      // A refused read never reaches the upstream.
      expect(upstreamStatusReads(stack).length - upstreamReadsBefore, 'upstream status reads for other tenants').toBe(0);
    } finally {
      await agent.close();
    }
    expect(failures.slice(0, 10), `${failures.length} of ${accepted.length * 2} isolation reads failed`).toEqual([]);
  });

  it('sent each accepted submit upstream exactly once, and left no connection open', { timeout: 30_000 }, async () => {
    const submits = upstreamSubmits(stack);
    expect(upstreamSubmitsAfterPhase1, 'upstream POSTs during phase 1').toBe(accepted.length);
    expect(submits, 'no upstream POST after phase 1').toHaveLength(accepted.length);
    const seedsUpstream = submits.map((r) => (r.body as { seed?: unknown } | undefined)?.seed).sort((a, b) => Number(a) - Number(b));
    expect(seedsUpstream, 'each accepted seed reached upstream once').toEqual(accepted.map((a) => a.seed).sort((a, b) => a - b));

    // autocannon and the verification agent have closed their sockets: the gateway holds none.
    const until = Date.now() + 5_000;
    let open = await openConnections(stack);
    while (open > 0 && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 50));
      open = await openConnections(stack);
    }
    expect(open, 'gateway connections still open after the run').toBe(0);
  });
});
