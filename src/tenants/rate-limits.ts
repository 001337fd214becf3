import '@fastify/rate-limit';
import { format as formatDuration } from '@lukeed/ms';
import type { FastifyInstance, FastifyRequest, onRequestHookHandler } from 'fastify';
import { errors } from '../errors.js';
import { tenantOf } from './auth.js';
import type { Tenant } from './tenants-file.js';

export type PolicyName = 'submit' | 'read';
export type StoreErrorPolicy = 'open' | 'closed';

const isOwnError = (err: unknown) => typeof (err as { code?: unknown })?.code === 'string' && (err as { code: string }).code.startsWith('FGW_');

/**
 * One limiter per policy, keyed by policy and tenant id (never by IP) and sized by the tenant's
 * own limits, so status, result and cancel draw from one `read` budget, in memory or in Redis.
 * Runs as an onRequest hook after authentication. When the counter store cannot answer, the
 * request goes through (`open`) or gets a 503 (`closed`), and the store's trouble is logged.
 */
export function createPolicyLimiter(app: FastifyInstance, policy: PolicyName, onStoreError: StoreErrorPolicy): onRequestHookHandler {
  const limitsOf = (request: FastifyRequest): Tenant['limits'][PolicyName] => tenantOf(request).limits[policy];
  const limiter = app.rateLimit({
    keyGenerator: (request) => `${policy}:${tenantOf(request).id}`,
    max: (request) => limitsOf(request).max,
    timeWindow: (request) => limitsOf(request).timeWindowMs,
    errorResponseBuilder: (request, context) => {
      const { max, timeWindowMs } = limitsOf(request);
      return new errors.RateLimited(policy, `${max} per ${formatDuration(timeWindowMs, true)}`, context.after);
    },
  });
  return async function rateLimit(this: FastifyInstance, request, reply) {
    try {
      await limiter.call(this, request, reply);
    } catch (err) {
      if (isOwnError(err)) throw err;
      request.log.warn({ err: (err as Error).message, policy, onStoreError }, 'rate-limit store unavailable');
      if (onStoreError === 'closed') throw new errors.RateLimitUnavailable({ cause: err });
    }
  };
}
