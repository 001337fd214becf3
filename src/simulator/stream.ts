import type { FastifyInstance } from 'fastify';
import { APP_ID } from '../model.js';
import type { SimulatorContext } from './context.js';
import { statusResponse, wantsLogs } from './status.js';

/**
 * GET .../status/stream: server-sent events, each `data:` line a status object, with a comment
 * keep-alive every 15 s, closed after the COMPLETED event (fal's behaviour). Job state is derived
 * from the (possibly injected) clock, so the stream re-reads it on a short real-time timer and
 * sends an event whenever the status changes. With `?logs=1`, each event's `logs` holds only the
 * lines written since the previous event: fal's clients add each event's logs to those they
 * already have ("accumulate logs to match previous polling behavior", @fal-ai/client), whereas
 * a polled status carries them all.
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
    let logsSent = 0;
    const tick = () => {
      const { body } = statusResponse(ctx, job, base, logs);
      const snapshot = JSON.stringify(body);
      if (snapshot !== last) {
        last = snapshot;
        lastWrite = Date.now();
        let event: Record<string, unknown> = body;
        if (Array.isArray(body.logs)) {
          event = { ...body, logs: body.logs.slice(logsSent) };
          logsSent = body.logs.length;
        }
        res.write(`data: ${JSON.stringify(event)}\n\n`);
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
