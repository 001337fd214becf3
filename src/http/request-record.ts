import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ERROR_TYPE } from '../errors.js';
import { UNMATCHED_ROUTE, type GatewayMetrics } from '../metrics.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Set once the request has its log line and metrics (see registerRequestRecord). */
    recorded: boolean;
  }
  interface FastifyInstance {
    /**
     * Logs and counts a request the usual hooks will not see end (a hijacked response); a no-op
     * for a request already recorded. `aborted`: the client left before the answer was complete.
     */
    recordRequest(request: FastifyRequest, reply: FastifyReply, statusCode: number, aborted: boolean): void;
  }
}

/** nginx's code for a request whose client went away before it was answered. */
export const CLIENT_CLOSED_REQUEST = 499;

const CLIENT_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Query parameters whose names suggest a credential. The gateway takes none from the query, but a
 * caller who puts a key there must not find it written in the logs.
 */
const CREDENTIAL_PARAM = /([?&][^=&#]*(?:key|token|secret|passw|auth|sig|credential|session)[^=&#]*=)[^&#]*/gi;

/** The URL as logged: the values of credential-like query parameters are replaced. */
export function loggedUrl(url: string): string {
  return url.includes('?') ? url.replace(CREDENTIAL_PARAM, '$1[redacted]') : url;
}

/** The one log line each request gets. */
interface RequestLine {
  method: string;
  url: string;
  /** The caller's address: the connection's, or the one a trusted proxy names (TRUST_PROXY). */
  ip: string | undefined;
  statusCode: number;
  ms: number;
  /** The upstream job a submit queued. */
  requestId?: string;
  /** The caller's own x-request-id, for correlation. */
  clientRequestId?: string;
  /** The client left before the answer was complete. */
  aborted?: true;
  /** The path the call came in on when it was mapped onto this route (fal's proxy path). */
  proxiedFrom?: string;
  /** An error answer's category (its error_type, as in X-Fal-Error-Type). */
  errorType?: string;
  /** A gateway error's own message (a 401 says which credential failed, a 503 which store). */
  error?: string;
}

/** What a request's handling adds to its line (an answer replayed, a token's lifetime...). */
const lineFields = new WeakMap<FastifyRequest, Record<string, unknown>>();

/** Adds fields to the request's one log line, instead of a line of their own. */
export function addToRequestLine(request: FastifyRequest, fields: Record<string, unknown>): void {
  const held = lineFields.get(request);
  if (held) Object.assign(held, fields);
  else lineFields.set(request, { ...fields });
}

export interface RecordOptions {
  /** Route patterns whose requests are logged but not counted (the metrics scrape). */
  uncounted: ReadonlySet<string>;
  /**
   * Route patterns whose successful requests are logged at debug, not info: health probes and
   * metrics scrapes, which arrive every few seconds from the platform and say nothing about traffic.
   */
  quietWhenOk: ReadonlySet<string>;
}

/**
 * Every request gets one log line at info and is counted in the HTTP metrics, once. Fastify runs
 * onResponse only for an answer it finished writing; a client that leaves first would leave no
 * trace, not even of the job its submit queued. So:
 * - an answer sent in full is recorded by onResponse;
 * - an answer that finds its client gone is recorded when the gateway sends it, with status 499
 *   and `aborted` (`recordIfClientGone`, from the gateway's onSend hook);
 * - a hijacked response (the status stream) is recorded by its route through `recordRequest`.
 */
export function registerRequestRecord(app: FastifyInstance, metrics: GatewayMetrics, options: RecordOptions): void {
  app.decorateRequest('recorded', false);
  app.decorate('recordRequest', (request: FastifyRequest, reply: FastifyReply, statusCode: number, aborted: boolean) =>
    recordRequest(request, reply, metrics, options, statusCode, aborted),
  );
  app.addHook('onResponse', (request, reply, done) => {
    try {
      recordRequest(request, reply, metrics, options, reply.statusCode, false);
    } finally {
      done();
    }
  });
}

/**
 * Responses the gateway answered itself on the raw connection, then closed (a request not received
 * within REQUEST_TIMEOUT_MS: 408), with the status it sent. Their requests are recorded with that
 * status, not as a client that left.
 */
const answeredOnSocket = new WeakMap<object, { statusCode: number; errorType: string }>();

/** Notes that `response`'s request was answered with `statusCode` straight on its connection, which then closed. */
export function markAnsweredOnSocket(response: object, statusCode: number, errorType: string): void {
  answeredOnSocket.set(response, { statusCode, errorType });
}

/** For an onSend hook: an answer about to be sent on a connection already closed. */
export function recordIfClientGone(request: FastifyRequest, reply: FastifyReply): void {
  if (!reply.raw.destroyed) return;
  const answered = answeredOnSocket.get(reply.raw);
  // The answer that went out names the line's error, not the one this request met after it.
  if (answered) lineFields.set(request, { errorType: answered.errorType });
  request.server.recordRequest(request, reply, answered?.statusCode ?? CLIENT_CLOSED_REQUEST, answered === undefined);
}

function recordRequest(request: FastifyRequest, reply: FastifyReply, metrics: GatewayMetrics, options: RecordOptions, statusCode: number, aborted: boolean): void {
  if (request.recorded) return;
  request.recorded = true;
  // Labels stay bounded: the route pattern (never the raw URL) and the tenant id.
  const route = request.routeOptions.url ?? UNMATCHED_ROUTE;
  if (!options.uncounted.has(route)) {
    metrics.httpRequest(route, request.method, statusCode, request.tenant?.id, reply.elapsedTime / 1000);
  }
  const line: RequestLine = { method: request.method, url: loggedUrl(request.url), ip: request.ip, statusCode, ms: Math.round(reply.elapsedTime) };
  if (request.jobId !== undefined) line.requestId = request.jobId;
  const clientRequestId = request.headers['x-request-id'];
  if (typeof clientRequestId === 'string' && CLIENT_REQUEST_ID.test(clientRequestId)) line.clientRequestId = clientRequestId;
  if (aborted) line.aborted = true;
  // A call of fal's proxy path, served by the route its target maps onto (as nginx logs it).
  if (request.originalUrl !== request.url) line.proxiedFrom = loggedUrl(request.originalUrl);
  const fields = lineFields.get(request);
  if (statusCode >= 400 && fields?.errorType === undefined) {
    const errorType = reply.getHeader('x-fal-error-type');
    // As relayed from the upstream too: logged only when it is a plain category.
    if (typeof errorType === 'string' && ERROR_TYPE.test(errorType)) line.errorType = errorType;
  }
  const quiet = statusCode < 400 && options.quietWhenOk.has(route);
  request.log[quiet ? 'debug' : 'info'](fields === undefined ? line : { ...fields, ...line }, 'request');
}
