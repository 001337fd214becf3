import '@fastify/rate-limit';
import { format as formatDuration } from '@lukeed/ms';
import type { FastifyInstance, FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify';
import { errors } from '../errors.js';
import { tenantOf } from './auth.js';
import { reportPolicy } from './ratelimit-fields.js';
import type { Tenant } from './tenants-file.js';
import { isConnectionFailure, LogSampler, OUTAGE_LOG_INTERVAL_MS } from '../log-sampler.js';

export type PolicyName = 'submit' | 'read';
export type StoreErrorPolicy = 'open' | 'closed';

declare module 'fastify' {
  interface FastifyRequest {
    /**
     * The counter store failed to answer for this request (and `open` let it through). With Redis
     * that is the store jobs are recorded in too: a submit then queues nothing it could not record.
     */
    rateLimitStoreFailed: boolean;
  }
}

/** Declares the request field above (on the root instance, before any route). */
export function decorateRateLimitState(app: FastifyInstance): void {
  if (!app.hasRequestDecorator('rateLimitStoreFailed')) app.decorateRequest('rateLimitStoreFailed', false);
}

const isOwnError = (err: unknown) => typeof (err as { code?: unknown })?.code === 'string' && (err as { code: string }).code.startsWith('FGW_');

/**
 * One limiter per policy, keyed by policy and tenant id (never by IP) and sized by the tenant's
 * own limits, so status, result and cancel draw from one `read` budget, in memory or in Redis.
 * Runs as an onRequest hook after authentication. When the counter store cannot answer, the
 * request goes through (`open`) or gets a 503 (`closed`), and the store's trouble is logged.
 * Rejections and store failures are counted in `app.metrics`.
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
  // The same state in the IETF RateLimit fields, read back from the x-ratelimit-* headers just set.
  const report = (request: FastifyRequest, reply: FastifyReply) => {
    const remaining = Number(reply.getHeader('x-ratelimit-remaining'));
    const reset = Number(reply.getHeader('x-ratelimit-reset'));
    if (!Number.isFinite(remaining)) return;
    const { max, timeWindowMs } = limitsOf(request);
    reportPolicy(request, {
      name: policy,
      quota: max,
      remaining,
      windowSeconds: Math.ceil(timeWindowMs / 1000),
      ...(Number.isFinite(reset) ? { resetSeconds: reset } : {}),
    });
  };
  const storeErrorLines = new LogSampler(OUTAGE_LOG_INTERVAL_MS);
  return async function rateLimit(this: FastifyInstance, request, reply) {
    try {
      await limiter.call(this, request, reply);
      report(request, reply);
    } catch (err) {
      if (isOwnError(err)) {
        report(request, reply);
        if ((err as { code: string }).code === 'FGW_RATE_LIMITED') app.metrics.rejected(tenantOf(request).id, policy);
        throw err;
      }
      app.metrics.storeError('rate_limit', 'incr');
      request.rateLimitStoreFailed = true;
      // Once per interval, not per request, while the store's connection is down (every request
      // fails here then); any other failure (a script error, say) each time.
      const line = isConnectionFailure(err) ? storeErrorLines.take(policy) : { log: true as const, suppressed: 0 };
      if (line.log) {
        request.log.warn(
          { err: (err as Error).message, policy, onStoreError, ...(line.suppressed > 0 ? { suppressed: line.suppressed } : {}) },
          `rate-limit store unavailable (logged at most every ${OUTAGE_LOG_INTERVAL_MS / 1000} s)`,
        );
      }
      if (onStoreError === 'closed') throw new errors.RateLimitUnavailable({ cause: err });
    }
  };
}
