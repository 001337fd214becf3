import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { errors } from '../errors.js';
import { bearerMatches, digestSecret } from '../http/bearer.js';
import type { GatewayMetrics } from '../metrics.js';
import { ErrorEnvelope } from '../schemas/error.js';

/** Where Prometheus scrapes the gateway; requests to it are not themselves counted. */
export const METRICS_PATH = '/metrics';

/**
 * GET /metrics: the Prometheus text exposition of the gateway's own registry. Outside the tenant
 * scope (no tenant key); with METRICS_TOKEN set, only a scraper presenting that token is served.
 */
export function metricsRoutes(app: FastifyInstance, deps: { metrics: GatewayMetrics; token: string | undefined }): void {
  const expected = deps.token === undefined ? undefined : digestSecret(deps.token);
  app.withTypeProvider<ZodTypeProvider>().get(
    METRICS_PATH,
    {
      schema: {
        operationId: 'getMetrics',
        tags: ['Operations'],
        summary: 'Prometheus metrics',
        description:
          'Prometheus text exposition format. When the operator sets METRICS_TOKEN, send `Authorization: Bearer <METRICS_TOKEN>`; tenant keys are not accepted.',
        response: {
          200: {
            description: 'Prometheus text exposition format (version 0.0.4)',
            content: { 'text/plain': { schema: z.string() } },
          },
          401: ErrorEnvelope.describe('METRICS_TOKEN is set and the request did not present it'),
        },
      },
    },
    async (request, reply) => {
      if (expected && !bearerMatches(request.headers.authorization, expected)) {
        reply.header('www-authenticate', 'Bearer realm="fal-gateway-metrics"');
        throw new errors.MetricsUnauthorized();
      }
      const text = await deps.metrics.metricsText();
      return reply.header('cache-control', 'no-store').type(deps.metrics.contentType).send(text);
    },
  );
}
