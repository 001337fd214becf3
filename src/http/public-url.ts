import type { FastifyRequest } from 'fastify';
import { errors } from '../errors.js';
import { APP_ID } from '../model.js';

/**
 * A host name (underscores too, as container networks use them), IPv4 or bracketed IPv6 address,
 * with an optional port: what a Host header may hold.
 */
const HOST = /^(?:[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

/**
 * The origin callers reach the gateway on, for rewritten queue URLs: PUBLIC_BASE_URL when set,
 * else the request's own protocol and host (Fastify honours X-Forwarded-* only with TRUST_PROXY).
 * A host that is not one (quotes, spaces, slashes) never becomes part of a URL: 400.
 */
export function publicBaseUrl(request: FastifyRequest, configured: string | undefined): string {
  if (configured !== undefined) return configured;
  const host = request.host;
  if (!HOST.test(host)) throw new errors.BadRequest('The Host header does not name a host; the operator can set PUBLIC_BASE_URL');
  // With TRUST_PROXY the scheme comes from X-Forwarded-Proto: anything but http or https is no scheme.
  // Schemes are case-insensitive: HTTPS is https.
  const protocol = request.protocol.toLowerCase();
  if (protocol !== 'http' && protocol !== 'https') {
    throw new errors.BadRequest('X-Forwarded-Proto must be http or https; the operator can set PUBLIC_BASE_URL');
  }
  return `${protocol}://${host}`;
}

const FAL_ROUTES = `/${APP_ID}`;

/**
 * Where the queue URLs in an answer point: the jobs under the public origin, on the routes the
 * request came in on. A call of fal's paths (directly or through fal's proxy path) gets fal's
 * shape, `{origin}/fal-ai/flux-lora/requests/{id}`, as fal's own answers have it; a call of the
 * gateway's own API, `{origin}/v1/requests/{id}`. Both serve the same jobs.
 */
export function queueUrlBase(request: FastifyRequest, configured: string | undefined): string {
  const origin = publicBaseUrl(request, configured);
  return request.routeOptions.url?.startsWith(FAL_ROUTES) ? `${origin}${FAL_ROUTES}/requests` : `${origin}/v1/requests`;
}
