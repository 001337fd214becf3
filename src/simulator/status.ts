import type { FastifyRequest } from 'fastify';
import { APP_ID } from '../model.js';
import type { JobPayload, SimulatorContext } from './context.js';
import type { Job } from './jobs.js';
import { runnerLogs, type LogEntry } from './logs.js';

/** fal's queue status objects, built from a job's derived state. */

/** `?logs=1` and `?logs=true` ask for runner logs, as fal's clients send them. */
export function wantsLogs(request: FastifyRequest): boolean {
  const value = (request.query as Record<string, unknown> | undefined)?.logs;
  return value === '1' || value === 'true';
}

export function queueUrls(base: string, id: string) {
  const request = `${base}/${APP_ID}/requests/${id}`;
  return { response_url: request, status_url: `${request}/status`, cancel_url: `${request}/cancel` };
}

export function submitBody(ctx: SimulatorContext, job: Job<JobPayload>, base: string) {
  return {
    status: 'IN_QUEUE' as const,
    request_id: job.id,
    ...queueUrls(base, job.id),
    logs: null,
    metrics: {},
    queue_position: ctx.store.queuePosition(job),
  };
}

export function jobLogs(ctx: SimulatorContext, job: Job<JobPayload>): LogEntry[] {
  const { store } = ctx;
  const now = store.now;
  return runnerLogs({
    startedAt: store.startedAt(job),
    runMs: ctx.runMs,
    until: Math.min(now, store.completedAt(job)),
    steps: job.payload.kind === 'accepted' ? job.payload.spec.steps : 0,
    rejected: job.payload.kind === 'rejected',
  });
}

/** What a job given up in the queue says (X-Fal-Request-Timeout ran out before it started). */
export const REQUEST_TIMED_OUT = 'Request timed out before it could start (X-Fal-Request-Timeout)';

/** The error a COMPLETED status carries when the model produced no output. */
function failure(ctx: SimulatorContext, job: Job<JobPayload>): { error: string; error_type: string } | undefined {
  if (ctx.store.timedOut(job)) return { error: REQUEST_TIMED_OUT, error_type: 'request_timeout' };
  if (job.cancelledAt !== undefined) return { error: 'Request was cancelled', error_type: 'request_cancelled' };
  if (job.payload.kind === 'rejected') {
    const first = job.payload.detail[0];
    const where = first ? `${first.loc.slice(1).join('.')}: ${first.msg}` : 'invalid input';
    return { error: `Unprocessable Entity (${where})`, error_type: 'validation_error' };
  }
  return undefined;
}

/** Status code and body of GET .../status (and of each status stream event). */
export function statusResponse(
  ctx: SimulatorContext,
  job: Job<JobPayload>,
  base: string,
  withLogs: boolean,
): { code: 200 | 202; body: Record<string, unknown> } {
  const state = ctx.store.state(job);
  const head = { status: state, request_id: job.id, ...queueUrls(base, job.id) };
  if (state === 'IN_QUEUE') {
    // Nothing has run yet, so there are no logs to show even with ?logs=1.
    const logs = withLogs ? [] : null;
    return { code: 202, body: { ...head, queue_position: ctx.store.queuePosition(job), logs, metrics: {} } };
  }
  const logs = withLogs ? jobLogs(ctx, job) : null;
  if (state === 'IN_PROGRESS') return { code: 202, body: { ...head, logs, metrics: {} } };
  return {
    code: 200,
    body: { ...head, logs, metrics: { inference_time: ctx.store.inferenceSeconds(job) }, ...failure(ctx, job) },
  };
}
