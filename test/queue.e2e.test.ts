import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { manualClock } from '../src/simulator/index.js';
import { json, SEED_REQUEST, startStack, upstreamCalls, UPSTREAM_TOKEN, waitForCompletion, type Stack } from './helpers.js';

/**
 * The whole fal queue flow through the gateway over real HTTP, against the simulated upstream.
 * The simulator writes fal's own host into its queue URLs, so a gateway that followed an
 * upstream URL instead of building its own would fail here.
 */
describe('queue flow end to end', () => {
  let stack: Stack;
  // Jobs move only when a test advances this clock, so no assertion depends on machine speed.
  const clock = manualClock(Date.now());
  const finishJobs = () => clock.advance(10_000);

  beforeAll(async () => {
    // The upstream's clock is driven by hand, so each poll must reach it: no status reuse here.
    stack = await startStack({ sim: { urlBase: 'https://queue.fal.run', now: clock.now }, env: { STATUS_CACHE_MS: '0' } });
  });
  afterAll(() => stack.close());

  async function submit(headers: Record<string, string> = stack.bearer('team-a'), path = '/v1/image-to-image') {
    const res = await fetch(`${stack.url}${path}`, { method: 'POST', headers: { ...json, ...headers }, body: JSON.stringify(SEED_REQUEST) });
    return { res, body: (await res.json()) as Record<string, unknown> };
  }

  it('submits the seed request with the gateway token injected and the caller key not forwarded', async () => {
    const before = upstreamCalls(stack).length;
    const { res, body } = await submit({
      ...stack.bearer('team-a'),
      cookie: 'session=abc',
      'x-api-key': 'not-for-upstream',
      'x-fal-queue-priority': 'low',
      'x-forwarded-for': '10.0.0.1',
    });
    expect(res.status).toBe(200);
    expect(body.status).toBe('IN_QUEUE');
    expect(body.request_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(typeof body.queue_position).toBe('number');

    const calls = upstreamCalls(stack).slice(before);
    expect(calls).toHaveLength(1);
    const sent = calls[0]!;
    expect(sent.method).toBe('POST');
    expect(sent.path).toBe('/fal-ai/flux-lora/image-to-image');
    expect(sent.headers.authorization).toBe(`Key ${UPSTREAM_TOKEN}`);
    expect(sent.headers['x-fal-queue-priority']).toBe('low');
    for (const leaked of ['cookie', 'x-api-key', 'x-forwarded-for']) expect(sent.headers[leaked]).toBeUndefined();
    expect(JSON.stringify(sent.headers)).not.toContain(stack.keys['team-a']);
    expect(sent.body).toEqual(SEED_REQUEST);
  });

  it('rewrites the queue URLs to the gateway, and they work when followed', async () => {
    const { body } = await submit();
    const id = body.request_id as string;
    expect(body.status_url).toBe(`${stack.url}/v1/requests/${id}/status`);
    expect(body.response_url).toBe(`${stack.url}/v1/requests/${id}`);
    expect(body.cancel_url).toBe(`${stack.url}/v1/requests/${id}/cancel`);
    expect(JSON.stringify(body)).not.toContain('queue.fal.run');

    const first = await fetch(body.status_url as string, { headers: stack.bearer('team-a') });
    expect(first.status).toBe(202);
    const firstBody = (await first.json()) as Record<string, unknown>;
    expect(firstBody.status).toBe('IN_QUEUE');
    expect(firstBody.status_url).toBe(body.status_url);
    clock.advance(60);
    const running = await fetch(body.status_url as string, { headers: stack.bearer('team-a') });
    expect(running.status).toBe(202);
    expect(((await running.json()) as { status: string }).status).toBe('IN_PROGRESS');

    finishJobs();
    const { res, body: done } = await waitForCompletion(body.status_url as string, stack.bearer('team-a'));
    expect(res.status).toBe(200);
    expect(done).toMatchObject({ status: 'COMPLETED', request_id: id, response_url: body.response_url });
    expect((done as { metrics: { inference_time: number } }).metrics.inference_time).toBeGreaterThan(0);

    const result = await fetch(body.response_url as string, { headers: stack.bearer('team-a') });
    expect(result.status).toBe(200);
    const output = (await result.json()) as { images: Array<{ url: string; content_type: string }>; prompt: string };
    expect(output.prompt).toBe(SEED_REQUEST.prompt);
    expect(output.images).toHaveLength(1);
    // Image URLs pass untouched: they point at the upstream's file host, and the file is real.
    expect(output.images[0]!.url.startsWith(stack.sim.url)).toBe(true);
    const image = await fetch(output.images[0]!.url);
    expect(image.headers.get('content-type')).toBe('image/jpeg');
    expect([...new Uint8Array(await image.arrayBuffer()).slice(0, 3)]).toEqual([0xff, 0xd8, 0xff]);
  });

  it('passes runner logs with ?logs=1 and answers 400 for a result that is not ready', async () => {
    const { body } = await submit();
    const early = await fetch(body.response_url as string, { headers: stack.bearer('team-a') });
    expect(early.status).toBe(400);
    expect(await early.json()).toEqual({ detail: 'Request is still in progress' });

    finishJobs();
    const { body: done } = await waitForCompletion(`${body.status_url}?logs=1`, stack.bearer('team-a'));
    expect(Array.isArray((done as { logs: unknown[] }).logs)).toBe(true);
    expect((done as { logs: unknown[] }).logs.length).toBeGreaterThan(0);
    const calls = upstreamCalls(stack).filter((c) => c.path.includes(`${body.request_id}/status`));
    expect(calls.at(-1)!.path).toMatch(/\?logs=1$/);
  });

  it('takes the logs flag as clients write it: 1, true, True (Python), bare ?logs; 0 and false leave them out', async () => {
    const { body } = await submit();
    finishJobs();
    await waitForCompletion(body.status_url as string, stack.bearer('team-a'));
    const logsOf = async (query: string) => {
      const res = await fetch(`${body.status_url}${query}`, { headers: stack.bearer('team-a') });
      expect(res.status, query).toBe(200);
      return ((await res.json()) as { logs: unknown }).logs;
    };
    for (const query of ['?logs=1', '?logs=true', '?logs=True', '?logs=TRUE', '?logs']) expect(Array.isArray(await logsOf(query)), query).toBe(true);
    for (const query of ['?logs=0', '?logs=false', '?logs=False', '']) expect(await logsOf(query), query).toBeNull();
    const bad = await fetch(`${body.status_url}?logs=yes`, { headers: stack.bearer('team-a') });
    expect(bad.status).toBe(422);
    expect(((await bad.json()) as { detail: Array<{ msg: string }> }).detail[0]!.msg).toBe('logs must be 1, 0, true or false');
    const twice = await fetch(`${body.status_url}?logs=1&logs=0`, { headers: stack.bearer('team-a') });
    expect(twice.status).toBe(422);
    expect(((await twice.json()) as { detail: unknown }).detail).toEqual([{ loc: ['query', 'logs'], msg: 'logs was given 2 times; give it once', type: 'string_type' }]);
  });

  it('cancels a queued job: 202, then COMPLETED and a cancelled result', async () => {
    const { body } = await submit();
    const cancel = await fetch(body.cancel_url as string, { method: 'PUT', headers: stack.bearer('team-a') });
    expect(cancel.status).toBe(202);
    expect(await cancel.json()).toEqual({ status: 'CANCELLATION_REQUESTED' });
    const status = await fetch(body.status_url as string, { headers: stack.bearer('team-a') });
    expect(status.status).toBe(200);
    expect(((await status.json()) as { status: string }).status).toBe('COMPLETED');
    const result = await fetch(body.response_url as string, { headers: stack.bearer('team-a') });
    expect(result.status).toBe(400);
    expect(await result.json()).toEqual({ detail: 'Request was cancelled' });
    const again = await fetch(body.cancel_url as string, { method: 'PUT', headers: stack.bearer('team-a') });
    expect(again.status).toBe(400);
    expect(await again.json()).toEqual({ status: 'ALREADY_COMPLETED' });
  });

  it('serves the whole flow on fal-compatible paths with fal-style "Key" auth', async () => {
    const key = { authorization: `Key ${stack.keys['team-b']}` };
    const { res, body } = await submit(key, '/fal-ai/flux-lora/image-to-image');
    expect(res.status).toBe(200);
    const id = body.request_id as string;
    const status = await fetch(`${stack.url}/fal-ai/flux-lora/requests/${id}/status`, { headers: key });
    expect(status.status).toBe(202);
    finishJobs();
    await waitForCompletion(`${stack.url}/fal-ai/flux-lora/requests/${id}/status`, key);
    const result = await fetch(`${stack.url}/fal-ai/flux-lora/requests/${id}`, { headers: key });
    expect(result.status).toBe(200);
    const cancel = await fetch(`${stack.url}/fal-ai/flux-lora/requests/${id}/cancel`, { method: 'PUT', headers: key });
    expect(cancel.status).toBe(400);
  });

  it('accepts the key as x-api-key too', async () => {
    const { res } = await submit({ 'x-api-key': stack.keys['team-a']! });
    expect(res.status).toBe(200);
  });

  it("returns its own x-request-id on every response, logging a caller's id beside it", async () => {
    const traced = await fetch(`${stack.url}/openapi.json`, { headers: { 'x-request-id': 'trace-123' } });
    const id = traced.headers.get('x-request-id');
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    const line = stack.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.reqId === id && l.msg === 'request');
    expect(line?.clientRequestId).toBe('trace-123');
    // The caller's address (the connection's here: no proxy is trusted), so floods of refused
    // calls can be traced to where they come from.
    expect(line?.ip).toBe('127.0.0.1');
    const forged = await fetch(`${stack.url}/openapi.json`, { headers: { 'x-forwarded-for': '203.0.113.9' } });
    const forgedLine = stack.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.reqId === forged.headers.get('x-request-id') && l.msg === 'request');
    expect(forgedLine?.ip).toBe('127.0.0.1');
    const unauthenticated = await fetch(`${stack.url}/v1/requests/nope/status`, { headers: { 'x-request-id': 'someone-elses-id' } });
    expect(unauthenticated.status).toBe(401);
    expect(unauthenticated.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    expect(unauthenticated.headers.get('x-content-type-options')).toBe('nosniff');
  });

  it('logs exactly one line per request, an error answer saying which error it was', async () => {
    const lineOf = async (res: Response) => {
      const id = res.headers.get('x-request-id');
      await expect.poll(() => stack.logs.some((l) => l.includes(`"reqId":"${id}"`) && l.includes('"msg":"request"'))).toBe(true);
      const mine = stack.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.reqId === id);
      expect(mine, 'one line for the request').toHaveLength(1);
      return mine[0]!;
    };
    const noKey = await fetch(`${stack.url}/v1/requests/nope/status`);
    expect(await lineOf(noKey)).toMatchObject({ statusCode: 401, errorType: 'unauthorized', error: expect.stringMatching(/^A valid API key is required/) });
    const badScheme = await fetch(`${stack.url}/v1/requests/nope/status`, { headers: { authorization: 'Basic abc' } });
    expect(await lineOf(badScheme)).toMatchObject({ statusCode: 401, errorType: 'unauthorized', error: expect.stringMatching(/^The Authorization header must read/) });
    const invalid = await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-a') }, body: JSON.stringify({ ...SEED_REQUEST, strength: 9.87654 }) });
    expect(invalid.status).toBe(422);
    const invalidLine = await lineOf(invalid);
    expect(invalidLine).toMatchObject({ statusCode: 422, errorType: 'validation_error', problems: 1, error: 'body.strength: less_than_equal' });
    // The values sent stay out of the log, and a caller's own (unknown) field names are cut short.
    expect(JSON.stringify(invalidLine)).not.toContain('9.87654');
    const longName = `x${'y'.repeat(10_000)}`;
    const unknownField = await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-a') }, body: JSON.stringify({ ...SEED_REQUEST, [longName]: 1 }) });
    expect(unknownField.status).toBe(422);
    expect(await lineOf(unknownField)).toMatchObject({ problems: 1, error: `body.${longName.slice(0, 64)}: extra_forbidden` });
    const unknown = await fetch(`${stack.url}/v1/requests/00000000-0000-4000-8000-000000000000/cancel`, { method: 'PUT', headers: stack.bearer('team-a') });
    expect(await lineOf(unknown)).toMatchObject({ statusCode: 404, errorType: 'request_not_found', error: 'Request not found' });
    const ok = await fetch(`${stack.url}/openapi.json`);
    const okLine = await lineOf(ok);
    expect(okLine.errorType).toBeUndefined();
    expect(okLine.error).toBeUndefined();
  });

  it('logs health probes and metrics scrapes that succeed at debug, not info', async () => {
    const probes = await Promise.all(['/healthz', '/readyz', '/metrics'].map((path) => fetch(`${stack.url}${path}`)));
    const ids = probes.map((res) => res.headers.get('x-request-id'));
    expect(probes.map((res) => res.status)).toEqual([200, 200, 200]);
    // A request after them has its line: theirs would be written by now.
    const after = await fetch(`${stack.url}/openapi.json`);
    await expect.poll(() => stack.logs.some((l) => l.includes(`"reqId":"${after.headers.get('x-request-id')}"`))).toBe(true);
    for (const id of ids) expect(stack.logs.filter((l) => l.includes(`"reqId":"${id}"`))).toEqual([]);
    // At debug they are there.
    const replica = await stack.addReplica({ LOG_LEVEL: 'debug' });
    const probe = await fetch(`${replica.url}/healthz`);
    await expect.poll(() => replica.logs.some((l) => l.includes(`"reqId":"${probe.headers.get('x-request-id')}"`))).toBe(true);
    const line = replica.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.reqId === probe.headers.get('x-request-id'));
    expect(line).toMatchObject({ level: 20, msg: 'request', url: '/healthz', statusCode: 200 });
  });

  it("answers a call of fal's paths with queue URLs of fal's shape on the gateway, and a call of /v1 with the gateway's", async () => {
    const submitted = await fetch(`${stack.url}/fal-ai/flux-lora/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-a') }, body: JSON.stringify(SEED_REQUEST) });
    const body = (await submitted.json()) as Record<string, string>;
    const id = body.request_id!;
    const fal = `${stack.url}/fal-ai/flux-lora/requests/${id}`;
    expect(body).toMatchObject({ status_url: `${fal}/status`, response_url: fal, cancel_url: `${fal}/cancel` });
    // Each of them serves the job, as fal's own would.
    const status = await fetch(body.status_url!, { headers: stack.bearer('team-a') });
    expect([200, 202]).toContain(status.status);
    expect(((await status.json()) as Record<string, string>).status_url).toBe(`${fal}/status`);
    // The same job read through /v1 points at /v1.
    const native = (await (await fetch(`${stack.url}/v1/requests/${id}/status`, { headers: stack.bearer('team-a') })).json()) as Record<string, string>;
    expect(native.status_url).toBe(`${stack.url}/v1/requests/${id}/status`);
  });

  it('refuses a status read whose Host names no host (400) before asking upstream', async () => {
    const { body } = await submit();
    const id = body.request_id as string;
    const reads = () => upstreamCalls(stack).filter((c) => c.method === 'GET' && c.path.includes(id)).length;
    await stack.app.whenIdle();
    const before = reads();
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = httpRequest(`${stack.url}/v1/requests/${id}/status`, { headers: { host: 'a b', ...stack.bearer('team-a') } }, (res) => {
        let text = '';
        res.on('data', (chunk: Buffer) => (text += chunk.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      });
      req.once('error', reject);
      req.end();
    });
    expect(answer.status).toBe(400);
    expect(JSON.parse(answer.body)).toEqual({ detail: 'The Host header does not name a host; the operator can set PUBLIC_BASE_URL', error_type: 'bad_request' });
    expect(reads()).toBe(before);
  });

  it('answers a malformed URL in the error envelope with a request id', async () => {
    const res = await fetch(`${stack.url}/v1/requests/%zz/status`, { headers: stack.bearer('team-a') });
    expect(res.status).toBe(400);
    expect(res.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    expect(((await res.json()) as { error_type: string }).error_type).toBe('bad_request');
  });

  it('routes request ids as long as a submit may record (128 characters), and answers longer ones with the schema\'s 422', async () => {
    const longest = `a${'0123456789abcdef'.repeat(8)}`.slice(0, 128);
    for (const path of [`/v1/requests/${longest}/status`, `/v1/requests/${longest}`, `/fal-ai/flux-lora/requests/${longest}/status`]) {
      const res = await fetch(`${stack.url}${path}`, { headers: stack.bearer('team-a') });
      // Never recorded: the ownership check answers, as for any unknown job (before: Fastify's 400 "max param length").
      expect({ path, status: res.status }).toEqual({ path, status: 404 });
    }
    const tooLong = await fetch(`${stack.url}/v1/requests/${longest}x/status`, { headers: stack.bearer('team-a') });
    expect(tooLong.status).toBe(422);
    expect(((await tooLong.json()) as { detail: Array<{ loc: string[] }> }).detail[0]!.loc).toEqual(['path', 'request_id']);
  });

  it('cancels with a JSON content type and an empty body, as fal clients send it', async () => {
    const { body } = await submit();
    const res = await fetch(body.cancel_url as string, { method: 'PUT', headers: { ...stack.bearer('team-a'), 'content-type': 'application/json' } });
    expect(res.status).toBe(202);
  });

  it('answers health and readiness', async () => {
    expect(await (await fetch(`${stack.url}/healthz`)).json()).toEqual({ status: 'ok' });
    const ready = await fetch(`${stack.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: 'ready', checks: { store: 'ok', server: 'ok' } });
  });

  it('never shows the upstream token or a tenant key in a response or a log line', async () => {
    const { res: submitted, body } = await submit();
    finishJobs();
    const { res: done } = await waitForCompletion(body.status_url as string, stack.bearer('team-a'));
    const result = await fetch(body.response_url as string, { headers: stack.bearer('team-a') });
    for (const res of [submitted, done, result]) {
      const headers = JSON.stringify([...res.headers]);
      expect(headers).not.toContain(UPSTREAM_TOKEN);
      for (const key of Object.values(stack.keys)) expect(headers).not.toContain(key);
    }
    const bodies = JSON.stringify(body) + (await result.text());
    expect(bodies).not.toContain(UPSTREAM_TOKEN);
    for (const key of Object.values(stack.keys)) expect(bodies).not.toContain(key);
    const texts = stack.logs.join('\n');
    expect(stack.logs.length).toBeGreaterThan(5);
    expect(texts).not.toContain(UPSTREAM_TOKEN);
    for (const key of Object.values(stack.keys)) expect(texts).not.toContain(key);
    // One line per request, naming the tenant.
    const lines = stack.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'request');
    expect(lines.some((l) => l.tenant === 'team-a' && l.statusCode === 200)).toBe(true);
  });
});

