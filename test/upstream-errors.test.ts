import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { connect, createServer, type AddressInfo } from 'node:net';
import { Agent } from 'undici';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { buildApp, type GatewayApp } from '../src/app.js';
import { newKey } from '../src/cli/key.js';
import { parseConfig } from '../src/config.js';
import { SEED_REQUEST } from '../src/model.js';
import { digestKey } from '../src/tenants/registry.js';
import type { Tenant } from '../src/tenants/tenants-file.js';
import { UPSTREAM_TOKEN } from './helpers.js';
import { startFaultyUpstream, type FaultyHandler, type FaultyUpstream } from './support/faulty-upstream.js';

/**
 * The gateway in front of a real HTTP server that misbehaves on purpose: every way fal's queue
 * (or the network to it) can fail must end in a fast, well-formed answer that never carries the
 * gateway's upstream credential, and a submit must never be sent twice.
 */

const TIMEOUT_MS = 300;
const MAX_RESPONSE_BYTES = 65_536;
/** Upstream timeouts are 300 ms; anything near the client's 5 s abort would mean a hang. */
const FAST_MS = 2_500;
const GENEROUS = { max: 10_000, timeWindowMs: 60_000 };

interface Gateway {
  app: GatewayApp;
  url: string;
  key: string;
  logs: string[];
  close(): Promise<void>;
}

async function startGateway(upstreamBaseUrl: string, env: Record<string, string> = {}): Promise<Gateway> {
  const key = newKey();
  const tenants: Tenant[] = [{ id: 'team-a', keyDigests: [digestKey(key)], limits: { submit: GENEROUS, read: GENEROUS } }];
  const config = parseConfig({
    UPSTREAM_TOKEN,
    UPSTREAM_BASE_URL: upstreamBaseUrl,
    TENANTS_FILE: 'x',
    UPSTREAM_HEADERS_TIMEOUT_MS: String(TIMEOUT_MS),
    UPSTREAM_BODY_TIMEOUT_MS: String(TIMEOUT_MS),
    UPSTREAM_CONNECT_TIMEOUT_MS: String(TIMEOUT_MS),
    UPSTREAM_MAX_RESPONSE_BYTES: String(MAX_RESPONSE_BYTES),
    // This file checks how each failure is mapped, one at a time: retries and the circuit
    // breaker, which would change what a single failure looks like, are covered by resilience.test.ts.
    UPSTREAM_READ_RETRIES: '0',
    CIRCUIT_BREAKER_THRESHOLD: '1000',
    LOG_LEVEL: 'info',
    ...env,
  });
  const logs: string[] = [];
  const app = await buildApp({ config, tenants, logStream: { write: (line) => void logs.push(line) } });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  return { app, url, key, logs, close: () => app.close() };
}

interface CallResult {
  status: number;
  headers: Headers;
  text: string;
  ms: number;
}

