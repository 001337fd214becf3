import { createFalClient } from '@fal-ai/client';
import fc from 'fast-check';
import { request as httpRequest } from 'node:http';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryJobStore } from '../src/jobs/memory-job-store.js';
import { MODEL_ID } from '../src/model.js';
import { manualClock } from '../src/simulator/index.js';
import { SseRewriter } from '../src/upstream/sse-rewriter.js';
import { buildApp, type GatewayApp } from '../src/app.js';
import { newKey } from '../src/cli/key.js';
import { parseConfig } from '../src/config.js';
import { digestKey } from '../src/tenants/registry.js';
import { json, SEED_REQUEST, startStack, UPSTREAM_TOKEN, type Stack } from './helpers.js';
import { startFaultyUpstream, type FaultyHandler, type FaultyUpstream } from './support/faulty-upstream.js';

function parseEvents(text: string): Array<Record<string, unknown>> {
  return text
    .split(/\n\n/)
    .flatMap((event) => event.split('\n').filter((l) => l.startsWith('data: ')))
    .map((l) => JSON.parse(l.slice(6)) as Record<string, unknown>);
}

describe('status stream (SSE)', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ sim: { queueMs: 150, runMs: 250, urlBase: 'https://queue.fal.run', streamPollMs: 20 } });
  });
  afterAll(() => stack.close());

  const submit = async (tenant = 'team-a') =>
    (await (await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer(tenant) }, body: JSON.stringify(SEED_REQUEST) })).json()) as {
      request_id: string;
    };

  it('relays status events until COMPLETED, with the queue URLs pointing at the gateway', async () => {
    const { request_id: id } = await submit();
    for (const path of [`/v1/requests/${id}/status/stream?logs=1`, `/fal-ai/flux-lora/requests/${id}/status/stream?logs=1`]) {
      const res = await fetch(`${stack.url}${path}`, { headers: stack.bearer('team-a'), signal: AbortSignal.timeout(10_000) });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
      expect(res.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
      const events = parseEvents(await res.text());
      expect(events.length).toBeGreaterThanOrEqual(1);
      expect(events.at(-1)!.status).toBe('COMPLETED');
      for (const event of events) {
        expect(event.request_id).toBe(id);
        // In the shape of the path called: fal's for fal's path, the gateway's for /v1.
        const shape = path.startsWith('/v1') ? '/v1/requests' : '/fal-ai/flux-lora/requests';
        expect(event.status_url).toBe(`${stack.url}${shape}/${id}/status`);
        expect(JSON.stringify(event)).not.toContain('queue.fal.run');
      }
      // A stream that ran to its end has exactly one request line, not marked aborted.
      const lines = () => stack.logs.map((line) => JSON.parse(line) as Record<string, unknown>).filter((line) => line.msg === 'request' && line.url === path);
      await expect.poll(() => lines().length).toBe(1);
      await new Promise((r) => setTimeout(r, 50));
      expect(lines()).toHaveLength(1);
      expect(lines()[0]).toMatchObject({ statusCode: 200, tenant: 'team-a' });
      expect(lines()[0]).not.toHaveProperty('aborted');
    }
  });

  it('shows each state as it changes, logs included', async () => {
    const { request_id: id } = await submit();
    const res = await fetch(`${stack.url}/v1/requests/${id}/status/stream?logs=1`, { headers: stack.bearer('team-a') });
    const events = parseEvents(await res.text());
    const states = events.map((e) => e.status);
    expect(states[0]).toBe('IN_QUEUE');
    expect(states).toContain('IN_PROGRESS');
    expect(states.at(-1)).toBe('COMPLETED');
    expect(events.some((e) => Array.isArray(e.logs) && (e.logs as unknown[]).length > 0)).toBe(true);
  });

  it("is 401 without a key and 404 for another tenant's job", async () => {
    const { request_id: id } = await submit();
    expect((await fetch(`${stack.url}/v1/requests/${id}/status/stream`)).status).toBe(401);
    const foreign = await fetch(`${stack.url}/v1/requests/${id}/status/stream`, { headers: stack.bearer('team-b') });
    expect(foreign.status).toBe(404);
    expect(foreign.headers.get('content-type')).toMatch(/json/);
  });

  it('serves @fal-ai/client streaming: subscribe in streaming mode and queue.streamStatus', async () => {
    const fal = createFalClient({ proxyUrl: { url: `${stack.url}/api/fal/proxy`, when: 'always' }, credentials: stack.keys['team-a'] });
    const updates: string[] = [];
    const result = await fal.subscribe(MODEL_ID, { input: SEED_REQUEST, mode: 'streaming', onQueueUpdate: (u) => updates.push(u.status) });
    expect((result.data as { images: unknown[] }).images).toHaveLength(1);
    expect(updates).toContain('COMPLETED');

    const queued = await fal.queue.submit(MODEL_ID, { input: SEED_REQUEST });
    const stream = await fal.queue.streamStatus(MODEL_ID, { requestId: queued.request_id, logs: true });
    const seen: string[] = [];
    stream.on('data', (status) => seen.push((status as { status: string }).status));
    const done = (await stream.done()) as { status: string };
    expect(done.status).toBe('COMPLETED');
    expect(seen.at(-1)).toBe('COMPLETED');
  });

  it('closes the upstream stream when the client goes away', async () => {
    // A job that stays queued, so only the client leaving can end the stream.
    const slow = await startStack({ sim: { queueMs: 600_000, streamPollMs: 20 } });
    try {
      const simConnections = () => new Promise<number>((r) => slow.sim.app.server.getConnections((_e, n) => r(n)));
      const job = (await (await fetch(`${slow.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...slow.bearer('team-a') }, body: JSON.stringify(SEED_REQUEST) })).json()) as { request_id: string };
      const idle = await simConnections();
      const controller = new AbortController();
      const res = await fetch(`${slow.url}/v1/requests/${job.request_id}/status/stream`, { headers: slow.bearer('team-a'), signal: controller.signal });
      const reader = res.body!.getReader();
      await reader.read();
      expect(await simConnections()).toBe(idle + 1);
      controller.abort();
      await expect(reader.read()).rejects.toThrow();
      const deadline = Date.now() + 3_000;
      while ((await simConnections()) > idle && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
      expect(await simConnections()).toBe(idle);
      expect((await fetch(`${slow.url}/healthz`)).status).toBe(200);
      // The stream that ended with its client still has its request line (and is counted).
      const streamLine = () => slow.logs.map((line) => JSON.parse(line) as Record<string, unknown>).find((line) => line.msg === 'request' && String(line.url).includes('/status/stream'));
      while (!streamLine() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
      expect(streamLine()).toMatchObject({ method: 'GET', statusCode: 200, aborted: true, tenant: 'team-a' });
      expect(await (await fetch(`${slow.url}/metrics`)).text()).toMatch(/fal_gateway_http_requests_total\{route="\/v1\/requests\/:request_id\/status\/stream",method="GET",status="200",tenant="team-a"\} 1/);
    } finally {
      await slow.close();
    }
  });
});

describe('status streams per tenant (STREAMS_PER_TENANT)', () => {
  const clock = manualClock(Date.now());
  let capped: Stack;
  // Its own connections, destroyed at the end: a stream left open would hold the gateway's close.
  let agent: Agent;
  beforeAll(async () => {
    // Jobs move only when the test moves the clock: each stream stays open as long as it must.
    capped = await startStack({ env: { STREAMS_PER_TENANT: '2' }, sim: { queueMs: 1_000, runMs: 1_000, now: clock.now, streamPollMs: 20 } });
    agent = new Agent({ connections: 32 });
  });
  afterAll(async () => {
    await agent.destroy();
    await capped.close();
  });

  const submit = async (tenant: string) =>
    ((await (await fetch(`${capped.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...capped.bearer(tenant) }, body: JSON.stringify(SEED_REQUEST) })).json()) as { request_id: string }).request_id;
  /** Opens a stream and reads its first event. */
  const open = async (tenant: string, id: string, query = '') => {
    const res = await request(`${capped.url}/v1/requests/${id}/status/stream${query}`, { headers: capped.bearer(tenant), dispatcher: agent });
    expect(res.statusCode).toBe(200);
    const chunks = (res.body as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    let text = '';
    while (!text.includes('\n\n')) text += String((await chunks.next()).value);
    /** Every event until the stream ends (the first included). */
    const rest = async () => {
      for (let next = await chunks.next(); !next.done; next = await chunks.next()) text += String(next.value);
      return parseEvents(text);
    };
    return { first: parseEvents(text)[0]!, rest, close: () => res.body.destroy() };
  };
  const upstreamStreams = (id: string) => capped.sim.requests.filter((r) => r.path.startsWith(`/fal-ai/flux-lora/requests/${id}/status/stream`)).length;

  it("serves a tenant's streams past its share by polling: the same events, no upstream stream, never a refusal", async () => {
    const [a1, a2, a3, b1] = [await submit('team-a'), await submit('team-a'), await submit('team-a'), await submit('team-b')];
    const held = [await open('team-a', a1), await open('team-a', a2)];
    for (const stream of held) expect(stream.first.status).toBe('IN_QUEUE');
    // The third: made from polled status reads.
    const polled = await open('team-a', a3, '?logs=1');
    expect(polled.first).toMatchObject({ status: 'IN_QUEUE', request_id: a3, status_url: `${capped.url}/v1/requests/${a3}/status` });
    // Another tenant's share is its own.
    const other = await open('team-b', b1);
    expect(upstreamStreams(a1) + upstreamStreams(a2) + upstreamStreams(b1)).toBe(3);

    clock.advance(1_500); // running
    await expect.poll(() => capped.sim.requests.filter((r) => r.path.startsWith(`/fal-ai/flux-lora/requests/${a3}/status?`)).length, { timeout: 3_000 }).toBeGreaterThan(1);
    clock.advance(1_000); // done
    const events = await polled.rest();
    expect(events.map((e) => e.status)).toEqual(['IN_QUEUE', ...events.slice(1, -1).map(() => 'IN_PROGRESS'), 'COMPLETED']);
    expect(events.length).toBeGreaterThanOrEqual(3);
    expect(upstreamStreams(a3)).toBe(0);
    for (const event of events) {
      expect(event.request_id).toBe(a3);
      expect(event.response_url).toBe(`${capped.url}/v1/requests/${a3}`);
    }
    // As on fal's stream, an event's logs are the lines since the previous one: together, every line once.
    const streamed = events.flatMap((e) => (Array.isArray(e.logs) ? (e.logs as Array<{ message: string }>) : [])).map((l) => l.message);
    const polledStatus = (await (await fetch(`${capped.url}/v1/requests/${a3}/status?logs=1`, { headers: capped.bearer('team-a') })).json()) as { logs: Array<{ message: string }> };
    expect(streamed.length).toBeGreaterThan(0);
    expect(streamed).toEqual(polledStatus.logs.map((l) => l.message));
    // Its request line, as any stream's.
    await expect.poll(() => capped.logs.some((l) => l.includes(`"url":"/v1/requests/${a3}/status/stream?logs=1"`) && l.includes('"statusCode":200'))).toBe(true);
    for (const stream of [...held, other]) expect((await stream.rest()).at(-1)!.status).toBe('COMPLETED');
  });

  it('gives the share back when a stream ends: the next stream is an upstream one again', async () => {
    const [a1, a2, a3] = [await submit('team-a'), await submit('team-a'), await submit('team-a')];
    const first = await open('team-a', a1);
    const second = await open('team-a', a2);
    first.close();
    await expect.poll(async () => {
      const again = await open('team-a', a3);
      again.close();
      return upstreamStreams(a3);
    }, { timeout: 3_000 }).toBeGreaterThan(0);
    second.close();
  });

  it("serves @fal-ai/client's streaming subscribe past the share", { timeout: 20_000 }, async () => {
    const [a1, a2] = [await submit('team-a'), await submit('team-a')];
    const held = [await open('team-a', a1), await open('team-a', a2)];
    const fal = createFalClient({ proxyUrl: { url: `${capped.url}/api/fal/proxy`, when: 'always' }, credentials: capped.keys['team-a'] });
    const updates: string[] = [];
    let enqueued: string | undefined;
    const done = fal.subscribe(MODEL_ID, { input: SEED_REQUEST, mode: 'streaming', onEnqueue: (id) => (enqueued = id), onQueueUpdate: (u) => updates.push(u.status) });
    await expect.poll(() => updates.length, { timeout: 5_000 }).toBeGreaterThan(0);
    clock.advance(3_000);
    const result = await done;
    expect((result.data as { images: unknown[] }).images).toHaveLength(1);
    expect(updates).toContain('COMPLETED');
    expect(upstreamStreams(enqueued!)).toBe(0);
    for (const stream of held) stream.close();
  });
});

describe('status stream: a bad Host, and a client gone before the stream opens', () => {
  /** A real memory store whose ownership answer takes a while, as a slow Redis would. */
  class SlowStore extends MemoryJobStore {
    delayMs = 0;
    override async ownerOf(requestId: string): Promise<string | undefined> {
      await new Promise((r) => setTimeout(r, this.delayMs));
      return super.ownerOf(requestId);
    }
  }
  const store = new SlowStore({ ttlMs: 60_000, maxEntries: 1_000 });
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ sim: { queueMs: 600_000, streamPollMs: 20 }, app: { jobs: store } });
  });
  afterAll(() => stack.close());

  const submitted = async () =>
    ((await (await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-a') }, body: JSON.stringify(SEED_REQUEST) })).json()) as { request_id: string })
      .request_id;
  const simConnections = () => new Promise<number>((r) => stack.sim.app.server.getConnections((_e, n) => r(n)));

  it('answers 400 to a Host that names no host, before opening anything upstream', async () => {
    const id = await submitted();
    const idle = await simConnections();
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = httpRequest(`${stack.url}/v1/requests/${id}/status/stream`, { headers: { host: 'a"b<c', ...stack.bearer('team-a') } }, (res) => {
        let body = '';
        res.on('data', (chunk: Buffer) => (body += chunk.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.once('error', reject);
      req.end();
    });
    expect(answer.status).toBe(400);
    expect(JSON.parse(answer.body)).toMatchObject({ error_type: 'bad_request' });
    expect(await simConnections()).toBe(idle);
  });

  it('opens no upstream stream for a client that left while its ownership was checked, and logs it (499, aborted)', async () => {
    const id = await submitted();
    const idle = await simConnections();
    store.delayMs = 300;
    try {
      const gone = fetch(`${stack.url}/v1/requests/${id}/status/stream`, { headers: { ...stack.bearer('team-a'), 'x-request-id': 'left-early' }, signal: AbortSignal.timeout(50) });
      await expect(gone).rejects.toThrow();
      const line = () => stack.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'request' && l.clientRequestId === 'left-early');
      await expect.poll(line, { timeout: 3_000 }).toMatchObject({ statusCode: 499, aborted: true });
      await new Promise((r) => setTimeout(r, 200));
      expect(await simConnections()).toBe(idle);
    } finally {
      store.delayMs = 0;
    }
  });
});

describe('SSE rewriter', () => {
  const upper = new SseRewriter((data) => data.toUpperCase());
  const bytes = (s: string) => new TextEncoder().encode(s);

  it('rewrites data of complete events, whatever the chunk boundaries, and passes comments', () => {
    const text = ': keep-alive\n\ndata: {"a":1}\n\nevent: x\r\ndata: b\r\n\r\n';
    let out = '';
    for (const char of text) out += upper.push(bytes(char));
    out += upper.flush();
    expect(out).toBe(': keep-alive\n\ndata: {"A":1}\n\nevent: x\ndata: B\n\n');
  });

  it('ends lines at CRLF, LF or a lone CR, as the format does, whatever the chunk boundaries', () => {
    const text = 'data: a\rdata: b\r\rdata: c\r\n\r\ndata: d\n\r\n';
    for (const chunking of [1, 2, 3, text.length]) {
      const r = new SseRewriter((data) => data.toUpperCase());
      let out = '';
      for (let i = 0; i < text.length; i += chunking) out += r.push(bytes(text.slice(i, i + chunking)));
      out += r.flush();
      expect(out, `chunks of ${chunking}`).toBe('data: A\ndata: B\n\ndata: C\n\ndata: D\n\n');
    }
  });

  it('passes an event ended by a lone CR at once, and takes an LF first in the next chunk for the rest of a CRLF', () => {
    const r = new SseRewriter((data) => data);
    expect(r.push(bytes('data: a\r\r'))).toBe('data: a\n\n');
    expect(r.push(bytes('\ndata: b\n\n'))).toBe('data: b\n\n');
    expect(r.push(bytes('data: c\n\r'))).toBe('data: c\n\n');
    expect(r.push(bytes('\n'))).toBe('');
    expect(r.push(bytes('data: d\n\n'))).toBe('data: d\n\n');
  });

  it('passes a last event cut short of its blank line, terminated', () => {
    const r = new SseRewriter((data) => data, Number.POSITIVE_INFINITY, true);
    expect(r.push(bytes('data: {"status":"COMPLETED"}\r'))).toBe('');
    expect(r.flush()).toBe('data: {"status":"COMPLETED"}\n\n');
  });

  it('reads events as the format defines them, whatever the line ends and chunk boundaries (property)', () => {
    /** The format's own reading: lines end at CRLF, LF or CR; a blank line ends an event. */
    const reference = (text: string) => {
      const events: Array<{ data: string[]; other: string[] }> = [];
      let current = { data: [] as string[], other: [] as string[] };
      for (const line of text.split(/\r\n|\r|\n/).slice(0, -1)) {
        if (line === '') {
          if (current.data.length + current.other.length > 0) events.push(current);
          current = { data: [], other: [] };
        } else if (line.startsWith('data:')) current.data.push(line.slice(5).replace(/^ /, ''));
        else current.other.push(line);
      }
      return events;
    };
    const lineEnd = fc.constantFrom('\n', '\r', '\r\n');
    const field = fc.oneof(
      fc.string({ unit: fc.constantFrom('a', 'b', ' ', ':', '{', '"', 'é'), maxLength: 6 }).map((s) => `data: ${s}`),
      fc.constantFrom(': keep-alive', 'event: x', 'id: 7'),
    );
    const event = fc.tuple(fc.array(fc.tuple(field, lineEnd), { minLength: 1, maxLength: 4 }), lineEnd).map(([lines, end]) => lines.map(([l, e]) => l + e).join('') + end);
    fc.assert(
      fc.property(fc.array(event, { minLength: 1, maxLength: 6 }), fc.array(fc.integer({ min: 1, max: 7 }), { minLength: 1, maxLength: 50 }), (events, cuts) => {
        // Ended by a blank line whatever the last line end was (a CR before it makes a CRLF).
        const text = `${events.join('')}\n\n`;
        const encoded = bytes(text);
        const r = new SseRewriter((data) => data);
        let out = '';
        for (let i = 0, k = 0; i < encoded.length; i += cuts[k++ % cuts.length]!) out += r.push(encoded.slice(i, i + cuts[k % cuts.length]!));
        out += r.flush();
        expect(out).not.toContain('\r');
        expect(reference(out)).toEqual(reference(text));
      }),
      { numRuns: 2_000 },
    );
  });

  it('keeps only data (and a plain keep-alive for comments) when asked to, dropping events the rewrite refuses', () => {
    const r = new SseRewriter((data) => (data.startsWith('{') ? data : undefined), Number.POSITIVE_INFINITY, true);
    const text = ': ping with some text\n\nid: 7\revent: x\rdata: {"a":1}\n\n: hidden\rdata: "not an object"\revent: y\n\nretry: 10\n\n';
    expect(r.push(bytes(text)) + r.flush()).toBe(': keep-alive\n\ndata: {"a":1}\n\n');
  });

  it('joins multi-line data and keeps multi-byte characters split across chunks', () => {
    const r = new SseRewriter((d) => `[${d}]`);
    const encoded = bytes('data: lí\ndata: on\n\n');
    const out = r.push(encoded.slice(0, 8)) + r.push(encoded.slice(8));
    expect(out).toBe('data: [lí\ndata: on]\n\n');
  });
});

describe('status stream: the upstream stream breaks before COMPLETED', () => {
  const ID = '6f1c2b8e-0000-4000-8000-0000000000aa';
  const streamHandler: FaultyHandler = (req, res) => {
    if (req.method === 'POST') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'IN_QUEUE', request_id: ID, queue_position: 0 }));
    } else if (req.url?.includes('/status/stream')) {
      // One event, then the connection drops mid-job.
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(`data: ${JSON.stringify({ status: 'IN_PROGRESS', request_id: ID, logs: [] })}\n\n`);
      setTimeout(() => res.socket?.destroy(), 100);
    } else if (req.url?.includes('/status')) {
      res.writeHead(202, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'IN_PROGRESS', request_id: ID, logs: null }));
    } else {
      res.writeHead(400, { 'content-type': 'application/json' }).end('{"detail":"Request is still in progress"}');
    }
  };
  const key = newKey();
  let upstream: FaultyUpstream;
  let app: GatewayApp;
  let url: string;
  beforeAll(async () => {
    upstream = await startFaultyUpstream();
    upstream.setHandler(streamHandler);
    const config = parseConfig({ UPSTREAM_TOKEN, UPSTREAM_BASE_URL: upstream.url, TENANTS_FILE: 'x', LOG_LEVEL: 'silent', STALE_JOB_CHECK_MS: '0' });
    const big = { max: 100_000, timeWindowMs: 60_000 };
    app = await buildApp({ config, tenants: [{ id: 'team-a', keyDigests: [digestKey(key)], limits: { submit: big, read: big } }] });
    url = await app.listen({ port: 0, host: '127.0.0.1' });
    const submitted = await fetch(`${url}/v1/image-to-image`, { method: 'POST', headers: { ...json, authorization: `Key ${key}` }, body: JSON.stringify(SEED_REQUEST) });
    expect(submitted.status).toBe(200);
  });
  afterAll(async () => {
    await app.close();
    await upstream.close();
  });

  it('cuts the client off instead of ending cleanly, so it does not take the job for done', async () => {
    const res = await fetch(`${url}/v1/requests/${ID}/status/stream`, { headers: { authorization: `Key ${key}` } });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(parseEvents(Buffer.from(first.value!).toString())[0]).toMatchObject({ status: 'IN_PROGRESS' });
    await expect(
      (async () => {
        while (!(await reader.read()).done);
      })(),
    ).rejects.toThrow();
  });

  it('passes on only status objects, written anew, and comments: no other data, id or event line can carry the token', async () => {
    const escaped = [...UPSTREAM_TOKEN].map((c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`).join('');
    const half = Math.floor(UPSTREAM_TOKEN.length / 2);
    // A job of its own: this one ends, and the gateway keeps what it saw of it.
    const id = '6f1c2b8e-0000-4000-8000-0000000000bb';
    upstream.setHandler((req, res) => {
      if (req.method === 'POST') return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'IN_QUEUE', request_id: id, queue_position: 0 }));
      if (!req.url?.includes('/status/stream')) return streamHandler(req, res, '');
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(`id: ${escaped}\nevent: ${escaped}\ndata: ${JSON.stringify({ status: 'IN_PROGRESS', request_id: id, logs: [] })}\n\n`);
      // The rest once the client is following.
      setTimeout(() => {
        res.write(`data: ["${escaped}"]\n\n`);
        res.write(`data: "${escaped}"\n\n`);
        // Lines ended by a lone CR (the format allows it): a comment, then data and an event line.
        res.write(`: note ${escaped}\rdata: "${escaped}"\revent: ${escaped}\n\n`);
        // The token split over two data lines: a client joins them with a line break between.
        res.write(`data: {"status":"IN_PROGRESS","note":"${UPSTREAM_TOKEN.slice(0, half)}\ndata: ${UPSTREAM_TOKEN.slice(half)}"}\n\n`);
        res.write(`: keep-alive\n\n`);
        res.end(`data: ${JSON.stringify({ status: 'COMPLETED', request_id: id, logs: [], note: `\u0000${UPSTREAM_TOKEN}` })}\n\n`);
      }, 100);
    });
    try {
      const submitted = await fetch(`${url}/v1/image-to-image`, { method: 'POST', headers: { ...json, authorization: `Key ${key}` }, body: JSON.stringify(SEED_REQUEST) });
      expect(submitted.status).toBe(200);
      const res = await fetch(`${url}/v1/requests/${id}/status/stream`, { headers: { authorization: `Key ${key}` } });
      expect(res.status).toBe(200);
      const text = await res.text();
      // What any client could make of it: data lines joined, JSON escapes decoded.
      const joined = text.replace(/\ndata: /g, '\n').replace(/\\u([0-9a-f]{4})/gi, (_m, hex: string) => String.fromCharCode(parseInt(hex, 16)));
      for (const view of [text, joined, joined.replace(/\n/g, '')]) expect(view).not.toContain(UPSTREAM_TOKEN);
      expect(text).not.toMatch(/^(id|event):/m);
      expect(text).not.toContain('\r');
      expect(text).toContain(': keep-alive');
      const events = parseEvents(text);
      expect(events.map((e) => e.status)).toEqual(['IN_PROGRESS', 'COMPLETED']);
      expect(events[1]!.note).toBe('\u0000[redacted]');
      // The result the gateway fetches on seeing the end: done before the next test counts calls.
      await app.whenIdle();
    } finally {
      upstream.setHandler(streamHandler);
    }
  });

  it('answers 502 when the upstream answers the stream with a 200 that is not an event stream', async () => {
    const before = upstream.requests.length;
    upstream.setHandler((req, res) => {
      if (req.url?.includes('/status/stream')) res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'IN_PROGRESS', request_id: ID }));
      else res.writeHead(404, { 'content-type': 'application/json' }).end('{"detail":"not here"}');
    });
    try {
      // Before: the reply was taken over, then the connection closed without a status line.
      const res = await fetch(`${url}/v1/requests/${ID}/status/stream`, { headers: { authorization: `Key ${key}` }, signal: AbortSignal.timeout(5_000) });
      expect(res.status).toBe(502);
      expect(((await res.json()) as { error_type: string }).error_type).toBe('upstream_bad_response');
      expect(upstream.requests.length).toBe(before + 1);
    } finally {
      upstream.setHandler(streamHandler);
    }
  });

  it('answers HEAD at once, opening nothing upstream', async () => {
    const streams = () => upstream.requests.filter((r) => r.url.includes('/status/stream')).length;
    const before = streams();
    const res = await fetch(`${url}/v1/requests/${ID}/status/stream`, { method: 'HEAD', headers: { authorization: `Key ${key}` }, signal: AbortSignal.timeout(2_000) });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    expect(streams()).toBe(before);
  });

  it("makes @fal-ai/client's streaming subscribe fail on the break, not ask for a result that is not there", async () => {
    const fal = createFalClient({ proxyUrl: { url: `${url}/api/fal/proxy`, when: 'always' }, credentials: key });
    const resultReads = () => upstream.requests.filter((r) => r.method === 'GET' && r.url.split('?')[0] === `/fal-ai/flux-lora/requests/${ID}`).length;
    const before = resultReads();
    const outcome = await fal.subscribe(MODEL_ID, { input: SEED_REQUEST, mode: 'streaming' }).then(
      () => 'resolved',
      (err: unknown) => err,
    );
    expect(outcome).toBeInstanceOf(Error);
    // The client never went on to the result: it saw the stream fail.
    expect((outcome as { status?: number }).status).not.toBe(400);
    expect(resultReads()).toBe(before);
  });
});

describe('status stream: the gateway shuts down after COMPLETED was sent, before the upstream closed', () => {
  it('ends the stream cleanly: the client has its COMPLETED, and no error', async () => {
    const ID = '6f1c2b8e-0000-4000-8000-0000000000bb';
    const key = newKey();
    const upstream = await startFaultyUpstream();
    upstream.setHandler((req, res) => {
      if (req.method === 'POST') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'IN_QUEUE', request_id: ID, queue_position: 0 }));
      } else if (req.url?.includes('/status/stream')) {
        // COMPLETED, and then the connection stays open (the upstream's close still to come).
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(`data: ${JSON.stringify({ status: 'COMPLETED', request_id: ID, logs: [], metrics: { inference_time: 1 } })}\n\n`);
      } else {
        res.writeHead(202, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'IN_PROGRESS', request_id: ID, logs: null }));
      }
    });
    const config = parseConfig({ UPSTREAM_TOKEN, UPSTREAM_BASE_URL: upstream.url, TENANTS_FILE: 'x', LOG_LEVEL: 'silent', STALE_JOB_CHECK_MS: '0', RESULT_PREFETCH: 'false' });
    const big = { max: 100_000, timeWindowMs: 60_000 };
    const app = await buildApp({ config, tenants: [{ id: 'team-a', keyDigests: [digestKey(key)], limits: { submit: big, read: big } }] });
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    try {
      await fetch(`${url}/v1/image-to-image`, { method: 'POST', headers: { ...json, authorization: `Key ${key}` }, body: JSON.stringify(SEED_REQUEST) });
      const res = await fetch(`${url}/v1/requests/${ID}/status/stream`, { headers: { authorization: `Key ${key}` } });
      const reader = res.body!.getReader();
      const first = await reader.read();
      expect(parseEvents(Buffer.from(first.value!).toString())[0]).toMatchObject({ status: 'COMPLETED' });
      const closing = app.close();
      // The rest of the body: its clean end, no error.
      while (!(await reader.read()).done);
      await closing;
    } finally {
      await app.close();
      await upstream.close();
    }
  });
});

describe('status streams past the share: polled within the read rate, never holding an upstream stream', () => {
  // Jobs by id: what the status route says, and what an upstream stream sends (then stays open).
  const jobs = new Map<string, { status: unknown; stream: unknown; statusType?: string }>();
  const key = newKey();
  let upstream: FaultyUpstream;
  let app: GatewayApp;
  let url: string;
  let nextId: string | undefined;
  /** Upstream status streams open now. */
  let liveStreams = 0;
  beforeAll(async () => {
    upstream = await startFaultyUpstream();
    upstream.setHandler((req, res) => {
      if (req.method === 'POST') {
        return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'IN_QUEUE', request_id: nextId, queue_position: 0 }));
      }
      const job = [...jobs.entries()].find(([id]) => req.url?.includes(id));
      if (!job) return void res.writeHead(404, { 'content-type': 'application/json' }).end('{"detail":"Request not found"}');
      if (req.url?.includes('/status/stream')) {
        liveStreams++;
        res.on('close', () => liveStreams--);
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        return void res.write(`data: ${JSON.stringify(job[1].stream)}\n\n`);
      }
      const type = job[1].statusType ?? 'application/json';
      res.writeHead(202, { 'content-type': type }).end(type === 'application/json' ? JSON.stringify(job[1].status) : 'not a status');
    });
    const config = parseConfig({ UPSTREAM_TOKEN, UPSTREAM_BASE_URL: upstream.url, TENANTS_FILE: 'x', LOG_LEVEL: 'silent', STALE_JOB_CHECK_MS: '0', RESULT_PREFETCH: 'false', STREAMS_PER_TENANT: '1', STATUS_CACHE_MS: '0' });
    // A read limit of 60 a minute: one read a second for the tenant's polled streams together.
    app = await buildApp({ config, tenants: [{ id: 'team-a', keyDigests: [digestKey(key)], limits: { submit: { max: 1_000, timeWindowMs: 60_000 }, read: { max: 60, timeWindowMs: 60_000 } } }] });
    url = await app.listen({ port: 0, host: '127.0.0.1' });
  });
  afterAll(async () => {
    await app.close();
    await upstream.close();
  });

  const submit = async (id: string, state: { status: unknown; stream: unknown; statusType?: string }) => {
    jobs.set(id, state);
    nextId = id;
    expect((await fetch(`${url}/v1/image-to-image`, { method: 'POST', headers: { ...json, authorization: `Key ${key}` }, body: JSON.stringify(SEED_REQUEST) })).status).toBe(200);
  };
  const running = (id: string) => ({ status: { status: 'IN_PROGRESS', request_id: id, logs: null }, stream: { status: 'IN_PROGRESS', request_id: id, logs: [] } });
  const open = async (id: string) => {
    const res = await fetch(`${url}/v1/requests/${id}/status/stream`, { headers: { authorization: `Key ${key}` } });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    const first = parseEvents(Buffer.from((await reader.read()).value!).toString())[0];
    return { first, reader, close: () => reader.cancel() };
  };
  const calls = (id: string, path: string) => upstream.requests.filter((r) => r.method === 'GET' && r.url.includes(`/requests/${id}${path}`)).length;

  it('polls a second stream of a job past the share: no upstream stream outlives the share when its opener leaves', async () => {
    for (const n of [1, 2, 3]) {
      const id = `a0000000-0000-4000-8000-00000000000${n}`;
      await submit(id, running(id));
      const first = await open(id);
      const second = await open(id);
      expect(second.first).toMatchObject({ status: 'IN_PROGRESS', request_id: id });
      expect(calls(id, '/status/stream')).toBe(1);
      await first.close();
      // The opener gone, its upstream stream closes: the second was never on it.
      await expect.poll(() => liveStreams).toBe(0);
      await second.close();
    }
  });

  it("spreads a tenant's polled reads so that together they keep to its read rate", async () => {
    const [held, b, c] = ['b0000000-0000-4000-8000-000000000001', 'b0000000-0000-4000-8000-000000000002', 'b0000000-0000-4000-8000-000000000003'];
    for (const id of [held, b, c]) await submit(id, running(id));
    const streams = [await open(held), await open(b), await open(c)];
    await new Promise((r) => setTimeout(r, 2_500));
    // Two polled streams at one read a second together: each reads every 2 s, not every 500 ms.
    for (const id of [b, c]) expect(calls(id, '/status?')).toBeLessThanOrEqual(3);
    expect(calls(b, '/status?') + calls(c, '/status?')).toBeGreaterThanOrEqual(3);
    for (const stream of streams) await stream.close();
  });

  it('answers 502, not an empty stream, when the first polled read is not a status', async () => {
    const [held, d] = ['c0000000-0000-4000-8000-000000000001', 'c0000000-0000-4000-8000-000000000002'];
    await submit(held, running(held));
    await submit(d, { ...running(d), statusType: 'text/plain' });
    const holding = await open(held);
    const res = await fetch(`${url}/v1/requests/${d}/status/stream`, { headers: { authorization: `Key ${key}` } });
    expect(res.status).toBe(502);
    expect(((await res.json()) as { error_type: string }).error_type).toBe('upstream_bad_response');
    await holding.close();
  });
});

describe('status streams past the share, at shutdown', () => {
  it("cuts off a polled stream that has not sent COMPLETED, even when another stream of the job has", async () => {
    const [x, j] = ['d0000000-0000-4000-8000-000000000001', 'd0000000-0000-4000-8000-000000000002'];
    const key = newKey();
    const upstream = await startFaultyUpstream();
    let nextId = x;
    upstream.setHandler((req, res) => {
      if (req.method === 'POST') return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'IN_QUEUE', request_id: nextId, queue_position: 0 }));
      const id = req.url?.includes(x) ? x : j;
      if (req.url?.includes('/status/stream')) {
        // J's upstream stream brings COMPLETED, then stays open; X's stays IN_PROGRESS.
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        return void res.write(`data: ${JSON.stringify({ status: id === j ? 'COMPLETED' : 'IN_PROGRESS', request_id: id, logs: [] })}\n\n`);
      }
      res.writeHead(202, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'IN_PROGRESS', request_id: id, logs: null }));
    });
    const config = parseConfig({ UPSTREAM_TOKEN, UPSTREAM_BASE_URL: upstream.url, TENANTS_FILE: 'x', LOG_LEVEL: 'silent', STALE_JOB_CHECK_MS: '0', RESULT_PREFETCH: 'false', STREAMS_PER_TENANT: '1' });
    const big = { max: 100_000, timeWindowMs: 60_000 };
    const app = await buildApp({ config, tenants: [{ id: 'team-a', keyDigests: [digestKey(key)], limits: { submit: big, read: big } }] });
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    const open = async (id: string) => {
      const res = await fetch(`${url}/v1/requests/${id}/status/stream`, { headers: { authorization: `Key ${key}` } });
      const reader = res.body!.getReader();
      return { first: parseEvents(Buffer.from((await reader.read()).value!).toString())[0]!, reader };
    };
    try {
      for (const id of [x, j]) {
        nextId = id;
        await fetch(`${url}/v1/image-to-image`, { method: 'POST', headers: { ...json, authorization: `Key ${key}` }, body: JSON.stringify(SEED_REQUEST) });
      }
      const holder = await open(x);
      const polled = await open(j); // past the share, and no stream of J open: polled
      expect(polled.first.status).toBe('IN_PROGRESS');
      await holder.reader.cancel();
      // The share is free again: J's next stream is an upstream one, which brings COMPLETED.
      await expect.poll(async () => {
        const again = await open(j);
        if (again.first.status === 'COMPLETED') return again;
        await again.reader.cancel();
        return undefined;
      }).toBeDefined();
      const closing = app.close();
      // The polled stream never sent COMPLETED: cut off, so fal's client does not take the job for done.
      await expect(
        (async () => {
          while (!(await polled.reader.read()).done);
        })(),
      ).rejects.toThrow();
      await closing;
    } finally {
      await app.close();
      await upstream.close();
    }
  });
});

describe('status stream: a job the gateway has seen end', () => {
  let stack: Stack;
  beforeAll(async () => {
    // fal keeps one job here: submitting the next one makes it forget the last, as its retention would.
    stack = await startStack({ sim: { queueMs: 50, runMs: 150, streamPollMs: 20, maxJobs: 1 } });
  });
  afterAll(() => stack.close());

  const submit = async () =>
    (await (await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-a') }, body: JSON.stringify(SEED_REQUEST) })).json()) as {
      request_id: string;
      response_url: string;
    };
  const streamCalls = (id: string) => stack.sim.requests.filter((r) => r.path.includes(`/requests/${id}/status/stream`)).length;

  it('keeps the COMPLETED a stream brought, and serves status and stream from it once fal has forgotten the job', async () => {
    const { request_id: id } = await submit();
    const first = parseEvents(await (await fetch(`${stack.url}/v1/requests/${id}/status/stream`, { headers: stack.bearer('team-a') })).text());
    expect(first.at(-1)!.status).toBe('COMPLETED');
    await submit();
    // fal no longer knows it...
    const upstreamStatus = await fetch(`${stack.sim.url}/fal-ai/flux-lora/requests/${id}/status`, { headers: { authorization: `Key ${UPSTREAM_TOKEN}` } });
    expect(upstreamStatus.status).toBe(404);
    // ...the gateway still does, polled or streamed, without asking fal for a stream again.
    const calls = streamCalls(id);
    const status = await fetch(`${stack.url}/v1/requests/${id}/status`, { headers: stack.bearer('team-a') });
    expect(status.status).toBe(200);
    expect(((await status.json()) as { status: string }).status).toBe('COMPLETED');
    for (const path of [`/v1/requests/${id}/status/stream`, `/fal-ai/flux-lora/requests/${id}/status/stream`]) {
      const again = await fetch(`${stack.url}${path}`, { headers: stack.bearer('team-a') });
      expect(again.status).toBe(200);
      expect(again.headers.get('content-type')).toMatch(/^text\/event-stream/);
      // fal's client takes the job's id from this header, as on a live stream.
      expect(again.headers.get('x-fal-request-id')).toBe(id);
      const events = parseEvents(await again.text());
      expect(events).toHaveLength(1);
      expect(events[0]).toMatchObject({ request_id: id, status: 'COMPLETED', status_url: `${stack.url}${path.slice(0, path.indexOf(id))}${id}/status` });
    }
    expect(streamCalls(id)).toBe(calls);
    // Another tenant still cannot see it.
    expect((await fetch(`${stack.url}/v1/requests/${id}/status/stream`, { headers: stack.bearer('team-b') })).status).toBe(404);
  });

  it("drops a result's kept 'not ready yet' as soon as the stream brings COMPLETED: fal's client reads the result at once", async () => {
    const { request_id: id, response_url: resultUrl } = await submit();
    // Someone polls the result while the job runs: each "still in progress" answer is reused briefly.
    let polling = true;
    const notReady: number[] = [];
    const poller = (async () => {
      while (polling) {
        const res = await fetch(resultUrl, { headers: stack.bearer('team-a') });
        if (res.status !== 200) notReady.push(res.status);
        await res.arrayBuffer();
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    const events = parseEvents(await (await fetch(`${stack.url}/v1/requests/${id}/status/stream`, { headers: stack.bearer('team-a') })).text());
    expect(events.at(-1)!.status).toBe('COMPLETED');
    const result = await fetch(resultUrl, { headers: stack.bearer('team-a') });
    polling = false;
    await poller;
    expect(notReady.length).toBeGreaterThan(0);
    expect(result.status).toBe(200);
    expect(((await result.json()) as { images: unknown[] }).images.length).toBeGreaterThan(0);
  });
});
