import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { errors } from '../errors.js';
import type { TenantRegistry } from '../tenants/registry.js';
import type { Tenant } from '../tenants/tenants-file.js';
import { publicBaseUrl } from './public-url.js';

/**
 * CORS, per tenant. A preflight carries no credentials, so it is answered for any origin some
 * tenant allows; the request that follows is checked against its own tenant's `allowedOrigins`
 * and refused (403) from any other origin. Same-origin pages (the docs, the playground) always
 * pass. Without `allowedOrigins` anywhere, no CORS header is ever sent.
 */
const ALLOW_HEADERS = 'authorization, content-type, x-api-key, idempotency-key, x-request-id, traceparent, tracestate, x-fal-target-url, x-fal-queue-priority, x-fal-runner-hint, x-fal-request-timeout, x-fal-object-lifecycle-preference, x-fal-store-io, x-fal-no-retry';
const EXPOSE_HEADERS =
  'x-request-id, retry-after, x-ratelimit-limit, x-ratelimit-remaining, x-ratelimit-reset, ratelimit, ratelimit-policy, idempotent-replayed, x-fal-request-id, x-fal-error-type, x-fal-request-timeout-type';

/**
 * A page the gateway served itself (the docs, the playground): its origin is PUBLIC_BASE_URL's,
 * or names the host the request was sent to, whatever the scheme (a proxy in front may terminate
 * TLS) and whatever name the page was opened under. Browsers send Origin on same-origin POST and
 * PUT too, so anything narrower refuses the docs' own "Try it out".
 */
function isSameOrigin(request: FastifyRequest, origin: string, configured: string | undefined): boolean {
  let page: URL;
  try {
    page = new URL(origin);
  } catch {
    return false;
  }
  if (configured !== undefined && new URL(configured).origin === page.origin) return true;
  try {
    return new URL(`${page.protocol}//${publicHost(request)}`).host === page.host;
  } catch {
    return false;
  }
}

/** The host the request names (Host, or X-Forwarded-Host with TRUST_PROXY), checked as publicBaseUrl checks it. */
function publicHost(request: FastifyRequest): string {
  return new URL(publicBaseUrl(request, undefined)).host;
}

function allowCors(reply: FastifyReply, origin: string): void {
  reply.header('access-control-allow-origin', origin).header('access-control-expose-headers', EXPOSE_HEADERS).header('vary', 'Origin');
}

/** Checks an authenticated request's Origin against its tenant; adds the CORS headers when allowed. */
export function checkOrigin(request: FastifyRequest, reply: FastifyReply, tenant: Tenant, publicBase: string | undefined, registry: TenantRegistry): void {
  const origin = request.headers.origin;
  if (typeof origin !== 'string' || isSameOrigin(request, origin, publicBase)) return;
  if (!tenant.allowedOrigins?.includes(origin)) {
    corsForRefusal(request, reply, registry);
    throw new errors.OriginNotAllowed(origin);
  }
  allowCors(reply, origin);
}

/**
 * A refusal (401, 403) answered to a browser origin that passed the preflight (some tenant allows
 * it) carries the CORS headers, so the page can read why (an expired token, a wrong origin)
 * instead of seeing a bare network error. It grants nothing: the request was refused.
 */
export function corsForRefusal(request: FastifyRequest, reply: FastifyReply, registry: TenantRegistry): void {
  const origin = request.headers.origin;
  if (typeof origin === 'string' && registry.allowsOrigin(origin)) allowCors(reply, origin);
}

/** OPTIONS on every tenant route: the preflight answer. */
export function registerPreflight(app: FastifyInstance, paths: string[], registry: () => TenantRegistry, publicBase: string | undefined): void {
  const handler = async (request: FastifyRequest, reply: FastifyReply) => {
    const origin = request.headers.origin;
    const allowed = typeof origin === 'string' && (isSameOrigin(request, origin, publicBase) || registry().allowsOrigin(origin));
    if (!allowed) throw new errors.OriginNotAllowed(typeof origin === 'string' ? origin : '(none)');
    return reply
      .code(204)
      .header('access-control-allow-origin', origin)
      .header('access-control-allow-methods', 'GET, POST, PUT, OPTIONS')
      .header('access-control-allow-headers', ALLOW_HEADERS)
      .header('access-control-max-age', '600')
      .header('vary', 'Origin')
      .send();
  };
  for (const path of paths) app.options(path, { schema: { hide: true } }, handler);
}
