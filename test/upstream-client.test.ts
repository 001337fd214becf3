import { Pool } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { UpstreamClient } from '../src/upstream/client.js';
import { UPSTREAM_TOKEN } from './helpers.js';
import { startFaultyUpstream, type FaultyUpstream } from './support/faulty-upstream.js';

/**
 * The upstream client on its own, against a real HTTP server: answers read whole within the
 * byte limit, the total deadline (also for a call still waiting for a free connection, which
 * must then never be sent), and the token kept out of what it returns.
 */
describe('upstream client', () => {
  let upstream: FaultyUpstream | undefined;
  let pool: Pool | undefined;
  afterEach(async () => {
    await pool?.destroy();
    await upstream?.close();
    pool = undefined;
    upstream = undefined;
  });

  const client = (origin: string, options: { connections?: number; requestTimeoutMs?: number; maxResponseBytes?: number } = {}) => {
    pool = new Pool(origin, { connections: options.connections ?? 4 });
    return new UpstreamClient({
      baseUrl: origin,
      token: UPSTREAM_TOKEN,
      authScheme: 'Key',
      dispatcher: pool,
      maxResponseBytes: options.maxResponseBytes ?? 64 * 1024,
      requestTimeoutMs: options.requestTimeoutMs ?? 5_000,
      readRetry: { retries: 0, deadlineMs: 1_000, baseDelayMs: 10, maxDelayMs: 10 },
    });
  };

  it('sends the body with the upstream credentials and reads a chunked answer whole', async () => {
    upstream = await startFaultyUpstream();
    upstream.setHandler((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'x-fal-request-id': 'abc' });
      res.write('{"status":"IN_QUEUE",');
      setTimeout(() => res.end('"request_id":"abc"}'), 20);
    });
    const answer = await client(upstream.url).submit('{"prompt":"x"}', { 'x-fal-queue-priority': 'low' });
    expect(answer.statusCode).toBe(200);
    expect(answer.contentType).toBe('application/json');
    expect(answer.headers['x-fal-request-id']).toBe('abc');
    expect(JSON.parse(answer.body.toString('utf8'))).toEqual({ status: 'IN_QUEUE', request_id: 'abc' });
    const sent = upstream.requests[0]!;
    expect(sent.method).toBe('POST');
    expect(sent.headers.authorization).toBe(`Key ${UPSTREAM_TOKEN}`);
    expect(sent.headers['content-type']).toBe('application/json');
    expect(sent.headers['x-fal-queue-priority']).toBe('low');
    expect(sent.body).toBe('{"prompt":"x"}');
  });

  it('refuses an answer over the byte limit, declared or not', async () => {
    upstream = await startFaultyUpstream();
    const big = 'x'.repeat(2_000);
    upstream.setHandler((req, res) => {
      if (req.url?.includes('declared')) res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(big.length) }).end(big);
      else res.writeHead(200, { 'content-type': 'application/json' }).end(big);
    });
    const small = client(upstream.url, { maxResponseBytes: 1_000 });
    await expect(small.status('declared', false)).rejects.toMatchObject({ code: 'FGW_UPSTREAM_RESPONSE_TOO_LARGE' });
    await expect(small.result('chunked')).rejects.toMatchObject({ code: 'FGW_UPSTREAM_RESPONSE_TOO_LARGE' });
  });

  it('gives up at the deadline, and never sends a call that was still waiting for a connection', async () => {
    upstream = await startFaultyUpstream();
    // The first call holds the only connection well past the deadline.
    upstream.setHandler((_req, res) => {
      setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"IN_QUEUE","request_id":"first"}'), 1_500);
    });
    const single = client(upstream.url, { connections: 1, requestTimeoutMs: 200 });
    const first = single.submit('{"prompt":"first"}', {});
    const second = single.submit('{"prompt":"second"}', {});
    // Both gave up at their deadline, not at the answer that comes at 1.5 s: the first, sent, as a
    // timeout (it may have been queued); the second, never written, as unavailable (it was not).
    await expect(first).rejects.toMatchObject({ code: 'FGW_UPSTREAM_TIMEOUT' });
    await expect(second).rejects.toMatchObject({ code: 'FGW_UPSTREAM_UNAVAILABLE' });
    // Past the moment the connection is free again: the second call was dropped, not sent late.
    await new Promise((resolve) => setTimeout(resolve, 1_700));
    expect(upstream.requests.map((r) => r.body)).toEqual(['{"prompt":"first"}']);
  });

  it('keeps its own token out of the answer it returns, body and headers', async () => {
    upstream = await startFaultyUpstream();
    upstream.setHandler((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'x-echo': `Key ${UPSTREAM_TOKEN}` }).end(JSON.stringify({ detail: `you sent ${UPSTREAM_TOKEN}` }));
    });
    const answer = await client(upstream.url).status('abc', false);
    expect(answer.body.toString('utf8')).not.toContain(UPSTREAM_TOKEN);
    expect(answer.body.toString('utf8')).toContain('[redacted]');
    expect(answer.headers['x-echo']).toBeUndefined();
  });
});
