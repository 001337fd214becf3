import { createHash, randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify';
import { errors, errorTypeOf, RequestValidationError } from '../errors.js';
import { queueUrlBase } from '../http/public-url.js';
import { addToRequestLine } from '../http/request-record.js';
import type { AccountingStore } from '../accounting/accounting-store.js';
import type { JobLifecycle } from '../jobs/lifecycle.js';
import type { JobStore } from '../jobs/job-store.js';
import type { GatewayMetrics } from '../metrics.js';
import { admit } from '../tenants/admission.js';
import type { ModelInput } from '../schemas/model-input.js';
import { REQUEST_ID_PATTERN } from '../schemas/requests.js';
import { tenantOf } from '../tenants/auth.js';
import { checkInputPolicy, type InputPolicy } from '../tenants/input-policy.js';
import type { UpstreamClient } from '../upstream/client.js';
import { nothingWasSent } from '../upstream/error-mapping.js';
import { pickForwardedHeaders } from '../upstream/headers.js';
import { rewriteQueueUrls } from '../upstream/queue-urls.js';
import { parseJsonObject, relay, sendRewritten } from '../upstream/relay.js';

export interface SubmitDeps {
  upstream: UpstreamClient;
  jobs: JobStore;
  publicBaseUrl: string | undefined;
  inputPolicy: InputPolicy;
  idempotencyTtlMs: number;
  /** How long a claimed key waits for its submit before another attempt may take it over. */
  idempotencyPendingMs: number;
  accounting: AccountingStore;
  lifecycle: JobLifecycle;
  metrics?: GatewayMetrics;
}

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/** JSON with object keys sorted, so the same input in another key order is the same request. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** Where a tenant's Idempotency-Key is kept in the job store (the key itself is not stored). */
export const idempotencyClaim = (tenantId: string, idempotencyKey: string) => `${tenantId}:${sha256(idempotencyKey)}`;

/**
 * The submit rate limit, except for a retry that will only replay an answer: a submit whose
 * Idempotency-Key already holds one queues nothing, so it is charged to the `read` budget
 * instead, and a client that lost the first answer learns its job even with its submit budget
 * spent. Still charged: the body is read and checked against the first one before the replay
 * (another body is a 422), so replays must not be a way around every limit. A store that cannot
 * tell: charged as a submit.
 */
export function submitLimit(limit: onRequestHookHandler, replayLimit: onRequestHookHandler, jobs: JobStore): onRequestHookHandler {
  const charge = limit as (this: FastifyInstance, request: FastifyRequest, reply: FastifyReply) => Promise<void>;
  const chargeReplay = replayLimit as (this: FastifyInstance, request: FastifyRequest, reply: FastifyReply) => Promise<void>;
  // Not an async function: a submit without a key (nearly all) goes to the limit with no extra promise.
  return function limitUnlessReplay(this: FastifyInstance, request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const idempotencyKey = request.headers['idempotency-key'];
    const tenant = request.tenant;
    if (typeof idempotencyKey !== 'string' || !tenant) return charge.call(this, request, reply);
    return jobs
      .idempotencyRecord(idempotencyClaim(tenant.id, idempotencyKey))
      .catch(() => undefined)
      .then((held) => {
        if (held?.state !== 'done') return charge.call(this, request, reply);
        chargedAsReplay.add(request);
        return chargeReplay.call(this, request, reply);
      });
  };
}

/**
 * Submits let through as replays. The answer may lapse before the body has arrived (a slow
 * upload, or a trickled one): such a submit must not queue a job on the `read` budget (see submit()).
 */
const chargedAsReplay = new WeakSet<FastifyRequest>();

/** A store write whose failure would cost a paid job: one more try after a first failure (a timeout, say). */
const twice = <T>(write: () => Promise<T>): Promise<T> => write().catch(write);

/** Failures after which a job may exist upstream: the key stays taken so a retry cannot queue another. */
const MAYBE_QUEUED = new Set(['FGW_SUBMIT_OUTCOME_UNKNOWN', 'FGW_OWNERSHIP_NOT_RECORDED']);

type Queued = { statusCode: number; body: Record<string, unknown>; send: () => FastifyReply };

/**
 * Submit: validate beyond the schema, refuse when the job could not be recorded, queue upstream
 * exactly once, record the owner, and answer fal's queue status with the gateway's URLs. With an
 * Idempotency-Key, a retried submit replays the first answer instead of queuing a second paid job.
 */
export async function submit(deps: SubmitDeps, request: FastifyRequest, input: ModelInput, reply: FastifyReply): Promise<FastifyReply> {
  if ('fal_webhook' in (request.query as object)) {
    throw new RequestValidationError([
      { loc: ['query', 'fal_webhook'], msg: 'Webhooks are not supported by this gateway; poll status_url instead', type: 'value_error' },
    ]);
  }
  const tenant = tenantOf(request);
  const problems = checkInputPolicy(input, tenant, deps.inputPolicy);
  if (problems.length > 0) throw new RequestValidationError(problems);
  // A job queued upstream that the gateway cannot record is paid for and unreachable: refuse first,
  // when the store is known to be down, or did not answer this very request's rate limit (a
  // stalled Redis: the job's record would time out the same way).
  if (!deps.jobs.available() || (request.rateLimitStoreFailed && deps.jobs.kind === 'redis')) throw new errors.StoreUnavailable();
  const base = queueUrlBase(request, deps.publicBaseUrl);

  const idempotencyKey = request.headers['idempotency-key'];
  if (typeof idempotencyKey !== 'string') return (await queue(deps, request, input, reply, base)).send();

  const claim = idempotencyClaim(tenant.id, idempotencyKey);
  // The queue headers (priority, timeout...) are part of the request: the same key with another
  // priority is another request, not a retry. Left out when there are none, as before.
  const forwarded = pickForwardedHeaders(request.headers);
  const fingerprint = sha256(Object.keys(forwarded).length === 0 ? canonicalJson(input) : `${canonicalJson(input)}\n${canonicalJson(forwarded)}`);
  // This submit's own name for its claim: a release never removes another submit's claim.
  const attempt = randomUUID();
  const existing = await deps.jobs.claimIdempotencyKey(claim, fingerprint, deps.idempotencyPendingMs, attempt).catch((err: unknown) => {
    // A claim that timed out may still be carried out once a stalled Redis resumes, and would hold
    // the key for idempotencyPendingMs, turning away every retry of a job that was never queued.
    // The release goes out on the same connection after it, so it runs after it too. Not awaited:
    // the caller learns now that the store is down.
    deps.jobs.releaseIdempotencyKey(claim, attempt).catch(() => undefined);
    throw new errors.StoreUnavailable({ cause: err });
  });
  // Let through as a replay, yet its key holds no answer now (it lapsed while the body arrived):
  // it would queue a job its submit limit never counted. Refused; sent again, it is a submit.
  if (!existing && chargedAsReplay.has(request)) {
    await deps.jobs.releaseIdempotencyKey(claim, attempt).catch(() => undefined);
    throw Object.assign(new errors.IdempotencyExpired(), { headers: { 'retry-after': '0' } });
  }
  if (existing) {
    if (existing.fingerprint !== fingerprint) {
      throw new RequestValidationError([
        {
          loc: ['header', 'idempotency-key'],
          msg: 'This Idempotency-Key was already used with a different body; use a new key for a new job',
          type: 'idempotency_key_reused',
        },
      ]);
    }
    if (existing.state === 'pending') throw Object.assign(new errors.IdempotencyInProgress(), { headers: { 'retry-after': '1' } });
    const body = structuredClone(existing.body);
    if (typeof body.request_id === 'string') {
      rewriteQueueUrls(body, base, body.request_id, { always: true });
      // The replayed job, on the request's own line as for the first submit, and in fal's header
      // as the first answer had it (fal's client reads the request id from there).
      request.jobId = body.request_id;
      reply.header('x-fal-request-id', body.request_id);
    }
    addToRequestLine(request, { replayed: true });
    return reply.code(existing.statusCode).header('idempotent-replayed', 'true').type('application/json; charset=utf-8').send(deps.upstream.scrubText(JSON.stringify(body)));
  }

  let queued: Queued;
  try {
    queued = await queue(deps, request, input, reply, base);
  } catch (err) {
    const code = (err as { code?: string }).code ?? '';
    const settle = MAYBE_QUEUED.has(code)
      ? deps.jobs.completeIdempotencyKey(
          claim,
          { state: 'done', fingerprint, statusCode: 500, body: { detail: (err as Error).message, error_type: errorTypeOf(code) } },
          deps.idempotencyTtlMs,
        )
      : deps.jobs.releaseIdempotencyKey(claim, attempt);
    await settle.catch((storeErr: unknown) => request.log.error({ err: storeErr }, 'could not settle an Idempotency-Key'));
    throw err;
  }
  // Settled outside the try above: the job is queued and recorded whatever the store says now.
  // A failed write must neither release the key (a retry would queue a second paid job) nor
  // turn the answer into an error (the caller, not knowing the job, would retry). It is tried
  // twice; if both fail, the key stays claimed: a retry meets 409 until the claim lapses
  // (idempotencyPendingMs), and only after that could it queue another job.
  const queuedOk = queued.statusCode >= 200 && queued.statusCode < 300;
  const settle = queuedOk
    ? () => deps.jobs.completeIdempotencyKey(claim, { state: 'done', fingerprint, statusCode: queued.statusCode, body: queued.body }, deps.idempotencyTtlMs)
    : () => deps.jobs.releaseIdempotencyKey(claim, attempt);
  try {
    await twice(settle);
  } catch (storeErr) {
    request.log.error(
      { err: storeErr, requestId: request.jobId },
      queuedOk ? 'could not save the answer for its Idempotency-Key; the key stays claimed until it lapses' : 'could not settle an Idempotency-Key',
    );
  }
  return queued.send();
}

/**
 * Queues the job upstream once, after admitting it (quota, concurrency). Returns the upstream
 * answer (URLs not yet rewritten) and how to send it. Whatever happens, the admission is settled:
 * given back when nothing was queued, kept (images charged) when a job may exist.
 */
async function queue(deps: SubmitDeps, request: FastifyRequest, input: ModelInput, reply: FastifyReply, base: string): Promise<Queued> {
  const tenant = tenantOf(request);
  const images = input.num_images ?? 1;
  const admission = await admit(request, tenant, images, deps.accounting, deps.metrics);
  let upstream;
  try {
    upstream = await deps.upstream.submit(JSON.stringify(input), pickForwardedHeaders(request.headers));
  } catch (err) {
    if (nothingWasSent(err)) {
      await admission.notQueued();
      throw err;
    }
    await admission.unknown();
    request.log.error({ err }, 'submit sent upstream without a usable answer: the job may exist');
    throw new errors.SubmitOutcomeUnknown((err as Error).message, { cause: err });
  }
  if (upstream.statusCode === 404 || upstream.statusCode === 405) {
    await admission.notQueued();
    // Logged by the error handler (at most every few seconds: it fails every submit alike).
    throw new errors.UpstreamMisconfigured(upstream.statusCode);
  }
  const answer = upstream;
  if (answer.statusCode < 200 || answer.statusCode >= 300) {
    await admission.notQueued();
    return { statusCode: answer.statusCode, body: {}, send: () => relay(reply, answer) };
  }
  let body: Record<string, unknown>;
  try {
    body = parseJsonObject(answer);
  } catch {
    body = {};
  }
  const requestId = body.request_id;
  if (typeof requestId !== 'string' || !REQUEST_ID_PATTERN.test(requestId)) {
    await admission.unknown();
    // fal's header may still name the job: logged, so the operator can find (or cancel) it.
    const headerId = answer.headers['x-fal-request-id'];
    request.log.error(
      { upstreamStatus: answer.statusCode, ...(typeof headerId === 'string' ? { upstreamRequestId: headerId.slice(0, 128) } : {}) },
      'upstream accepted a submit without a usable request_id',
    );
    throw new errors.SubmitOutcomeUnknown('the upstream answered without a usable request_id');
  }
  try {
    // The job is queued and paid for: a write that timed out once (a busy Redis, a slow event
    // loop) is worth one more try before the caller is told it cannot be served.
    await twice(() => deps.jobs.record(requestId, tenant.id, images, admission.charged, admission.chargedAt));
  } catch (err) {
    await admission.unknown();
    request.log.error({ err, requestId }, 'job queued upstream but its ownership could not be recorded');
    throw new errors.OwnershipNotRecorded(requestId);
  }
  await admission.queued(requestId);
  await deps.lifecycle.submitted(tenant.id, requestId, images);
  // Logged on the request's own line (one line per request), not a line of its own.
  request.jobId = requestId;
  return {
    statusCode: answer.statusCode,
    // Kept for an Idempotency-Key replay, before the URLs are rewritten for this caller.
    body: request.headers['idempotency-key'] === undefined ? body : structuredClone(body),
    send: () => {
      rewriteQueueUrls(body, base, requestId, { always: true });
      return sendRewritten(reply, answer, body);
    },
  };
}
