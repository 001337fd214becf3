import type { FastifyRequest } from 'fastify';

/**
 * The origin callers reach the gateway on, for rewritten queue URLs: PUBLIC_BASE_URL when set,
 * else the request's own protocol and host (Fastify honours X-Forwarded-* only with TRUST_PROXY).
 */
export function publicBaseUrl(request: FastifyRequest, configured: string | undefined): string {
  return configured ?? `${request.protocol}://${request.host}`;
}
