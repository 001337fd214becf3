import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../src/app.js';
import { parseConfig } from '../src/config.js';
import { parseTenants } from '../src/tenants/tenants-file.js';
import { digestKey } from '../src/tenants/registry.js';
import { TokenIssuer } from '../src/tenants/tokens.js';
import { json, SEED_REQUEST, startStack, upstreamCalls, type Stack } from './helpers.js';

const SECRET = 'test-token-secret-0123456789abcdef-0123456789';
const APP = 'https://app.team-a.example';

describe('browser access: CORS per tenant and short-lived tokens', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({
      env: { TOKEN_SECRET: SECRET },
      tenants: [{ id: 'team-a', allowedOrigins: [APP] }, { id: 'team-b' }],
    });
  });
  afterAll(() => stack.close());

  const mint = (headers: Record<string, string>, body?: unknown) =>
    fetch(`${stack.url}/v1/tokens`, { method: 'POST', headers: { ...json, ...headers }, body: body === undefined ? undefined : JSON.stringify(body) });

  it('answers a preflight from an allowed origin, and refuses one from anywhere else', async () => {
    const ok = await fetch(`${stack.url}/v1/image-to-image`, {
      method: 'OPTIONS',
      headers: { origin: APP, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' },
    });
    expect(ok.status).toBe(204);
    expect(ok.headers.get('access-control-allow-origin')).toBe(APP);
    expect(ok.headers.get('access-control-allow-methods')).toContain('POST');
    expect(ok.headers.get('access-control-allow-headers')).toContain('authorization');
    expect(ok.headers.get('vary')).toContain('Origin');
    for (const path of [`/v1/requests/x/status`, '/fal-ai/flux-lora/requests/x', '/api/fal/proxy']) {
      expect((await fetch(`${stack.url}${path}`, { method: 'OPTIONS', headers: { origin: APP, 'access-control-request-method': 'GET' } })).status).toBe(204);
    }
    const other = await fetch(`${stack.url}/v1/image-to-image`, { method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' } });
    expect(other.status).toBe(403);
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
    expect(((await other.json()) as { error_type: string }).error_type).toBe('origin_not_allowed');
  });

  it('keeps the connection of a preflight open for the request that follows it', async () => {
    const { Agent, request } = await import('undici');
    const agent = new Agent({ connections: 1 });
    try {
      for (let i = 0; i < 3; i++) {
        const preflight = await request(`${stack.url}/api/fal/proxy`, {
          method: 'OPTIONS',
          dispatcher: agent,
          headers: { origin: APP, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type, x-fal-target-url' },
        });
        await preflight.body.text();
        expect(preflight.statusCode).toBe(204);
        expect(preflight.headers.connection).not.toBe('close');
      }
    } finally {
      await agent.close();
    }
  });

  it("serves a tenant's allowed origin with CORS headers, and refuses its other origins and other tenants from it (403)", async () => {
    const allowed = await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-a'), origin: APP }, body: JSON.stringify(SEED_REQUEST) });
    expect(allowed.status).toBe(200);
    expect(allowed.headers.get('access-control-allow-origin')).toBe(APP);
    expect(allowed.headers.get('access-control-expose-headers')).toContain('x-request-id');
    expect(allowed.headers.get('access-control-expose-headers')).toContain('ratelimit-policy');
    // fal's client reads these to tell errors apart (a start timeout is never retried).
    expect(allowed.headers.get('access-control-expose-headers')).toContain('x-fal-error-type');
    expect(allowed.headers.get('access-control-expose-headers')).toContain('x-fal-request-timeout-type');

    await stack.app.whenIdle();

    const before = upstreamCalls(stack).length;
    // The refusal is readable by a page whose origin passed the preflight (some tenant allows it), never by another.
    for (const [tenant, origin, readableBy] of [
      ['team-a', 'https://evil.example', null],
      ['team-b', APP, APP],
    ]) {
      const res = await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer(tenant!), origin: origin! }, body: JSON.stringify(SEED_REQUEST) });
      expect(res.status).toBe(403);
      expect(res.headers.get('access-control-allow-origin')).toBe(readableBy);
      expect(((await res.json()) as { error_type: string }).error_type).toBe('origin_not_allowed');
    }
    await stack.app.whenIdle();
    expect(upstreamCalls(stack).length).toBe(before);
  });

  it('lets a page read the 404 of a mistyped route, when its origin is one a tenant allows', async () => {
    const res = await fetch(`${stack.url}/v1/image-to-imag`, { headers: { ...stack.bearer('team-a'), origin: APP } });
    expect(res.status).toBe(404);
    expect(res.headers.get('access-control-allow-origin')).toBe(APP);
    expect(((await res.json()) as { error_type: string }).error_type).toBe('route_not_found');
    expect(res.headers.get('x-fal-error-type')).toBe('route_not_found');
    const elsewhere = await fetch(`${stack.url}/v1/image-to-imag`, { headers: { origin: 'https://evil.example' } });
    expect(elsewhere.status).toBe(404);
    expect(elsewhere.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('lets same-origin pages and server-side callers (no Origin) through, without CORS headers', async () => {
    const same = await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-b'), origin: stack.url }, body: JSON.stringify(SEED_REQUEST) });
    expect(same.status).toBe(200);
    expect(same.headers.get('access-control-allow-origin')).toBeNull();
    const server = await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-b') }, body: JSON.stringify(SEED_REQUEST) });
    expect(server.status).toBe(200);
    expect(server.headers.get('access-control-allow-origin')).toBeNull();
    // The docs behind a proxy that terminates TLS: the page is https, the gateway sees http.
    const tls = await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-b'), origin: stack.url.replace('http:', 'https:') }, body: JSON.stringify(SEED_REQUEST) });
    expect(tls.status).toBe(200);
    // Another host on the same port is another site.
    const other = await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-b'), origin: stack.url.replace('127.0.0.1', 'localhost') }, body: JSON.stringify(SEED_REQUEST) });
    expect(other.status).toBe(403);
  });

  it('treats a page opened under another name than PUBLIC_BASE_URL as the gateway\'s own', async () => {
    const named = await startStack({ env: { PUBLIC_BASE_URL: 'https://gateway.example.com' }, tenants: [{ id: 'team-b' }] });
    try {
      const submit = (origin: string) =>
        fetch(`${named.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...named.bearer('team-b'), origin }, body: JSON.stringify(SEED_REQUEST) });
      expect((await submit('https://gateway.example.com')).status).toBe(200);
      // Opened at the address it listens on (the request's Host), not at PUBLIC_BASE_URL.
      expect((await submit(named.url)).status).toBe(200);
      expect((await submit('https://elsewhere.example.com')).status).toBe(403);
    } finally {
      await named.close();
    }
  });

  it("lets a page send its own x-request-id and trace context (the preflight allows them)", async () => {
    const res = await fetch(`${stack.url}/v1/image-to-image`, {
      method: 'OPTIONS',
      headers: { origin: APP, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type, x-request-id, traceparent' },
    });
    expect(res.status).toBe(204);
    const allowed = (res.headers.get('access-control-allow-headers') ?? '').split(/,\s*/);
    for (const header of ['authorization', 'content-type', 'x-request-id', 'traceparent', 'tracestate']) expect(allowed).toContain(header);
  });

  it("mints a token with a tenant key that then acts as the tenant: its jobs, its limits, its origins", async () => {
    const res = await mint(stack.bearer('team-a'), { ttl_seconds: 600 });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { token: string; token_type: string; expires_in: number; expires_at: string };
    expect(body.token_type).toBe('Bearer');
    expect(body.expires_in).toBe(600);
    expect(Date.parse(body.expires_at) - Date.now()).toBeGreaterThan(590_000);
    const browser = { authorization: `Bearer ${body.token}`, origin: APP };

    const submitted = await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...browser }, body: JSON.stringify(SEED_REQUEST) });
    expect(submitted.status).toBe(200);
    expect(submitted.headers.get('access-control-allow-origin')).toBe(APP);
    const job = (await submitted.json()) as { status_url: string };
    // The job is the tenant's: readable with its key, invisible to another tenant.
    expect((await fetch(job.status_url, { headers: stack.bearer('team-a') })).status).toBeLessThan(300);
    expect((await fetch(job.status_url, { headers: stack.bearer('team-b') })).status).toBe(404);
    // The token cannot mint more tokens.
    const again = await mint(browser);
    expect(again.status).toBe(403);
    expect(((await again.json()) as { error_type: string }).error_type).toBe('token_cannot_mint');
    // Its origin rules are the tenant's.
    expect((await fetch(job.status_url, { headers: { authorization: browser.authorization, origin: 'https://evil.example' } })).status).toBe(403);
  });

  it('defaults to 15 minutes and refuses lifetimes outside 60 s to 1 h', async () => {
    const res = await mint(stack.bearer('team-a'));
    expect(((await res.json()) as { expires_in: number }).expires_in).toBe(900);
    for (const ttl of [59, 3_601, 1.5]) {
      const bad = await mint(stack.bearer('team-a'), { ttl_seconds: ttl });
      expect(bad.status).toBe(422);
    }
  });

  it('refuses expired, forged, tampered and foreign-secret tokens with a 401; only our own expired token is told so', async () => {
    const keyA = digestKey(stack.keys['team-a']!);
    const longAgo = new TokenIssuer(SECRET, () => Date.now() - 2 * 3_600_000);
    const expired = (await longAgo.issue('team-a', keyA, 60)).token;
    const foreign = (await new TokenIssuer('another-secret-another-secret-another-secret').issue('team-a', keyA, 600)).token;
    const good = (await new TokenIssuer(SECRET).issue('team-a', keyA, 600)).token;
    const [header, payload, signature] = good.split('.');
    const elevated = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(payload!, 'base64url').toString()), sub: 'team-b' })).toString('base64url');
    const unsigned = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${payload}.`;
    const unknownTenant = (await new TokenIssuer(SECRET).issue('team-gone', keyA, 600)).token;
    const expiredForeign = (await new TokenIssuer('another-secret-another-secret-another-secret', () => Date.now() - 2 * 3_600_000).issue('team-a', keyA, 60)).token;
    // Signed for this deployment by a version from before tokens named their key.
    const unbound = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(payload!, 'base64url').toString()), kb: undefined })).toString('base64url');
    const detailOf = async (token: string) => {
      const res = await fetch(`${stack.url}/v1/requests/x/status`, { headers: { authorization: `Bearer ${token}` } });
      expect(res.status).toBe(401);
      const body = (await res.json()) as { error_type: string; detail: string };
      expect(body.error_type).toBe('unauthorized');
      return body.detail;
    };
    expect(await detailOf(expired)).toBe('The browser token has expired: get a new one (POST /v1/tokens) and retry');
    // Anything not signed for this deployment learns nothing, expired or not.
    const { SignJWT } = await import('jose');
    const unboundSigned = await new SignJWT(JSON.parse(Buffer.from(unbound, 'base64url').toString()) as Record<string, unknown>)
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .sign(new TextEncoder().encode(SECRET));
    for (const token of [foreign, expiredForeign, `${header}.${elevated}.${signature}`, unsigned, unknownTenant]) {
      expect(await detailOf(token)).toMatch(/^A valid API key is required/);
    }
    // A page on an allowed origin can read that its token expired (and renew it); other origins cannot.
    const fromApp = await fetch(`${stack.url}/v1/requests/x/status`, { headers: { authorization: `Bearer ${expired}`, origin: APP } });
    expect(fromApp.status).toBe(401);
    expect(fromApp.headers.get('access-control-allow-origin')).toBe(APP);
    expect(fromApp.headers.get('access-control-expose-headers')).toContain('x-request-id');
    const fromElsewhere = await fetch(`${stack.url}/v1/requests/x/status`, { headers: { authorization: `Bearer ${expired}`, origin: 'https://evil.example' } });
    expect(fromElsewhere.status).toBe(401);
    expect(fromElsewhere.headers.get('access-control-allow-origin')).toBeNull();
    expect((await fetch(`${stack.url}/v1/requests/x/status`, { headers: { authorization: `Bearer ${good}` } })).status).toBe(404);
    // A token minted before the upgrade (no key named in it) is taken until it expires: pages keep working through a deploy.
    expect((await fetch(`${stack.url}/v1/requests/x/status`, { headers: { authorization: `Bearer ${unboundSigned}` } })).status).toBe(404);
  });

  it("stops a disabled tenant's tokens, and another deployment's tokens", async () => {
    const token = (await new TokenIssuer(SECRET).issue('team-a', digestKey(stack.keys['team-a']!), 600)).token;
    const limits = { submit: { max: 10, timeWindowMs: 60_000 }, read: { max: 10, timeWindowMs: 60_000 } };
    // team-a's keys were all removed from the tenants file: the tenant is disabled.
    const disabled = await buildApp({
      config: parseConfig({ UPSTREAM_TOKEN: 'x', TENANTS_FILE: 'x', TOKEN_SECRET: SECRET, LOG_LEVEL: 'silent' }),
      tenants: [{ id: 'team-a', keyDigests: [], limits }],
    });
    // A token from before tokens named their key stops too.
    const { SignJWT } = await import('jose');
    const unbound = await new SignJWT({ scope: 'browser' })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setSubject('team-a')
      .setAudience('fal-gateway')
      .setExpirationTime('10m')
      .sign(new TextEncoder().encode(SECRET));
    try {
      for (const stopped of [token, unbound]) {
        const res = await disabled.inject({ url: '/v1/requests/x/status', headers: { authorization: `Bearer ${stopped}` } });
        expect(res.statusCode).toBe(401);
        expect((res.json() as { detail: string }).detail).toMatch(/^The key that issued this browser token has been revoked/);
      }
    } finally {
      await disabled.close();
    }
    // The same secret, but a deployment with another PUBLIC_BASE_URL: another audience.
    const elsewhere = await startStack({ env: { TOKEN_SECRET: SECRET, PUBLIC_BASE_URL: 'https://other.example.com' } });
    try {
      expect((await fetch(`${elsewhere.url}/v1/requests/x/status`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(401);
    } finally {
      await elsewhere.close();
    }
  });

  it('answers 501 when TOKEN_SECRET is not set', async () => {
    const plain = await startStack();
    try {
      const res = await fetch(`${plain.url}/v1/tokens`, { method: 'POST', headers: { ...json, ...plain.bearer('team-a') }, body: '{}' });
      expect(res.status).toBe(501);
      expect(((await res.json()) as { error_type: string }).error_type).toBe('tokens_disabled');
      // A feature turned off is not a failure: its request line says 501, and nothing is logged as an error.
      const lines = plain.logs.map((line) => JSON.parse(line) as { level: number; msg: string; statusCode?: number });
      expect(lines.filter((line) => line.level >= 50)).toEqual([]);
      expect(lines.some((line) => line.msg === 'request' && line.statusCode === 501)).toBe(true);
    } finally {
      await plain.close();
    }
  });

  it('reads allowedOrigins from the tenants file and rejects anything but an origin', () => {
    expect(parseTenants({ tenants: [{ id: 'a', keys: [], allowedOrigins: ['https://app.example.com', 'http://localhost:5173'] }] })[0]!.allowedOrigins).toHaveLength(2);
    for (const bad of ['https://app.example.com/', 'https://app.example.com/path', '*', 'app.example.com']) {
      expect(() => parseTenants({ tenants: [{ id: 'a', keys: [], allowedOrigins: [bad] }] }), bad).toThrow(/must be an origin/);
    }
  });
});
