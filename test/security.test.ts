import { randomUUID } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, type GatewayApp } from '../src/app.js';
import { newKey } from '../src/cli/key.js';
import { parseConfig } from '../src/config.js';
import { digestKey } from '../src/tenants/registry.js';
import { json, SEED_REQUEST, UPSTREAM_TOKEN } from './helpers.js';
import { startFaultyUpstream, type FaultyUpstream } from './support/faulty-upstream.js';

/**
 * The whole flow and every error path against a hostile upstream that echoes the gateway's
 * credentials into every body and into headers the gateway relays. Every response (status,
 * headers, body) and every log line, at debug level, is scanned for the upstream token and
 * the tenant keys.
 */
/** Writes raw bytes to the gateway at `base` and returns everything it answers until it closes the connection. */
async function rawExchange(base: string, bytes: string): Promise<string> {
  const { connect } = await import('node:net');
  return new Promise<string>((resolve) => {
    const socket = connect(Number(new URL(base).port), '127.0.0.1');
    let answer = '';
    socket.on('data', (chunk: Buffer) => (answer += chunk.toString()));
    socket.on('close', () => resolve(answer));
    socket.write(bytes);
  });
}

describe('secrets never leave the gateway', () => {
  let upstream: FaultyUpstream;
  let app: GatewayApp;
  let url: string;
  const keyA = newKey();
  const keyB = newKey();
  const logs: string[] = [];
  const seen: Array<{ what: string; status: number; headers: string; body: string }> = [];
  let mode: 'ok' | 'auth' | 'error' | 'hang' | 'html' | 'reject' = 'ok';

  beforeAll(async () => {
    upstream = await startFaultyUpstream();
    upstream.setHandler((req, res) => {
      const echo = String(req.headers.authorization);
      // The content type too: it goes out with the body it describes, and into the log when it is not JSON.
      const headers = { 'content-type': `application/json; echo="${echo}"`, 'x-fal-error-type': echo, 'x-fal-request-id': echo, 'retry-after': '1' };
      const id = /requests\/([^/?]+)/.exec(req.url ?? '')?.[1] ?? randomUUID();
      if (mode === 'hang') return;
      if (mode === 'html') return void res.writeHead(404, { 'content-type': `text/html; echo="${echo}"` }).end(`<html>${echo}</html>`);
      if (mode === 'auth') return void res.writeHead(401, headers).end(JSON.stringify({ detail: `Invalid ${echo}` }));
      if (mode === 'error') return void res.writeHead(503, headers).end(JSON.stringify({ detail: `runner saw ${echo}`, error_type: 'runner_scheduling_failure', echo }));
      // Also the token with its first character as a JSON escape: raw bytes differ, parsed text does not.
      const escaped = JSON.stringify(echo).replace(/^"(Key |Bearer )(.)/, (_m, scheme: string, c: string) => `"${scheme}\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
      // The model's own 422, passed on as fal sent it.
      if (mode === 'reject') return void res.writeHead(422, headers).end(JSON.stringify({ detail: [{ loc: ['body', 'prompt'], msg: 'ESCAPED', type: 'value_error' }] }).replace('"ESCAPED"', escaped));
      const body = req.method === 'POST' ? { status: 'IN_QUEUE', request_id: id, queue_position: 0, echo } : req.url?.includes('/status') ? { status: 'COMPLETED', request_id: id, echo } : { images: [], echo };
      res.writeHead(req.method === 'PUT' ? 202 : 200, headers).end(JSON.stringify({ ...body, escaped: 'ESCAPED' }).replace('"ESCAPED"', escaped));
    });
    const config = parseConfig({
      UPSTREAM_TOKEN,
      UPSTREAM_BASE_URL: upstream.url,
      TENANTS_FILE: 'x',
      LOG_LEVEL: 'debug',
      UPSTREAM_HEADERS_TIMEOUT_MS: '300',
      UPSTREAM_READ_RETRIES: '1',
      CIRCUIT_BREAKER_THRESHOLD: '3',
      CIRCUIT_BREAKER_COOLDOWN_MS: '60000',
      // Upstream failures are played on reads of one job: every read must reach the upstream.
      STATUS_CACHE_MS: '0',
      RESULT_CACHE_TTL_SECONDS: '0',
    });
    app = await buildApp({
      config,
      tenants: [
        { id: 'team-a', keyDigests: [digestKey(keyA)], limits: { submit: { max: 12, timeWindowMs: 60_000 }, read: { max: 1_000, timeWindowMs: 60_000 } } },
        { id: 'team-b', keyDigests: [digestKey(keyB)], limits: { submit: { max: 100, timeWindowMs: 60_000 }, read: { max: 1_000, timeWindowMs: 60_000 } } },
      ],
      logStream: { write: (line) => void logs.push(line) },
    });
    url = await app.listen({ port: 0, host: '127.0.0.1' });
  });
  afterAll(async () => {
    await app.close();
    await upstream.close();
  });

  async function call(what: string, path: string, init: RequestInit = {}) {
    const res = await fetch(`${url}${path}`, init);
    const body = await res.text();
    seen.push({ what, status: res.status, headers: JSON.stringify([...res.headers]), body });
    return { status: res.status, body, headers: res.headers };
  }
  const a = { authorization: `Bearer ${keyA}` };
  const submitA = (what: string, extra: Record<string, string> = {}, body: unknown = SEED_REQUEST) =>
    call(what, '/v1/image-to-image', { method: 'POST', headers: { ...json, ...a, ...extra }, body: JSON.stringify(body) });

  it('runs every path, and no response or log line holds the token or a key', async () => {
    const submitted = await submitA('submit');
    expect(submitted.status).toBe(200);
    const id = (JSON.parse(submitted.body) as { request_id: string }).request_id;
    expect(JSON.parse(submitted.body).echo).toBe('Key [redacted]');
    await call('status', `/v1/requests/${id}/status?logs=1`, { headers: a });
    // Credentials put in the query by mistake (the gateway takes none from there) are not logged.
    await call('keys in the query', `/v1/requests/${id}/status?logs=1&api_key=${keyA}&Token=${keyB}&x=${UPSTREAM_TOKEN.slice(0, 4)}`, { headers: a });
    expect(logs.some((l) => l.includes(`/status?logs=1&api_key=[redacted]&Token=[redacted]&x=${UPSTREAM_TOKEN.slice(0, 4)}"`))).toBe(true);
    await call('result', `/v1/requests/${id}`, { headers: a });
    await call('cancel', `/fal-ai/flux-lora/requests/${id}/cancel`, { method: 'PUT', headers: { ...a, 'content-type': 'application/json' } });
    await call('foreign', `/v1/requests/${id}`, { headers: { authorization: `Key ${keyB}` } });
    await call('no key', `/v1/requests/${id}`, {});
    await call('upstream token as key', `/v1/requests/${id}`, { headers: { authorization: `Key ${UPSTREAM_TOKEN}` } });
    await call('key in x-api-key, bad body', '/v1/image-to-image', { method: 'POST', headers: { ...json, 'x-api-key': keyA }, body: '{oops' });
    await call('wrong type', '/v1/image-to-image', { method: 'POST', headers: { ...a, 'content-type': 'text/plain' }, body: keyA });
    await submitA('invalid', {}, { ...SEED_REQUEST, prompt: keyA, strength: 9 });
    const idem = randomUUID();
    await submitA('idempotent', { 'idempotency-key': idem });
    await submitA('replay', { 'idempotency-key': idem });
    await submitA('reused key', { 'idempotency-key': idem }, { ...SEED_REQUEST, seed: 1 });
    mode = 'reject';
    expect((await submitA('upstream 422')).status).toBe(422);
    await call('upstream 422 result', `/v1/requests/${id}`, { headers: a });
    mode = 'html';
    await call('html from upstream', `/v1/requests/${id}`, { headers: a });
    mode = 'auth';
    expect((await submitA('upstream 401')).status).toBe(502);
    mode = 'error';
    await call('upstream 503 read', `/v1/requests/${id}/status`, { headers: a });
    mode = 'hang';
    await submitA('upstream silent');
    expect((await submitA('circuit open')).status).toBe(503);
    mode = 'ok';
    for (let i = 0; i < 6; i++) await submitA('rate limited');
    expect(seen.at(-1)!.status).toBe(429);
    await call('docs', '/docs/');
    await call('openapi', '/openapi.json');
    await call('health', '/healthz');
    await call('ready', '/readyz');

    const statuses = new Set(seen.map((s) => s.status));
    for (const status of [200, 202, 400, 401, 404, 415, 422, 429, 500, 502, 503]) expect(statuses, `no ${status} exercised`).toContain(status);
    // A body is read as a client reads it too: JSON escapes decoded.
    const decoded = (body: string) => {
      try {
        return JSON.stringify(JSON.parse(body));
      } catch {
        return body;
      }
    };
    for (const secret of [UPSTREAM_TOKEN, keyA, keyB]) {
      const leaks = seen.filter((s) => s.headers.includes(secret) || s.body.includes(secret) || decoded(s.body).includes(secret)).map((s) => s.what);
      expect(leaks, 'responses holding a secret').toEqual([]);
      expect(logs.filter((l) => l.includes(secret)), 'log lines holding a secret').toEqual([]);
    }
    expect(logs.length).toBeGreaterThan(seen.length);
  });

  it('sends security headers and no CORS headers', async () => {
    const api = await call('headers', '/healthz', { headers: { origin: 'https://evil.example' } });
    expect(api.headers.get('content-security-policy')).toBe("default-src 'none'; frame-ancestors 'none'");
    expect(api.headers.get('x-content-type-options')).toBe('nosniff');
    expect(api.headers.get('referrer-policy')).toBe('no-referrer');
    expect(api.headers.get('x-powered-by')).toBeNull();
    expect(api.headers.get('access-control-allow-origin')).toBeNull();
    const docs = await call('docs headers', '/docs/');
    expect(docs.headers.get('content-security-policy')).toMatch(/script-src 'self'/);
    expect(docs.headers.get('content-security-policy')).not.toContain('upgrade-insecure-requests');
    const preflight = await fetch(`${url}/v1/image-to-image`, {
      method: 'OPTIONS',
      headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' },
    });
    expect(preflight.headers.get('access-control-allow-origin')).toBeNull();
    expect(preflight.status).toBe(403);
  });

  it('never builds a queue URL from a Host header that is not a host (no PUBLIC_BASE_URL here)', async () => {
    const raw = (host: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        // team-b: team-a's submit budget is spent by the test above.
        const req = httpRequest(`${url}/v1/image-to-image`, { method: 'POST', headers: { host, ...json, authorization: `Bearer ${keyB}` } }, (res) => {
          let body = '';
          res.on('data', (chunk: Buffer) => (body += chunk.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.once('error', reject);
        req.end(JSON.stringify(SEED_REQUEST));
      });
    const posts = () => upstream.requests.filter((r) => r.method === 'POST').length;
    const before = posts();
    for (const host of ['a"b<c', 'evil.example/path', 'a b']) {
      const answer = await raw(host);
      expect(answer.status, host).toBe(400);
      expect(JSON.parse(answer.body)).toEqual({ detail: 'The Host header does not name a host; the operator can set PUBLIC_BASE_URL', error_type: 'bad_request' });
    }
    expect(posts()).toBe(before);
    // (Hosts that are hosts, names and addresses with ports, are what every other test sends.)
  });

  it('closes the connection of a caller refused before its body arrived, instead of reading what it still sends', async () => {
    const { connect } = await import('node:net');
    const port = Number(new URL(url).port);
    const socket = connect(port, '127.0.0.1');
    let answer = '';
    socket.on('data', (chunk: Buffer) => (answer += chunk.toString()));
    const closed = new Promise<number>((resolve) => socket.on('close', () => resolve(Date.now())));
    socket.write('POST /v1/image-to-image HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{"prompt":');
    const started = Date.now();
    // It keeps trickling, as a slow attacker would; the gateway must not wait for the rest.
    const drip = setInterval(() => socket.writable && socket.write(' '), 100);
    const closedAt = await closed;
    clearInterval(drip);
    expect(answer).toMatch(/^HTTP\/1\.1 401/);
    expect(answer.toLowerCase()).toContain('connection: close');
    expect(closedAt - started).toBeLessThan(3_000);
  });

  it('cuts off a tenant that sends its body slower than REQUEST_TIMEOUT_MS allows (408)', async () => {
    const key = newKey();
    const slow = await buildApp({
      config: parseConfig({ UPSTREAM_TOKEN, UPSTREAM_BASE_URL: upstream.url, TENANTS_FILE: 'x', LOG_LEVEL: 'info', REQUEST_TIMEOUT_MS: '1000' }),
      tenants: [{ id: 'team-a', keyDigests: [digestKey(key)], limits: { submit: { max: 10, timeWindowMs: 60_000 }, read: { max: 10, timeWindowMs: 60_000 } } }],
      logStream: { write: (line) => void lines.push(JSON.parse(line) as Record<string, unknown>) },
    });
    const lines: Array<Record<string, unknown>> = [];
    const slowUrl = await slow.listen({ port: 0, host: '127.0.0.1' });
    try {
      const { connect } = await import('node:net');
      const socket = connect(Number(new URL(slowUrl).port), '127.0.0.1');
      let answer = '';
      socket.on('data', (chunk: Buffer) => (answer += chunk.toString()));
      const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
      socket.write(`POST /v1/image-to-image HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${key}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{`);
      const started = Date.now();
      const drip = setInterval(() => socket.writable && socket.write(' '), 200);
      await closed;
      clearInterval(drip);
      expect(answer).toMatch(/^HTTP\/1\.1 408/);
      expect(answer.slice(answer.indexOf('\r\n\r\n') + 4)).toBe('{"detail":"The request was not received in time (REQUEST_TIMEOUT_MS)","error_type":"request_not_received"}');
      expect(answer.toLowerCase()).toContain('\r\nx-fal-error-type: request_not_received\r\n');
      expect(Date.now() - started).toBeLessThan(5_000);
      // Logged and counted as the 408 it was, not as a client that left (499).
      await expect.poll(() => lines.filter((l) => l.msg === 'request').length).toBe(1);
      const [line] = lines.filter((l) => l.msg === 'request');
      expect(line).toMatchObject({ method: 'POST', url: '/v1/image-to-image', ip: '127.0.0.1', statusCode: 408, tenant: 'team-a' });
      // The answer names the request its line is filed under.
      expect(answer.toLowerCase()).toContain(`\r\nx-request-id: ${String(line!.reqId)}\r\n`);
      expect(line).not.toHaveProperty('aborted');
      // Refusals before any request exists get a line and a count of their own.
      const raw = (bytes: string) => rawExchange(slowUrl, bytes);
      expect(await raw(`GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`)).toMatch(/^HTTP\/1\.1 431/);
      expect(await raw('NOT HTTP AT ALL\r\n\r\n')).toMatch(/^HTTP\/1\.1 400/);
      expect(lines.filter((l) => l.msg === 'request').map((l) => [l.statusCode, l.errorType, l.ip])).toEqual([
        [408, 'request_not_received', '127.0.0.1'],
        [431, 'headers_too_large', '127.0.0.1'],
        [400, 'bad_request', '127.0.0.1'],
      ]);
      const metrics = await (await fetch(`${slowUrl}/metrics`)).text();
      expect(metrics).toMatch(/http_requests_total\{[^}]*route="\/v1\/image-to-image"[^}]*status="408"[^}]*\} 1/);
      expect(metrics).toMatch(/http_requests_total\{[^}]*route="unmatched"[^}]*status="431"[^}]*\} 1/);
      expect(metrics).not.toMatch(/status="499"/);
    } finally {
      await slow.close();
    }
  });

  it("answers Node's own refusals (headers too large, not HTTP) in the error envelope", async () => {
    const { connect } = await import('node:net');
    const raw = (bytes: string) => rawExchange(url, bytes);
    const big = await raw(`GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect(big).toMatch(/^HTTP\/1\.1 431/);
    expect(big).toContain('{"detail":"The request headers are too large","error_type":"headers_too_large"}');
    // With the headers every answer of the gateway carries.
    const head = big.slice(0, big.indexOf('\r\n\r\n')).toLowerCase();
    expect(head).toContain('\r\nx-fal-error-type: headers_too_large');
    expect(head).toMatch(/\r\nx-request-id: [0-9a-f-]{36}/);
    expect(head).toContain('\r\nx-content-type-options: nosniff');
    expect(head).toContain("\r\ncontent-security-policy: default-src 'none'; frame-ancestors 'none'");
    // Also on a connection that has already served a request.
    const reused = await new Promise<string>((resolve) => {
      const socket = connect(Number(new URL(url).port), '127.0.0.1');
      let answer = '';
      socket.on('data', (chunk: Buffer) => {
        const first = answer === '';
        answer += chunk.toString();
        // The first answer is in: now the oversized request, on the same connection.
        if (first) socket.write(`GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
      });
      socket.on('close', () => resolve(answer));
      socket.write('GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n');
    });
    expect(reused).toMatch(/^HTTP\/1\.1 200/);
    expect(reused).toContain('HTTP/1.1 431 Request Header Fields Too Large');
    const garbage = await raw('NOT HTTP AT ALL\r\n\r\n');
    expect(garbage).toMatch(/^HTTP\/1\.1 400/);
    expect(garbage).toContain('"error_type":"bad_request"');
    expect(garbage.toLowerCase()).toContain('\r\nx-fal-error-type: bad_request\r\n');
  });

  it('keeps the connection of callers whose requests were read whole', async () => {
    const { Agent, request } = await import('undici');
    const agent = new Agent({ connections: 1 });
    try {
      for (let i = 0; i < 3; i++) {
        const res = await request(`${url}/v1/image-to-image`, { method: 'POST', dispatcher: agent, headers: { ...json, authorization: `Bearer ${keyB}` }, body: JSON.stringify({ ...SEED_REQUEST, strength: 9 }) });
        await res.body.text();
        expect(res.statusCode).toBe(422);
        expect(res.headers.connection).toBe('keep-alive');
      }
    } finally {
      await agent.close();
    }
  });

  it('answers an unknown key exactly like a missing one', async () => {
    const missing = await fetch(`${url}/v1/requests/x/status`);
    const unknown = await fetch(`${url}/v1/requests/x/status`, { headers: { authorization: `Bearer ${newKey()}` } });
    expect(unknown.status).toBe(missing.status);
    expect(await unknown.text()).toBe(await missing.text());
  });
});
