import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { JobStore } from '../jobs/job-store.js';

export const HEALTH_PATH = '/healthz';
export const READY_PATH = '/readyz';

const Health = z.object({ status: z.literal('ok') });
const Readiness = z.object({
  status: z.enum(['ready', 'not_ready']),
  checks: z.record(z.string(), z.enum(['ok', 'failing', 'shutting_down'])),
});

/**
 * /healthz: the process is alive (no dependency is checked, so a restart loop is never caused by
 * a dependency). /readyz: it should receive traffic: its store answers and it is not draining.
 */
export function healthRoutes(app: FastifyInstance, deps: { jobs: JobStore; isShuttingDown: () => boolean }): void {
  const api = app.withTypeProvider<ZodTypeProvider>();
  api.get(
    HEALTH_PATH,
    { schema: { tags: ['Operations'], summary: 'Liveness', response: { 200: Health } } },
    async () => ({ status: 'ok' as const }),
  );
  api.get(
    READY_PATH,
    {
      schema: {
        tags: ['Operations'],
        summary: 'Readiness: 503 while the job store is down or the gateway is shutting down',
        response: { 200: Readiness, 503: Readiness },
      },
    },
    async (_request, reply) => {
      const store = await deps.jobs.ready().catch(() => false);
      const draining = deps.isShuttingDown();
      const ready = store && !draining;
      return reply.code(ready ? 200 : 503).send({
        status: ready ? 'ready' : 'not_ready',
        checks: { store: store ? 'ok' : 'failing', server: draining ? 'shutting_down' : 'ok' },
      });
    },
  );
}
