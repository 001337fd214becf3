import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { APP_ID, MODEL_ID } from '../model.js';
import type { JobPayload, SimulatorContext } from './context.js';
import { CONTENT_TYPES } from './images.js';
import type { Job } from './jobs.js';
import { imageBytes, modelOutput, outputSpec } from './output.js';
import { REQUEST_TIMED_OUT, statusResponse, submitBody, wantsLogs } from './status.js';
import { notAnObjectDetail, validateModelInput } from './validation.js';

/** fal's queue routes for the one model, plus the file host its results point at. */

type IdParams = { Params: { id: string } };

const NOT_FOUND = { detail: 'Request not found' };

/** X-Fal-Request-Timeout: seconds the job may wait to start (a positive number); anything else is no timeout. */
function startTimeoutMs(header: string | string[] | undefined): number | undefined {
  const seconds = typeof header === 'string' && /^\s*\d+(\.\d+)?\s*$/.test(header) ? Number(header) : NaN;
  return seconds > 0 ? seconds * 1000 : undefined;
}

type Parsed = { ok: true; value: unknown } | { ok: false; code: number; body: unknown };

/**
 * Bodies arrive as raw bytes (app.ts) so that every malformed body gets fal-shaped errors
 * rather than Fastify's own: 400 for what is not JSON, 422 for JSON that is not an object.
 */
function parseSubmitBody(request: FastifyRequest): Parsed {
  const type = request.headers['content-type'];
  if (type !== undefined && !/^application\/([\w.+-]+\+)?json\s*(;|$)/i.test(type)) {
    return { ok: false, code: 400, body: { detail: `Unsupported content type: ${type}; send application/json` } };
  }
  const raw = Buffer.isBuffer(request.body) ? request.body.toString('utf8') : '';
  if (raw.trim() === '') return { ok: false, code: 400, body: { detail: 'Request body is empty; send a JSON object' } };
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return { ok: false, code: 400, body: { detail: 'Request body is not valid JSON' } };
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return { ok: false, code: 422, body: { detail: notAnObjectDetail(value) } };
  }
  return { ok: true, value };
}

export function registerQueueRoutes(app: FastifyInstance, ctx: SimulatorContext): void {
  const { store } = ctx;

  const lookup = (request: FastifyRequest<IdParams>, reply: FastifyReply): Job<JobPayload> | undefined => {
    const job = store.get(request.params.id);
    if (job) reply.header('x-fal-request-id', job.id);
    return job;
  };

  app.post(`/${MODEL_ID}`, async (request, reply) => {
    const parsed = parseSubmitBody(request);
    if (!parsed.ok) return reply.code(parsed.code).send(parsed.body);
    // fal's per-account concurrency limit: refused, nothing queued (fal's clients retry a 429).
    const limit = ctx.options.accountConcurrency;
    if (limit !== undefined && store.inFlight() >= limit) {
      return reply
        .code(429)
        .header('retry-after', '1')
        .send({ detail: `Concurrency limit reached: ${limit} requests are already queued or running for this account` });
    }
    // fal accepts any object into the queue; the model judges it when it runs. The verdict is
    // taken now so the job's outcome (and random seed) is fixed for every later read.
    const verdict = validateModelInput(parsed.value);
    const payload: JobPayload = verdict.ok
      ? { kind: 'accepted', spec: outputSpec(verdict.value) }
      : { kind: 'rejected', detail: verdict.detail };
    const job = store.submit(payload, startTimeoutMs(request.headers['x-fal-request-timeout']));
    reply.header('x-fal-request-id', job.id);
    return reply.code(200).send(submitBody(ctx, job, ctx.urlBase(request)));
  });

  app.get<IdParams>(`/${APP_ID}/requests/:id/status`, async (request, reply) => {
    const job = lookup(request, reply);
    if (!job) return reply.code(404).send(NOT_FOUND);
    const { code, body } = statusResponse(ctx, job, ctx.urlBase(request), wantsLogs(request));
    return reply.code(code).send(body);
  });

  app.get<IdParams>(`/${APP_ID}/requests/:id`, async (request, reply) => {
    const job = lookup(request, reply);
    if (!job) return reply.code(404).send(NOT_FOUND);
    if (store.state(job) !== 'COMPLETED') return reply.code(400).send({ detail: 'Request is still in progress' });
    // The caller's own deadline to start ran out: fal's 504, marked as the user's.
    if (store.timedOut(job)) {
      return reply
        .code(504)
        .header('x-fal-request-timeout-type', 'user')
        .header('x-fal-error-type', 'request_timeout')
        .send({ detail: REQUEST_TIMED_OUT, error_type: 'request_timeout' });
    }
    if (job.cancelledAt !== undefined) return reply.code(400).send({ detail: 'Request was cancelled' });
    if (job.payload.kind === 'rejected') return reply.code(422).send({ detail: job.payload.detail });
    const output = modelOutput(ctx.images, job.id, job.payload.spec, ctx.ownOrigin(request), ctx.runMs / 1000);
    return reply.code(200).send(output);
  });

  app.put<IdParams>(`/${APP_ID}/requests/:id/cancel`, async (request, reply) => {
    const outcome = store.cancel(request.params.id);
    if (outcome !== 'NOT_FOUND') reply.header('x-fal-request-id', request.params.id);
    const code = outcome === 'CANCELLATION_REQUESTED' ? 202 : outcome === 'ALREADY_COMPLETED' ? 400 : 404;
    return reply.code(code).send({ status: outcome });
  });
}

export function registerFileRoutes(app: FastifyInstance, ctx: SimulatorContext): void {
  app.get<{ Params: { id: string; file: string } }>('/files/:id/:file', async (request, reply) => {
    const job = ctx.store.kept(request.params.id);
    const match = /^(\d{1,2})\.(png|jpeg)$/.exec(request.params.file);
    // Only files the result lists exist: a completed, accepted job, its format, its count.
    if (
      !job ||
      !match ||
      job.payload.kind !== 'accepted' ||
      job.cancelledAt !== undefined ||
      ctx.store.state(job) !== 'COMPLETED' ||
      match[2] !== job.payload.spec.format ||
      Number(match[1]) >= job.payload.spec.numImages
    ) {
      return reply.code(404).send({ detail: 'Not Found' });
    }
    const bytes = imageBytes(ctx.images, job.id, job.payload.spec, Number(match[1]));
    return reply
      .code(200)
      .header('content-type', CONTENT_TYPES[job.payload.spec.format])
      .header('cache-control', 'public, max-age=3600')
      .send(bytes);
  });
}
