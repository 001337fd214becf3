import type { FastifyInstance } from 'fastify';
import { APP_ID } from '../model.js';
import type { SimulatorContext } from './context.js';
import { statusResponse, wantsLogs } from './status.js';

/**
 * GET .../status/stream: server-sent events, each `data:` line a status object, with a comment
 * keep-alive every 15 s, closed after the COMPLETED event (fal's behaviour). Job state is derived
 * from the (possibly injected) clock, so the stream re-reads it on a short real-time timer and
 * sends an event whenever the status object changes.
 */

const KEEP_ALIVE_MS = 15_000;

export function registerStreamRoute(app: FastifyInstance, ctx: SimulatorContext): void {
  const open = new Set<() => void>();
  const pollMs = Math.max(10, ctx.options.streamPollMs ?? 100);

  // Hijacked responses are invisible to Fastify's close; end them so close() does not hang.
  app.addHook('preClose', async () => {
    for (const stop of [...open]) stop();
  });

  app.get<{ Params: { id: string } }>(`/${APP_ID}/requests/:id/status/stream`, async (request, reply) => {
    const job = ctx.store.get(request.params.id);
    if (!job) return reply.code(404).send({ detail: 'Request not found' });
    const base = ctx.urlBase(request);
    const logs = wantsLogs(request);

    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-fal-request-id': job.id,
    });

    let last = '';
    let lastWrite = Date.now();
    const tick = () => {
      const { body } = statusResponse(ctx, job, base, logs);
      const data = JSON.stringify(body);
      if (data !== last) {
        last = data;
        lastWrite = Date.now();
        res.write(`data: ${data}\n\n`);
      } else if (Date.now() - lastWrite >= KEEP_ALIVE_MS) {
        lastWrite = Date.now();
        res.write(': keep-alive\n\n');
      }
      if (body.status === 'COMPLETED') stop();
    };
    const timer = setInterval(tick, pollMs);
    const stop = () => {
      clearInterval(timer);
      open.delete(stop);
      if (!res.writableEnded) res.end();
    };
    open.add(stop);
    res.on('close', stop); // client went away
    tick();
  });
}