async function call(
  gw: Gateway,
  method: string,
  path: string,
  options: { body?: unknown; headers?: Record<string, string> } = {},
): Promise<CallResult> {
  const started = performance.now();
  const res = await fetch(gw.url + path, {
    method,
    headers: {
      authorization: `Bearer ${gw.key}`,
      ...(options.body !== undefined ? { 'content-type': 'application/json' } : {}),
      ...options.headers,
    },
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    signal: AbortSignal.timeout(5_000),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, ms: performance.now() - started };
}

const submit = (gw: Gateway, headers?: Record<string, string>) =>
  call(gw, 'POST', '/v1/image-to-image', { body: SEED_REQUEST, ...(headers ? { headers } : {}) });

function parse(res: CallResult): Record<string, unknown> {
  return JSON.parse(res.text) as Record<string, unknown>;
}

/** Neither the body nor any header of an answer carries the upstream token. */
function expectNoToken(res: CallResult): void {
  expect(res.text).not.toContain(UPSTREAM_TOKEN);
  for (const [name, value] of res.headers) expect(`${name}: ${value}`).not.toContain(UPSTREAM_TOKEN);
}

/** The gateway's own error envelope `{detail: string, error_type}`, nothing else, answered fast. */
function expectEnvelope(res: CallResult, status: number, errorType: string): { detail: string; error_type: string } {
  expect({ status: res.status, text: res.text }).toMatchObject({ status });
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  const body = parse(res);
  expect(Object.keys(body).sort()).toEqual(['detail', 'error_type']);
  expect(typeof body.detail).toBe('string');
  expect(body.error_type).toBe(errorType);
  // The category in fal's header too.
  expect(res.headers.get('x-fal-error-type')).toBe(errorType);
  expectNoToken(res);
  expect(res.ms).toBeLessThan(FAST_MS);
  return body as { detail: string; error_type: string };
}

/** fal's submit answer, with its own absolute queue URLs. */
function queuedBody(id: string, prefix = 'https://queue.fal.run') {
  const base = `${prefix}/fal-ai/flux-lora/requests/${id}`;
  return {
    status: 'IN_QUEUE',
    request_id: id,
    status_url: `${base}/status`,
    response_url: base,
    cancel_url: `${base}/cancel`,
    logs: null,
    metrics: {},
    queue_position: 0,
  };
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

const json =
  (status: number, body: unknown, headers?: Record<string, string>): FaultyHandler =>
  (_req, res) =>
    sendJson(res, status, body, headers);

const FAL_5XX = { detail: 'Runner scheduling failure', error_type: 'runner_scheduling_failure' };
const HTML = '<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1><p>nginx</p></body></html>';

describe('gateway in front of a misbehaving upstream', () => {
  let faulty: FaultyUpstream;
  let gw: Gateway;

  beforeAll(async () => {
    faulty = await startFaultyUpstream();
    gw = await startGateway(faulty.url);
  });
  afterAll(async () => {
    await gw?.close();
    await faulty?.close();
  });
  beforeEach(() => {
    faulty.requests.length = 0;
    faulty.setHandler((_req, res) => sendJson(res, 599, { detail: 'test did not set a handler' }));
  });

  const posts = () => faulty.requests.filter((r) => r.method === 'POST');
  /** A submit is never retried: the upstream saw exactly one POST. */
  const expectOnePost = () => expect(posts()).toHaveLength(1);

  /** Submits with the upstream answering normally, so the tenant owns the returned id. */
  async function ownedJob(): Promise<string> {
    const id = randomUUID();
    faulty.setHandler(json(200, queuedBody(id)));
    const res = await submit(gw);
    expect(res.status).toBe(200);
    expect(parse(res)).toMatchObject({ request_id: id, status_url: `${gw.url}/v1/requests/${id}/status` });
    faulty.requests.length = 0;
    return id;
  }

  describe('the gateway credentials rejected upstream', () => {
    it.each([401, 403])('upstream %i on submit → 502 upstream_auth_failed, no token, no upstream body', async (code) => {
      faulty.setHandler(json(code, { detail: `Invalid Key ${UPSTREAM_TOKEN}` }, { 'www-authenticate': `Key realm="${UPSTREAM_TOKEN}"` }));
      const logsBefore = gw.logs.length;
      const res = await submit(gw);
      const body = expectEnvelope(res, 502, 'upstream_auth_failed');
      expect(body.detail).toMatch(/operator/);
      expect(body.detail).toMatch(/UPSTREAM_TOKEN/);
      expect(res.text).not.toContain('Invalid Key');
      expect(res.headers.get('www-authenticate')).toBeNull();
      expectOnePost();
      const lines = gw.logs.slice(logsBefore);
      expect(lines.length).toBeGreaterThan(0);
      for (const line of lines) expect(line).not.toContain(UPSTREAM_TOKEN);
      type Line = { level: number; msg: string; errorType?: string; stack?: unknown; err?: unknown; statusCode?: number; error?: string };
      const parsed = lines.map((line) => JSON.parse(line) as Line);
      // The operator's line: at error, naming the upstream's answer, without a stack (no bug to find)...
      const fault = parsed.filter((l) => l.level === 50);
      expect(fault).toHaveLength(1);
      expect(fault[0]!.msg).toMatch(new RegExp(`^The upstream rejected the gateway's own credentials \\(HTTP ${code}\\).*logged at most every 10 s`));
      expect(fault[0]!.err).toBeUndefined();
      // ...and the request's line says what it was answered.
      expect(parsed.find((l) => l.msg === 'request')).toMatchObject({ statusCode: 502, errorType: 'upstream_auth_failed', error: expect.stringMatching(/UPSTREAM_TOKEN/) });
      // A configuration fault fails every request alike: the next one adds its request line only.
      const again = gw.logs.length;
      expect((await submit(gw)).status).toBe(502);
      await expect.poll(() => gw.logs.length).toBeGreaterThan(again);
      const next = gw.logs.slice(again).map((line) => JSON.parse(line) as Line);
      expect(next.filter((l) => l.level >= 50)).toEqual([]);
      expect(next.filter((l) => l.msg === 'request')).toHaveLength(1);
    });

    it('upstream 401 on the status of an owned job → 502 upstream_auth_failed as well', async () => {
      const id = await ownedJob();
      faulty.setHandler(json(401, { detail: `Invalid Key ${UPSTREAM_TOKEN}` }));
      const res = await call(gw, 'GET', `/v1/requests/${id}/status`);
      expectEnvelope(res, 502, 'upstream_auth_failed');
      expect(res.text).not.toContain('Invalid Key');
    });
  });

  describe('transport failures', () => {
    it('a request undici refuses to build (a token with a line break) → 502 upstream_misconfigured, nothing sent, quota given back', async () => {
      // The configuration refuses such a token; this is the defence behind it.
      const key = newKey();
      const config = { ...parseConfig({ UPSTREAM_TOKEN, UPSTREAM_BASE_URL: faulty.url, TENANTS_FILE: 'x', CIRCUIT_BREAKER_THRESHOLD: '1' }), UPSTREAM_TOKEN: `${UPSTREAM_TOKEN}\n` };
      const tenants: Tenant[] = [{ id: 'team-q', keyDigests: [digestKey(key)], limits: { submit: GENEROUS, read: GENEROUS, quota: { imagesPerDay: 5 } } }];
      const logs: string[] = [];
      const app = await buildApp({ config, tenants, logStream: { write: (line) => void logs.push(line) } });
      const url = await app.listen({ port: 0, host: '127.0.0.1' });
      const broken: Gateway = { app, url, key, logs, close: () => app.close() };
      try {
        for (let i = 0; i < 2; i++) {
          const body = expectEnvelope(await submit(broken), 502, 'upstream_misconfigured');
          expect(body.detail).toContain('nothing was sent');
        }
        expect(faulty.requests).toEqual([]);
        // Not a failure of fal's: the circuit (threshold 1) stays closed.
        expect((await submit(broken)).status).toBe(502);
        const usage = parse(await call(broken, 'GET', '/v1/usage'));
        expect((usage.tenants as Array<{ quota: { day: { used: number } } }>)[0]!.quota.day.used).toBe(0);
      } finally {
        await broken.close();
      }
    });

    it('scrubs a token spelled with JSON escapes such as \\/ from a body passed on as it came', async () => {
      // A reseller's token may hold "/" (base64), which JSON may write as "\/".
      const token = 'reseller/token+with/slashes-0123456789';
      const slashed = await startGateway(faulty.url, { UPSTREAM_TOKEN: token });
      try {
        const id = randomUUID();
        faulty.setHandler(json(200, queuedBody(id)));
        expect((await submit(slashed)).status).toBe(200);
        const escaped = JSON.stringify(`the runner saw Key ${token}`).replace(/\//g, '\\/');
        faulty.setHandler((_req, res) => sendJson(res, 400, `{"detail":${escaped}}`));
        const res = await call(slashed, 'PUT', `/v1/requests/${id}/cancel`);
        expect(res.status).toBe(400);
        expect(res.text).not.toContain(token);
        expect(JSON.parse(res.text)).toEqual({ detail: 'the runner saw Key [redacted]' });
      } finally {
        await slashed.close();
      }
    });

    it('scrubs a token holding " or \\ (which JSON writes escaped) from relayed errors and passed-on bodies', async () => {
      const token = 'tok"en\\secret-0123456789abcdef';
      const quoted = await startGateway(faulty.url, { UPSTREAM_TOKEN: token });
      const decoded = (text: string) => JSON.stringify(JSON.parse(text));
      try {
        // A 5xx echoing the Authorization header it got: relayed as fal's {detail, error_type}.
        faulty.setHandler((req, res) => sendJson(res, 500, JSON.stringify({ detail: `echo ${String(req.headers.authorization)}`, error_type: 'runner_disconnected' })));
        const failed = await submit(quoted);
        expect(failed.status).toBe(500);
        expect(decoded(failed.text)).not.toContain(JSON.stringify(token).slice(1, -1));
        expect((JSON.parse(failed.text) as { detail: string }).detail).toBe('echo Key [redacted]');
        // A 4xx passed on as it came.
        const id = randomUUID();
        faulty.setHandler(json(200, queuedBody(id)));
        expect((await submit(quoted)).status).toBe(200);
        faulty.setHandler((req, res) => sendJson(res, 400, JSON.stringify({ detail: `the runner saw ${String(req.headers.authorization)}` })));
        const res = await call(quoted, 'PUT', `/v1/requests/${id}/cancel`);
        expect(res.status).toBe(400);
        expect((JSON.parse(res.text) as { detail: string }).detail).toBe('the runner saw Key [redacted]');
      } finally {
        await quoted.close();
      }
    });

    it('refuses (502) a JSON body with escapes that does not parse: a client could still decode the token from it', async () => {
      const id = await ownedJob();
      // The token, every letter escaped, in a body a strict parser refuses (trailing text).
      const spelled = [...UPSTREAM_TOKEN].map((c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`).join('');
      faulty.setHandler((_req, res) => sendJson(res, 400, `{"detail":"saw ${spelled}"} trailing`));
      const res = await call(gw, 'PUT', `/v1/requests/${id}/cancel`);
      expectEnvelope(res, 502, 'upstream_bad_response');
      expect(res.text).not.toContain(spelled);
      // Without escapes, such a body passes as it came (the literal token is scrubbed from it).
      faulty.setHandler((_req, res) => sendJson(res, 400, `{"detail":"no such job"} trailing`));
      const plain = await call(gw, 'PUT', `/v1/requests/${id}/cancel`);
      expect(plain.status).toBe(400);
      expect(plain.text).toBe('{"detail":"no such job"} trailing');
    });

    it('connection refused → 503 upstream_unavailable', async () => {
      const probe = createServer();
      await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
      const { port } = probe.address() as AddressInfo;
      await new Promise<void>((resolve) => probe.close(() => resolve()));
      const refused = await startGateway(`http://127.0.0.1:${port}`);
      try {
        const res = await submit(refused);
        expectEnvelope(res, 503, 'upstream_unavailable');
        expect(res.headers.get('retry-after')).toBe('5');
        for (const line of refused.logs) expect(line).not.toContain(UPSTREAM_TOKEN);
      } finally {
        await refused.close();
      }
    });

    it.each([
      ['with content-length', { 'content-length': '400' }],
      ['chunked', {}],
    ])('socket destroyed mid-response (%s): a read → 502 upstream_connection_error; a submit → 500, never retryable', async (_name, headers) => {
      const id = await ownedJob();
      const dropping = (_req: unknown, res: import('node:http').ServerResponse) => {
        res.writeHead(200, { 'content-type': 'application/json', ...headers });
        res.write('{"status":"IN_QUEUE","request_id":"');
        setTimeout(() => res.socket?.destroy(), 30);
      };
      faulty.setHandler(dropping);
      expectEnvelope(await call(gw, 'GET', `/v1/requests/${id}/status`), 502, 'upstream_connection_error');
      faulty.requests.length = 0;
      const res = await submit(gw);
      const body = expectEnvelope(res, 500, 'submit_outcome_unknown');
      expect(body.detail).toContain('The connection to the upstream failed');
      expectOnePost();
    });

    it('socket destroyed before any response: the submit may have arrived → 500 submit_outcome_unknown', async () => {
      faulty.setHandler((req) => req.socket.destroy());
      const res = await submit(gw);
      expectEnvelope(res, 500, 'submit_outcome_unknown');
      expectOnePost();
    });

    it('upstream never answers a submit → 500 submit_outcome_unknown after the headers timeout', async () => {
      faulty.setHandler(() => {
        // hold the request open forever
      });
      const res = await submit(gw);
      const body = expectEnvelope(res, 500, 'submit_outcome_unknown');
      expect(body.detail).toContain('did not answer in time');
      expect(res.ms).toBeGreaterThanOrEqual(TIMEOUT_MS - 50);
      expectOnePost();
    });

    it('body trickles then stalls → 504 upstream_timeout after the body timeout (read)', async () => {
      const id = await ownedJob();
      faulty.setHandler((_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write('{"status":"IN_QUEUE",');
        setTimeout(() => res.write('"queue_position":0,'), 100);
        setTimeout(() => res.write('"logs":null,'), 200);
        // then nothing, ever
      });
      const res = await call(gw, 'GET', `/v1/requests/${id}/status`);
      expectEnvelope(res, 504, 'upstream_timeout');
    });

    it('upstream never answers a status read → 504 upstream_timeout', async () => {
      const id = await ownedJob();
      faulty.setHandler(() => {});
      const res = await call(gw, 'GET', `/v1/requests/${id}/status`);
      expectEnvelope(res, 504, 'upstream_timeout');
    });
  });

  describe('unreadable successful answers', () => {
    it.each([
      ['truncated JSON', '{"status":"IN_QUEUE","request_id":"'],
      ['not JSON at all', '<html><body>OK</body></html>'],
      ['a JSON array', '[]'],
      ['JSON null', 'null'],
      ['JSON without request_id', JSON.stringify({ status: 'IN_QUEUE', queue_position: 0 })],
      ['a non-string request_id', JSON.stringify({ status: 'IN_QUEUE', request_id: 42 })],
      ['a request_id that is not an id', JSON.stringify({ status: 'IN_QUEUE', request_id: '../../admin' })],
    ])('200 with %s on submit → 500 submit_outcome_unknown (a job may exist)', async (_name, text) => {
      faulty.setHandler(json(200, text));
      const res = await submit(gw);
      const body = expectEnvelope(res, 500, 'submit_outcome_unknown');
      expect(body.detail).toContain('usable request_id');
      expectOnePost();
    });

    it('logs the id fal gave in its header when the body has none, so the operator can find the job', async () => {
      const id = randomUUID();
      faulty.setHandler((_req, res) => res.writeHead(200, { 'content-type': 'application/json', 'x-fal-request-id': id }).end(JSON.stringify({ status: 'IN_QUEUE' })));
      const res = await submit(gw, { 'x-request-id': 'header-id-only' });
      expectEnvelope(res, 500, 'submit_outcome_unknown');
      const lines = gw.logs.map((line) => JSON.parse(line) as Record<string, unknown>);
      expect(lines).toContainEqual(expect.objectContaining({ level: 50, upstreamRequestId: id, msg: expect.stringContaining('without a usable request_id') }));
    });

    it('202 status with malformed JSON → 502 upstream_bad_response', async () => {
      const id = await ownedJob();
      faulty.setHandler(json(202, '{"status":"IN_PROG'));
      const res = await call(gw, 'GET', `/v1/requests/${id}/status`);
      expectEnvelope(res, 502, 'upstream_bad_response');
    });
  });

  describe('oversized answers', () => {
    /** A valid submit answer padded to exactly `size` bytes. */
    const padded = (size: number) => {
      const shell = JSON.stringify({ ...queuedBody(randomUUID()), pad: '' });
      return shell.replace('"pad":""', `"pad":"${'x'.repeat(size - shell.length)}"`);
    };

    it('declared content-length above the limit → 502 upstream_response_too_large on a read, 500 on a submit', async () => {
      const id = await ownedJob();
      faulty.setHandler(json(200, padded(MAX_RESPONSE_BYTES + 10_000)));
      const read = expectEnvelope(await call(gw, 'GET', `/v1/requests/${id}`), 502, 'upstream_response_too_large');
      expect(read.detail).toContain(String(MAX_RESPONSE_BYTES));
      faulty.requests.length = 0;
      const res = await submit(gw);
      const body = expectEnvelope(res, 500, 'submit_outcome_unknown');
      expect(body.detail).toContain(String(MAX_RESPONSE_BYTES));
      expectOnePost();
    });

    it('chunked body growing past the limit → 502 upstream_response_too_large (read)', async () => {
      const id = await ownedJob();
      const text = padded(MAX_RESPONSE_BYTES + 10_000);
      faulty.setHandler((_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        for (let at = 0; at < text.length; at += 8_192) res.write(text.slice(at, at + 8_192));
        res.end();
      });
      expectEnvelope(await call(gw, 'GET', `/v1/requests/${id}`), 502, 'upstream_response_too_large');
    });

    it('an answer of exactly the limit is still accepted', async () => {
      const text = padded(MAX_RESPONSE_BYTES);
      expect(Buffer.byteLength(text)).toBe(MAX_RESPONSE_BYTES);
      faulty.setHandler(json(200, text));
      const res = await submit(gw);
      expect(res.status).toBe(200);
      expect(parse(res).status).toBe('IN_QUEUE');
    });
  });

  describe("fal's own error answers", () => {
    it('429 with Retry-After → passed through: same status, body and retry-after', async () => {
      const text = JSON.stringify({ detail: 'Concurrency limit exceeded' });
      faulty.setHandler(json(429, text, { 'retry-after': '7' }));
      const res = await submit(gw);
      expect(res.status).toBe(429);
      expect(res.text).toBe(text);
      expect(res.headers.get('retry-after')).toBe('7');
      expectNoToken(res);
      expectOnePost();
    });

    it.each([500, 502, 503, 504])('%i with fal\'s JSON error → same status, only {detail, error_type}', async (code) => {
      faulty.setHandler(
        json(
          code,
          { ...FAL_5XX, runner: 'gpu-17.internal.fal', trace: 'Traceback (most recent call last): ...' },
          { 'x-fal-error-type': FAL_5XX.error_type, 'x-runner-host': 'gpu-17.internal.fal' },
        ),
      );
      const res = await submit(gw);
      expect(res.status).toBe(code);
      expect(res.headers.get('content-type')).toMatch(/^application\/json/);
      expect(parse(res)).toStrictEqual(FAL_5XX);
      expect(res.text).not.toContain('gpu-17');
      expect(res.headers.get('x-runner-host')).toBeNull();
      expect(res.headers.get('x-fal-error-type')).toBe(FAL_5XX.error_type);
      expectNoToken(res);
      expectOnePost();
    });

    it.each([
      ['runner_disconnected', 'runner_disconnected'],
      [undefined, 'upstream_error'],
      ['not a\ttoken', null],
    ])('a 5xx JSON error without X-Fal-Error-Type (error_type %s) gets the header from its body', async (errorType, header) => {
      faulty.setHandler(json(503, { detail: 'Runner went away', ...(errorType === undefined ? {} : { error_type: errorType }) }));
      const res = await submit(gw);
      expect(res.status).toBe(503);
      expect(parse(res)).toStrictEqual({ detail: 'Runner went away', error_type: errorType ?? 'upstream_error' });
      expect(res.headers.get('x-fal-error-type')).toBe(header);
      // fal said nothing of when to come back: the gateway's 5 s, as for its own 503s.
      expect(res.headers.get('retry-after')).toBe('5');
      expectOnePost();
    });

    it("keeps fal's own Retry-After on a 503, and adds none to another 5xx", async () => {
      faulty.setHandler(json(503, FAL_5XX, { 'retry-after': '30' }));
      const res = await submit(gw);
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('30');
      faulty.setHandler(json(500, FAL_5XX));
      const other = await submit(gw);
      expect(other.status).toBe(500);
      expect(other.headers.get('retry-after')).toBeNull();
    });

    it.each([500, 502, 503, 504])('%i with an HTML body → same status, generic upstream_error envelope', async (code) => {
      faulty.setHandler((_req, res) => {
        res.writeHead(code, { 'content-type': 'text/html' });
        res.end(HTML);
      });
      const res = await submit(gw);
      const body = expectEnvelope(res, code, 'upstream_error');
      expect(res.text).not.toMatch(/<|nginx/i);
      expect(body.detail).toContain(String(code));
      expectOnePost();
    });

    it('422 with a detail array → passed through unchanged', async () => {
      const text = JSON.stringify({
        detail: [{ loc: ['body', 'image_url'], msg: 'Could not download the image', type: 'image_load_error', input: 'x' }],
      });
      faulty.setHandler(json(422, text));
      const res = await submit(gw);
      expect(res.status).toBe(422);
      expect(res.text).toBe(text);
      expect(res.headers.get('content-type')).toMatch(/^application\/json/);
      expectOnePost();
    });

    it('an upstream error echoing the token is relayed with the token redacted', async () => {
      faulty.setHandler(json(503, { detail: `token ${UPSTREAM_TOKEN} is over quota`, error_type: 'runner_scheduling_failure' }));
      const res = await submit(gw);
      expect(res.status).toBe(503);
      expectNoToken(res);
      expect(parse(res).error_type).toBe('runner_scheduling_failure');
    });
  });

  describe('what the gateway sends upstream', () => {
    it('its own credential and fal headers only: never the caller key, cookies or forwarding headers', async () => {
      const id = randomUUID();
      faulty.setHandler(json(200, queuedBody(id)));
      const res = await submit(gw, {
        authorization: `Bearer ${gw.key}`,
        'x-api-key': gw.key,
        cookie: `session=${gw.key}`,
        'x-forwarded-for': '203.0.113.7',
        'x-fal-queue-priority': 'low',
        'x-fal-request-timeout': '30',
      });
      expect(res.status).toBe(200);
      expectOnePost();
      const sent = posts()[0]!;
      expect(sent.url).toBe('/fal-ai/flux-lora/image-to-image');
      expect(sent.headers.authorization).toBe(`Key ${UPSTREAM_TOKEN}`);
      expect(sent.headers.cookie).toBeUndefined();
      expect(sent.headers['x-api-key']).toBeUndefined();
      expect(sent.headers['x-forwarded-for']).toBeUndefined();
      expect(sent.headers['x-fal-queue-priority']).toBe('low');
      expect(sent.headers['x-fal-request-timeout']).toBe('30');
      for (const [name, value] of Object.entries(sent.headers)) expect(`${name}: ${String(value)}`).not.toContain(gw.key);
      expect(JSON.parse(sent.body)).toStrictEqual(SEED_REQUEST);
    });

    it('UPSTREAM_AUTH_SCHEME=Bearer → authorization: Bearer <token>', async () => {
      const bearer = await startGateway(faulty.url, { UPSTREAM_AUTH_SCHEME: 'Bearer' });
      try {
        faulty.setHandler(json(200, queuedBody(randomUUID())));
        const res = await submit(bearer);
        expect(res.status).toBe(200);
        expectOnePost();
        expect(posts()[0]!.headers.authorization).toBe(`Bearer ${UPSTREAM_TOKEN}`);
      } finally {
        await bearer.close();
      }
    });

    it.each(['/proxy/fal', '/proxy/fal/'])('a base URL with a path prefix (%s) is kept; per-request URLs use the app id', async (prefix) => {
      const proxied = await startGateway(`${faulty.url}${prefix}`);
      try {
        const id = randomUUID();
        faulty.setHandler(json(200, queuedBody(id)));
        expect((await submit(proxied)).status).toBe(200);
        faulty.setHandler(json(202, { status: 'IN_QUEUE', request_id: id, queue_position: 0 }));
        expect((await call(proxied, 'GET', `/v1/requests/${id}/status`)).status).toBe(202);
        expect(faulty.requests.map((r) => `${r.method} ${r.url}`)).toEqual([
          'POST /proxy/fal/fal-ai/flux-lora/image-to-image',
          `GET /proxy/fal/fal-ai/flux-lora/requests/${id}/status?logs=0`,
        ]);
      } finally {
        await proxied.close();
      }
    });
  });

  describe('status of an owned job', () => {
    it("replaces the upstream's queue URLs with the gateway's own and keeps every other field", async () => {
      const id = await ownedJob();
      faulty.setHandler(
        json(202, {
          status: 'IN_QUEUE',
          request_id: id,
          queue_position: 3,
          status_url: 'https://evil.example/x',
          response_url: 'https://evil.example/y',
          cancel_url: 'https://evil.example/z',
          foo: 'bar',
        }),
      );
      const res = await call(gw, 'GET', `/v1/requests/${id}/status`);
      expect(res.status).toBe(202);
      expect(parse(res)).toStrictEqual({
        status: 'IN_QUEUE',
        request_id: id,
        queue_position: 3,
        status_url: `${gw.url}/v1/requests/${id}/status`,
        response_url: `${gw.url}/v1/requests/${id}`,
        cancel_url: `${gw.url}/v1/requests/${id}/cancel`,
        foo: 'bar',
      });
      expect(res.text).not.toContain('evil.example');
      expect(faulty.requests.map((r) => `${r.method} ${r.url}`)).toEqual([`GET /fal-ai/flux-lora/requests/${id}/status?logs=0`]);
    });
  });

  describe('a client that leaves before the answer', () => {
    it('still gets the job queued for it on record: one request line (499, aborted, the job id), counted, and the job stays its own', async () => {
      const id = randomUUID();
      // The upstream takes a while; the client gives up first.
      faulty.setHandler((_req, res) => void setTimeout(() => sendJson(res, 200, queuedBody(id)), 150));
      const gone = fetch(`${gw.url}/v1/image-to-image`, {
        method: 'POST',
        headers: { authorization: `Bearer ${gw.key}`, 'content-type': 'application/json', 'x-request-id': 'client-left-1' },
        body: JSON.stringify(SEED_REQUEST),
        signal: AbortSignal.timeout(40),
      });
      await expect(gone).rejects.toThrow();
      const lineOf = () =>
        gw.logs.map((line) => JSON.parse(line) as Record<string, unknown>).filter((line) => line.msg === 'request' && line.clientRequestId === 'client-left-1');
      const deadline = Date.now() + FAST_MS;
      while (lineOf().length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      await new Promise((r) => setTimeout(r, 100));
      expect(lineOf()).toEqual([expect.objectContaining({ method: 'POST', statusCode: 499, aborted: true, requestId: id, tenant: 'team-a' })]);
      expectOnePost();
      const metrics = await call(gw, 'GET', '/metrics');
      expect(metrics.text).toMatch(/fal_gateway_http_requests_total\{route="\/v1\/image-to-image",method="POST",status="499",tenant="team-a"\} 1\n/);
      // The job was recorded as the tenant's, so its status can still be read through the gateway.
      faulty.setHandler(json(202, { status: 'IN_QUEUE', request_id: id, queue_position: 0 }));
      expect((await call(gw, 'GET', `/v1/requests/${id}/status`)).status).toBe(202);
    });

    it('one that resets its connection while sending its body: one request line, 499 and aborted (not a 400 of its own), nothing sent upstream', async () => {
      const before = faulty.requests.length;
      const socket = connect(Number(new URL(gw.url).port), '127.0.0.1');
      socket.on('error', () => undefined);
      // The gateway invites the body (100 Continue) once it has the request's head and its key.
      const invited = new Promise<void>((resolve) => socket.once('data', () => resolve()));
      socket.write(
        `POST /v1/image-to-image HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${gw.key}\r\nContent-Type: application/json\r\n` +
          `X-Request-Id: client-left-2\r\nExpect: 100-continue\r\nContent-Length: 1000\r\n\r\n`,
      );
      const lineOf = () =>
        gw.logs.map((line) => JSON.parse(line) as Record<string, unknown>).filter((line) => line.clientRequestId === 'client-left-2');
      await invited;
      socket.write('{"prompt":');
      await new Promise((r) => setTimeout(r, 50));
      // A reset, as a killed client or a dropped proxy connection gives. (One that only closes its
      // end, FIN, may still read: it gets the 400 for its incomplete request, logged as such.)
      socket.resetAndDestroy();
      await expect.poll(() => lineOf().length, { timeout: FAST_MS }).toBe(1);
      await new Promise((r) => setTimeout(r, 100));
      expect(lineOf()).toEqual([expect.objectContaining({ method: 'POST', statusCode: 499, aborted: true, tenant: 'team-a', msg: 'request' })]);
      expect(faulty.requests.length).toBe(before);
    });
  });

  describe('after all of that', () => {
    it('the gateway is healthy, still serves submits, and never logged the token', async () => {
      const health = await call(gw, 'GET', '/healthz');
      expect(health.status).toBe(200);
      expect(parse(health)).toStrictEqual({ status: 'ok' });
      await ownedJob();
      expect(gw.logs.length).toBeGreaterThan(20);
      for (const line of gw.logs) expect(line).not.toContain(UPSTREAM_TOKEN);
    });
  });
});

describe('every upstream connection busy', () => {
  let faulty: FaultyUpstream;
  let app: GatewayApp;
  let url: string;
  let pool: Agent;
  const key = newKey();

  beforeAll(async () => {
    faulty = await startFaultyUpstream();
    // The gateway's pool has one connection, which the test itself can hold.
    pool = new Agent({ connections: 1 });
    app = await buildApp({
      config: parseConfig({ UPSTREAM_TOKEN, UPSTREAM_BASE_URL: faulty.url, TENANTS_FILE: 'x', LOG_LEVEL: 'silent', UPSTREAM_REQUEST_TIMEOUT_MS: '300' }),
      tenants: [{ id: 'team-a', keyDigests: [digestKey(key)], limits: { submit: GENEROUS, read: GENEROUS } }],
      dispatcher: pool,
    });
    url = await app.listen({ port: 0, host: '127.0.0.1' });
  });
  afterAll(async () => {
    await app.close();
    await pool.close();
    await faulty.close();
  });

  it('a submit that never got a connection is refused as not sent (503, key released), not as a job that may exist', async () => {
    faulty.setHandler((req, res) => {
      const answer = () => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(queuedBody(randomUUID())));
      if (req.url === '/hold') setTimeout(answer, 1_000);
      else answer();
    });
    const held = pool.request({ origin: faulty.url, path: '/hold', method: 'GET' }).then((r) => r.body.text());
    const idempotencyKey = `pool-${randomUUID()}`;
    const send = () =>
      fetch(`${url}/v1/image-to-image`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`, 'idempotency-key': idempotencyKey },
        body: JSON.stringify(SEED_REQUEST),
      });
    const waiting = await send();
    // Its deadline passed while it waited for the connection: nothing was written.
    expect(faulty.requests.filter((r) => r.method === 'POST')).toHaveLength(0);
    expect(waiting.status).toBe(503);
    expect(((await waiting.json()) as { error_type: string }).error_type).toBe('upstream_unavailable');
    await held;
    // Its key was released, not kept with a 500: with the connection free, the retry queues the job.
    const retried = await send();
    expect(retried.status).toBe(200);
    expect(retried.headers.get('idempotent-replayed')).toBeNull();
    expect(faulty.requests.filter((r) => r.method === 'POST')).toHaveLength(1);
  });
});
