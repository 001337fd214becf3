import type { FastifyInstance, FastifyRequest } from 'fastify';
import { errors } from '../errors.js';
import type { TenantRegistry } from './registry.js';
import type { Tenant } from './tenants-file.js';

declare module 'fastify' {
  interface FastifyRequest {
    tenant: Tenant | null;
  }
}

const SCHEME = /^(?:Bearer|Key)[ \t]+([^\s]+)[ \t]*$/i;

/** The caller's key from `Authorization: Bearer|Key <key>` or `x-api-key: <key>`. */
export function presentedKey(headers: FastifyRequest['headers']): string | undefined {
  const authorization = headers.authorization;
  if (typeof authorization === 'string') {
    const match = SCHEME.exec(authorization);
    if (match?.[1]) return match[1];
  }
  const apiKey = headers['x-api-key'];
  if (typeof apiKey === 'string' && apiKey.trim() !== '') return apiKey.trim();
  return undefined;
}

/** The authenticated tenant of a request on a tenant route. */
export function tenantOf(request: FastifyRequest): Tenant {
  if (!request.tenant) throw new errors.Unauthorized();
  return request.tenant;
}

/**
 * Authenticates every route of the encapsulating plugin. Runs first (onRequest), so nothing
 * else (rate limits, body parsing, validation) is spent on unauthenticated callers.
 */
export function registerAuth(app: FastifyInstance, registry: () => TenantRegistry): void {
  if (!app.hasRequestDecorator('tenant')) app.decorateRequest('tenant', null);
  app.addHook('onRequest', async (request, reply) => {
    const key = presentedKey(request.headers);
    const tenant = key === undefined ? undefined : registry().findByKey(key);
    if (!tenant) {
      reply.header('www-authenticate', 'Bearer realm="fal-gateway"');
      throw new errors.Unauthorized();
    }
    request.tenant = tenant;
    request.log = request.log.child({ tenant: tenant.id });
  });
}
