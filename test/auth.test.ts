import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { json, SEED_REQUEST, startStack, upstreamCalls, UPSTREAM_TOKEN, type Stack } from './helpers.js';

describe('authentication and tenant isolation', () => {
  let stack: Stack;
  let jobOfA: { request_id: string; status_url: string; response_url: string; cancel_url: string };

  beforeAll(async () => {
    stack = await startStack();
    const res = await fetch(`${stack.url}/v1/image-to-image`, {
      method: 'POST',
      headers: { ...json, ...stack.bearer('team-a') },
      body: JSON.stringify(SEED_REQUEST),
    });
    jobOfA = (await res.json()) as typeof jobOfA;
  });
  afterAll(() => stack.close());

  const unauthenticated: Array<[string, Record<string, string>]> = [
    ['no credentials', {}],
    ['an unknown bearer key', { authorization: 'Bearer fgw_unknown' }],
    ['an unknown x-api-key', { 'x-api-key': 'fgw_unknown' }],
    ['an unsupported scheme', { authorization: 'Basic dXNlcjpwYXNz' }],
    ['a scheme without a key', { authorization: 'Bearer ' }],
    ['the upstream token itself', { authorization: `Key ${UPSTREAM_TOKEN}` }],
  ];

  it.each(unauthenticated)('401s %s on every tenant route without calling upstream', async (_name, headers) => {
    await stack.app.whenIdle();
    const before = upstreamCalls(stack).length;
    const id = jobOfA.request_id;
    const calls: Array<[string, string, string?]> = [
      ['POST', '/v1/image-to-image', JSON.stringify(SEED_REQUEST)],
      ['POST', '/fal-ai/flux-lora/image-to-image', JSON.stringify(SEED_REQUEST)],
      ['GET', `/v1/requests/${id}/status`],
      ['GET', `/v1/requests/${id}`],
      ['PUT', `/v1/requests/${id}/cancel`],
      ['GET', `/fal-ai/flux-lora/requests/${id}/status`],
    ];
    for (const [method, path, body] of calls) {
      const res = await fetch(`${stack.url}${path}`, { method, headers: { ...json, ...headers }, body });
      expect(res.status, `${method} ${path}`).toBe(401);
      expect(res.headers.get('www-authenticate')).toContain('Bearer');
      const payload = (await res.json()) as { detail: string; error_type: string };
      expect(payload.error_type).toBe('unauthorized');
      expect(payload.detail).toContain('Bearer <key>');
    }
    await stack.app.whenIdle();
    expect(upstreamCalls(stack).length).toBe(before);
  });

  it('says what is wrong with an Authorization header that holds no key, without repeating the key', async () => {
    const key = stack.keys['team-a']!;
    const cases: Array<[string, RegExp]> = [
      // Swagger UI's bearer field given "Bearer <key>": it adds its own scheme.
      [`Bearer Bearer ${key}`, /names the scheme twice \(Bearer Bearer <key>\).*enter the key alone/],
      // Swagger UI's fal field (or a hand-written header) given the key alone.
      [key, /holds no scheme before the key/],
      [`Key`, /names the scheme Key but holds no key/],
      ['Basic dXNlcjpwYXNz', /its scheme is Basic/],
      [`Key ${key} ${key}`, /more than one value after the scheme/],
      [`Secret${key} ${key}`, /no scheme this gateway knows/],
    ];
    for (const [authorization, problem] of cases) {
      const res = await fetch(`${stack.url}/v1/requests/${jobOfA.request_id}/status`, { headers: { authorization } });
      expect(res.status, authorization).toBe(401);
      const body = (await res.json()) as { detail: string; error_type: string };
      expect(body.error_type).toBe('unauthorized');
      expect(body.detail, authorization).toMatch(/^The Authorization header must read "Bearer <key>" or "Key <key>": /);
      expect(body.detail, authorization).toMatch(problem);
      expect(body.detail).not.toContain(key);
      expect(body.detail).not.toContain('dXNlcjpwYXNz');
    }
    // A well-formed header with a key no tenant holds keeps the general answer.
    const unknown = await fetch(`${stack.url}/v1/requests/${jobOfA.request_id}/status`, { headers: { authorization: 'Bearer fgw_unknown' } });
    expect(((await unknown.json()) as { detail: string }).detail).toMatch(/^A valid API key is required/);
    // And a usable x-api-key beside a malformed Authorization header is enough.
    const beside = await fetch(`${stack.url}/v1/requests/${jobOfA.request_id}/status`, { headers: { authorization: key, 'x-api-key': key } });
    expect([200, 202]).toContain(beside.status);
  });

  it('authenticates before checking the body: garbage without a key is 401, not 400', async () => {
    const res = await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: json, body: '{not json' });
    expect(res.status).toBe(401);
  });

  it("hides another tenant's job: status, result and cancel are 404 without an upstream call", async () => {
    await stack.app.whenIdle();
    const before = upstreamCalls(stack).length;
    const notFound = { detail: 'Request not found', error_type: 'request_not_found' };
    for (const [method, url] of [
      ['GET', jobOfA.status_url],
      ['GET', jobOfA.response_url],
      ['PUT', jobOfA.cancel_url],
      ['GET', `${stack.url}/fal-ai/flux-lora/requests/${jobOfA.request_id}`],
      ['PUT', `${stack.url}/fal-ai/flux-lora/requests/${jobOfA.request_id}/cancel`],
    ] as const) {
      const res = await fetch(url, { method, headers: stack.bearer('team-b') });
      expect(res.status, `${method} ${url}`).toBe(404);
      expect(res.headers.get('x-fal-error-type')).toBe('request_not_found');
      // A cancel answers as fal does for a request it does not know ({"status": "NOT_FOUND"}), and with the envelope.
      expect(await res.json()).toEqual(method === 'PUT' ? { status: 'NOT_FOUND', ...notFound } : notFound);
    }
    await stack.app.whenIdle();
    expect(upstreamCalls(stack).length).toBe(before);
    // The owner still sees it, and the other tenant's failed cancel did nothing.
    const own = await fetch(jobOfA.status_url, { headers: stack.bearer('team-a') });
    expect([200, 202]).toContain(own.status);
    expect(((await own.json()) as { error_type?: string }).error_type).toBeUndefined();
  });

  it('answers an unknown request id exactly like a foreign one', async () => {
    await stack.app.whenIdle();
    const before = upstreamCalls(stack).length;
    const res = await fetch(`${stack.url}/v1/requests/00000000-0000-4000-8000-000000000000/status`, { headers: stack.bearer('team-a') });
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ detail: 'Request not found', error_type: 'request_not_found' });
    await stack.app.whenIdle();
    expect(upstreamCalls(stack).length).toBe(before);
  });

  it('rejects a malformed request id with 422 before any lookup', async () => {
    const res = await fetch(`${stack.url}/v1/requests/${encodeURIComponent('../../etc')}/status`, { headers: stack.bearer('team-a') });
    expect(res.status).toBe(422);
    const body = (await res.json()) as { detail: Array<{ loc: unknown[] }> };
    expect(body.detail[0]!.loc).toEqual(['path', 'request_id']);
  });
});