describe('public URLs', () => {
  it('uses PUBLIC_BASE_URL for rewritten URLs when set', async () => {
    const stack = await startStack({ env: { PUBLIC_BASE_URL: 'https://images.example.com/' } });
    try {
      const res = await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-a') }, body: JSON.stringify(SEED_REQUEST) });
      const body = (await res.json()) as Record<string, string>;
      expect(body.status_url).toBe(`https://images.example.com/v1/requests/${body.request_id}/status`);
    } finally {
      await stack.close();
    }
  });

  it('honours X-Forwarded-Proto/Host only with TRUST_PROXY', async () => {
    const forwarded = { 'x-forwarded-proto': 'https', 'x-forwarded-host': 'gw.example.com' };
    for (const [env, expected] of [
      [{}, 'http://127.0.0.1'],
      [{ TRUST_PROXY: 'true' }, 'https://gw.example.com'],
    ] as const) {
      const stack = await startStack({ env });
      try {
        const res = await fetch(`${stack.url}/v1/image-to-image`, {
          method: 'POST',
          headers: { ...json, ...stack.bearer('team-a'), ...forwarded },
          body: JSON.stringify(SEED_REQUEST),
        });
        expect(((await res.json()) as { status_url: string }).status_url.startsWith(expected)).toBe(true);
      } finally {
        await stack.close();
      }
    }
  });

  it('refuses a forwarded scheme that is not http or https, before anything is queued', async () => {
    const stack = await startStack({ env: { TRUST_PROXY: 'true' } });
    try {
      for (const proto of ['https://evil.example/x?', 'javascript:alert(1)//', 'ftp']) {
        const res = await fetch(`${stack.url}/v1/image-to-image`, {
          method: 'POST',
          headers: { ...json, ...stack.bearer('team-a'), 'x-forwarded-proto': proto },
          body: JSON.stringify(SEED_REQUEST),
        });
        expect(res.status, proto).toBe(400);
        expect(await res.json()).toEqual({ detail: 'X-Forwarded-Proto must be http or https; the operator can set PUBLIC_BASE_URL', error_type: 'bad_request' });
      }
      expect(upstreamCalls(stack).filter((c) => c.method === 'POST')).toEqual([]);
      // A scheme in capitals is the same scheme.
      const upper = await fetch(`${stack.url}/v1/image-to-image`, {
        method: 'POST',
        headers: { ...json, ...stack.bearer('team-a'), 'x-forwarded-proto': 'HTTPS' },
        body: JSON.stringify(SEED_REQUEST),
      });
      expect(upper.status).toBe(200);
      expect(((await upper.json()) as { status_url: string }).status_url).toMatch(/^https:\/\//);
    } finally {
      await stack.close();
    }
  });
});
