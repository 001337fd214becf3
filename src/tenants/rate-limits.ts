import { format as formatDuration } from '@lukeed/ms';
import '@fastify/rate-limit';
import type { FastifyInstance, onRequestHookHandler } from 'fastify';
import { errors } from '../errors.js';
import { tenantOf } from './auth.js';
import type { Tenant } from './tenants-file.js';

export type PolicyName = 'submit' | 'read';

/**
 * One limiter per policy, keyed by tenant id (never by IP) and sized by the tenant's own limits.
 * Each limiter owns one counter store shared by all the routes it guards, so status, result and
 * cancel draw from the same `read` budget. Runs as an onRequest hook after authentication.
 */
export function createPolicyLimiter(app: FastifyInstance, policy: PolicyName): onRequestHookHandler {
  const limitsOf = (request: Parameters<onRequestHookHandler>[0]): Tenant['limits'][PolicyName] =>
    tenantOf(request).limits[policy];
  return app.rateLimit({
    keyGenerator: (request) => tenantOf(request).id,
    max: (request) => limitsOf(request).max,
    timeWindow: (request) => limitsOf(request).timeWindowMs,
    errorResponseBuilder: (request, context) => {
      const { max, timeWindowMs } = limitsOf(request);
      return new errors.RateLimited(policy, `${max} per ${formatDuration(timeWindowMs, true)}`, context.after);
    },
  });
}
