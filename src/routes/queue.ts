import type { FastifyInstance, FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { queueUrlBase } from '../http/public-url.js';
import { APP_ID, MODEL_ID } from '../model.js';
import { ErrorEnvelope, UpstreamErrorBody } from '../schemas/error.js';
import { ModelInput } from '../schemas/model-input.js';
import { CancelNotFound, CancelResponse, ModelOutput, QueueStatus, SubmitResponse } from '../schemas/queue.js';
import { flagOn, RequestIdParams, StatusQuery, SubmitHeaders } from '../schemas/requests.js';
import type { JobReads } from '../jobs/job-reads.js';
import { errors } from '../errors.js';
import { assertOwned as checkOwner } from './ownership.js';
import { submit, type SubmitDeps } from './submit.js';
import { rewriteQueueUrls } from '../upstream/queue-urls.js';
import type { UpstreamResponse } from '../upstream/client.js';
import { pickRelayedHeaders } from '../upstream/headers.js';
import { parseJsonObject, relay } from '../upstream/relay.js';

const JSON_TYPE = 'application/json; charset=utf-8';

export interface QueueRouteDeps extends SubmitDeps {
  limits: { submit: onRequestHookHandler; read: onRequestHookHandler };
  reads: JobReads;
  /** BODY_LIMIT_BYTES: the submit routes alone take bodies that large (an image as a data URI, a form). */
  submitBodyLimit: number;
}

/**
 * Seconds a client polling a job that is not done may wait before asking again: about a second
 * while it runs, more the further back it is in the queue (at most 10).
 */
export function pollHint(status: Record<string, unknown>): number | undefined {
  if (status.status === 'IN_PROGRESS') return 1;
  if (status.status !== 'IN_QUEUE') return undefined;
  const position = typeof status.queue_position === 'number' && status.queue_position > 0 ? status.queue_position : 0;
  return Math.min(10, 1 + Math.floor(position / 2));
}

export const SECURITY: Array<Record<string, string[]>> = [{ bearerAuth: [] }, { apiKeyHeader: [] }, { falKey: [] }];
const errorsFor = (...codes: number[]) =>
  Object.fromEntries(codes.map((code) => [code, ErrorEnvelope.describe(ERROR_TEXT[code] ?? 'Error')]));
/**
 * A per-request route's 404: the gateway's own for a job this tenant does not own, or fal's body
 * as it came for one the tenant owns but fal no longer knows (past fal's retention, with nothing
 * kept here): `error_type` is then absent.
 */
export const REQUEST_NOT_FOUND = UpstreamErrorBody.describe(
  "No such request for this tenant (request_not_found); or one fal no longer knows, answered with fal's own body ({detail})",
);
/** fal's own 5xx (a failing model, an infrastructure error), passed on with its status: {detail, error_type}. */
export const UPSTREAM_5XX = ErrorEnvelope.describe("The upstream's own error (a failing model, fal's infrastructure), with its status and its {detail, error_type}");
const ERROR_TEXT: Record<number, string> = {
  400: 'Bad request',
  401: 'Missing or unknown API key, or an invalid or expired browser token',
  403: 'A browser origin this tenant does not allow (origin_not_allowed)',
  404: 'No such request for this tenant',
  409: 'A submit with the same Idempotency-Key is still in flight (idempotency_in_progress, see Retry-After), or its answer expired while this one arrived (idempotency_key_expired: send it again)',
  413: 'Body too large (payload_too_large), or an uploaded image over the limit (image_too_large)',
  415: 'Body is neither JSON nor a form, or is compressed',
  422: 'Validation failed: one entry per problem',
  429: 'Rate limit exceeded (see Retry-After)',
  500: 'The job may have been queued but the gateway cannot confirm it (submit_outcome_unknown, ownership_not_recorded): do not resubmit blindly',
  502: 'Upstream failure (including the gateway\'s own upstream credentials being rejected)',
  503: 'Upstream or job store unavailable',
  504: 'Upstream timeout',
};

/**
 * fal answers a cancel of a request it does not know with {"status": "NOT_FOUND"}: the gateway's
 * 404 for a job this tenant does not own carries that too, beside its own detail and error_type.
 */
function asCancelOutcome(err: unknown): never {
  if (err instanceof errors.RequestNotFound) Object.assign(err, { fields: { status: 'NOT_FOUND' } });
  throw err;
}

/** Each route is served twice: the gateway's own path and fal's queue path, so fal code only changes base URL and key. */
const paths = {
  submit: { native: '/v1/image-to-image', fal: `/${MODEL_ID}` },
  status: { native: '/v1/requests/:request_id/status', fal: `/${APP_ID}/requests/:request_id/status` },
  result: { native: '/v1/requests/:request_id', fal: `/${APP_ID}/requests/:request_id` },
  cancel: { native: '/v1/requests/:request_id/cancel', fal: `/${APP_ID}/requests/:request_id/cancel` },
};

const VARIANTS = ['native', 'fal'] as const;
type Variant = (typeof VARIANTS)[number];

/** The OpenAPI tag and operation id of a route in its native or fal-compatible form. */
function naming(variant: Variant) {
  const fal = variant === 'fal';
  return { fal, tags: [fal ? 'fal-compatible' : 'Image to image'], id: (name: string) => (fal ? `fal${name[0]!.toUpperCase()}${name.slice(1)}` : name) };
}

/**
 * The submit routes. They are the only routes that take an upload, so they are registered in
 * the scope that reads multipart forms; no other route pays for those hooks.
 */
export function submitRoutes(app: FastifyInstance, deps: QueueRouteDeps): void {
  const api = app.withTypeProvider<ZodTypeProvider>();
  for (const variant of VARIANTS) {
    const { fal, tags, id } = naming(variant);
    api.post(
      paths.submit[variant],
      {
        onRequest: deps.limits.submit,
        bodyLimit: deps.submitBodyLimit,
        schema: {
          operationId: id('submit'),
          tags,
          summary: fal ? `Submit (fal path: POST /${MODEL_ID})` : 'Submit an image-to-image job',
          description:
            'Validates the input against the model schema, queues the job upstream with the gateway\'s credentials and answers fal\'s queue status, with `status_url`, `response_url` and `cancel_url` pointing at this gateway. Counts against the tenant\'s `submit` limit.',
          security: SECURITY,
          headers: SubmitHeaders,
          body: ModelInput,
          response: {
            200: SubmitResponse.describe('Queued: poll status_url, then fetch response_url'),
            ...errorsFor(400, 401, 403, 409, 413, 415, 422, 429, 500, 502, 503, 504),
          },
        },
      },
      async (request, reply) => {
        await submit(deps, request, request.body, reply);
      },
    );
  }
}

/** Status, result and cancel of a job the tenant owns. */
export function queueRoutes(app: FastifyInstance, deps: QueueRouteDeps): void {
  const api = app.withTypeProvider<ZodTypeProvider>();
  /** Status bodies as sent, per upstream answer (kept only as long as the answer itself is). */
  const rendered = new WeakMap<UpstreamResponse, { urlBase: string; text: string; headers: Record<string, string> }>();

  const assertOwned = (request: FastifyRequest, requestId: string) => checkOwner(deps.jobs, request, requestId);

  const base = (request: FastifyRequest) => queueUrlBase(request, deps.publicBaseUrl);

  for (const variant of VARIANTS) {
    const { fal, tags, id } = naming(variant);

    api.get(
      paths.status[variant],
      {
        onRequest: deps.limits.read,
        schema: {
          operationId: id('getStatus'),
          tags,
          summary: fal ? 'Status (fal path)' : 'Status of a job',
          description:
            '202 while IN_QUEUE or IN_PROGRESS (with a `Retry-After` hint in seconds), 200 once COMPLETED. Concurrent polls of one job share one upstream call, a status is reused for `STATUS_CACHE_MS`, and a COMPLETED status is kept for `RESULT_CACHE_TTL_SECONDS`. Counts against the `read` limit.',
          security: SECURITY,
          params: RequestIdParams,
          querystring: StatusQuery,
          response: {
            200: QueueStatus.describe('COMPLETED: fetch response_url for the result'),
            202: QueueStatus.describe('IN_QUEUE (with queue_position) or IN_PROGRESS (with logs when ?logs=1)'),
            ...errorsFor(401, 403, 422, 429, 502, 503, 504),
            404: REQUEST_NOT_FOUND,
            400: ErrorEnvelope.describe('A Host header that names no host (without PUBLIC_BASE_URL)'),
            500: UPSTREAM_5XX,
          },
        },
      },
      async (request, reply) => {
        const { request_id: requestId } = request.params;
        await assertOwned(request, requestId);
        // Before anything is asked upstream: a Host that names no host is a 400.
        const urlBase = base(request);
        const logs = flagOn(request.query.logs);
        const upstream = await deps.reads.status(requestId, logs);
        if (upstream.statusCode !== 200 && upstream.statusCode !== 202) return relay(reply, upstream);
        // A status served from the cache is the same object for every poller: render it once per
        // URL base (origin and route shape).
        let view = rendered.get(upstream);
        if (view?.urlBase !== urlBase) {
          const body = parseJsonObject(upstream);
          const hint = upstream.statusCode === 202 ? pollHint(body) : undefined;
          rewriteQueueUrls(body, urlBase, requestId);
          const headers = pickRelayedHeaders(upstream.headers);
          if (hint !== undefined) headers['retry-after'] = String(hint);
          view = { urlBase, text: upstream.redact(JSON.stringify(body)), headers };
          rendered.set(upstream, view);
        }
        reply.headers(view.headers);
        // Sent as rendered: the text is the upstream body, not an object to serialise.
        return (reply as FastifyReply).code(upstream.statusCode).type(JSON_TYPE).send(view.text);
      },
    );

    api.get(
      paths.result[variant],
      {
        onRequest: deps.limits.read,
        schema: {
          operationId: id('getResult'),
          tags,
          summary: fal ? 'Result (fal path)' : 'Result of a job',
          description:
            'The model\'s own status code and body: 200 with the images once COMPLETED; 400 while the job is still running or after it was cancelled; 422 when the model rejected the input. A final answer (200, 422) is kept by the gateway for `RESULT_CACHE_TTL_SECONDS`, so it stays available after fal drops it. Counts against the `read` limit.',
          security: SECURITY,
          params: RequestIdParams,
          response: {
            200: ModelOutput.describe('The generated images'),
            ...errorsFor(401, 403, 429, 502, 503, 504),
            404: REQUEST_NOT_FOUND,
            500: UPSTREAM_5XX,
            400: UpstreamErrorBody.describe("Still in progress, or cancelled (fal's body: {detail})"),
            422: UpstreamErrorBody.describe("The model rejected the input (fal's body, as the model answered), or a malformed request id"),
          },
        },
      },
      async (request, reply) => {
        const { request_id: requestId } = request.params;
        await assertOwned(request, requestId);
        return relay(reply, await deps.reads.result(requestId));
      },
    );

    api.put(
      paths.cancel[variant],
      {
        onRequest: deps.limits.read,
        schema: {
          operationId: id('cancel'),
          tags,
          summary: fal ? 'Cancel (fal path)' : 'Cancel a job',
          description:
            'Removes a queued job or signals a running one. 202 CANCELLATION_REQUESTED, 400 ALREADY_COMPLETED. Counts against the `read` limit.',
          security: SECURITY,
          params: RequestIdParams,
          response: {
            202: CancelResponse.describe('Cancellation requested'),
            400: CancelResponse.describe('The job had already completed'),
            ...errorsFor(401, 403, 422, 429, 502, 503, 504),
            404: z.union([CancelNotFound, CancelResponse]).describe(
              "No such request for this tenant ({\"status\": \"NOT_FOUND\", \"detail\", \"error_type\": \"request_not_found\"}); or one fal no longer knows, answered with fal's own body ({\"status\": \"NOT_FOUND\"})",
            ),
            500: UPSTREAM_5XX,
          },
        },
      },
      async (request, reply) => {
        const { request_id: requestId } = request.params;
        await assertOwned(request, requestId).catch(asCancelOutcome);
        const upstream = await deps.upstream.cancel(requestId);
        if (upstream.statusCode === 202) {
          // On the request's line: the job it cancelled.
          request.jobId = requestId;
          await deps.lifecycle
            .cancelled(requestId)
            .catch((err: unknown) => request.log.error({ err: (err as Error).message, requestId }, 'a cancelled job\'s images could not be given back'));
        }
        return relay(reply, upstream);
      },
    );
  }
}
