import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { errors, errorTypeOf, RequestValidationError } from '../errors.js';
import type { ErrorEnvelope } from '../schemas/error.js';
import { SUBMIT_URLS } from './multipart.js';
import { addToRequestLine } from './request-record.js';
import { isConnectionFailure, LogSampler, OUTAGE_LOG_INTERVAL_MS } from '../log-sampler.js';

/** Fastify's own request errors, translated into the gateway's. */
function fromFastify(err: FastifyError, request: FastifyRequest): Error | undefined {
  const contentType = request.headers['content-type'];
  const route = request.routeOptions.url;
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new errors.PayloadTooLarge(request.routeOptions.bodyLimit);
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE': {
      const type = typeof contentType === 'string' ? contentType : '(none)';
      // The submit routes take a form too: their 415 says so.
      return route !== undefined && SUBMIT_URLS.has(route) ? new errors.UnsupportedSubmitMediaType(type) : new errors.UnsupportedMediaType(type);
    }
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new errors.InvalidJson('the body is empty');
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new errors.InvalidJson(err.message);
    default:
      if (err instanceof SyntaxError && err.statusCode === 400) return new errors.InvalidJson(err.message);
      if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) return new errors.BadRequest(err.message);
      return undefined;
  }
}

/** How much of an error's message, and of each field name in a 422, a request line holds. */
const LOGGED_MESSAGE_CHARS = 500;
const LOGGED_FIELD_CHARS = 64;

/** Retry-After on a 503 that carries none of its own (upstream unreachable, a store down). */
export const UNAVAILABLE_RETRY_AFTER_SECONDS = '5';

/**
 * A gateway error in fal's envelope, its category in `X-Fal-Error-Type` too, as fal's
 * infrastructure errors have it (unless fal's own header was relayed already).
 */
function sendEnvelope(reply: FastifyReply, status: number, err: { message: string; code: string; fields?: Record<string, unknown> }): FastifyReply {
  // An error may carry fields of fal's own answer for its case (a cancel's {"status": "NOT_FOUND"}).
  const body: ErrorEnvelope = { ...err.fields, detail: err.message, error_type: errorTypeOf(err.code) };
  if (!reply.hasHeader('x-fal-error-type')) reply.header('x-fal-error-type', body.error_type);
  // The message on the request's line: which credential failed, which store is down, what to fix
  // (bounded: a message may quote what the caller sent, such as an origin).
  addToRequestLine(reply.request, { error: err.message.length > LOGGED_MESSAGE_CHARS ? `${err.message.slice(0, LOGGED_MESSAGE_CHARS)}…` : err.message });
  return reply.code(status).send(body);
}

/**
 * Refusals that report a lasting state (the store down, the upstream's circuit open), not a fault
 * of this request: that state is logged when it changes ("redis unavailable", "upstream circuit
 * open"), and every request refused meanwhile has its request line with its status. Logged at
 * warn, without a stack, at most once per interval for each kind and cause, with how many were
 * left out. A store refusal caused by anything but the connection (a script error, a wrong key
 * type, a bug) is a fault: logged at error with its stack, each time.
 */
const OUTAGE_CODES: ReadonlySet<string> = new Set(['FGW_STORE_UNAVAILABLE', 'FGW_RATE_LIMIT_UNAVAILABLE', 'FGW_UPSTREAM_CIRCUIT_OPEN', 'FGW_UPSTREAM_UNAVAILABLE']);
/** Refusals whose every cause is the upstream's availability (its connection, its circuit, a full pool). */
const UPSTREAM_OUTAGE_CODES: ReadonlySet<string> = new Set(['FGW_UPSTREAM_CIRCUIT_OPEN', 'FGW_UPSTREAM_UNAVAILABLE']);

/**
 * The gateway's own configuration failing (the upstream refusing its token, not serving the model
 * at UPSTREAM_BASE_URL): every request fails alike until the operator acts. Logged at error,
 * without a stack (no bug to find), at most once per interval, as outages are.
 */
const CONFIGURATION_FAULT_CODES: ReadonlySet<string> = new Set(['FGW_UPSTREAM_AUTH_FAILED', 'FGW_UPSTREAM_MISCONFIGURED']);

/** Whether a refusal is an outage's (sampled at warn) rather than a fault (each at error). */
function isOutage(err: FastifyError): boolean {
  if (!OUTAGE_CODES.has(err.code)) return false;
  if (UPSTREAM_OUTAGE_CODES.has(err.code) || err.cause === undefined) return true;
  return isConnectionFailure(err.cause);
}

function logOutage(request: FastifyRequest, err: FastifyError, lines: LogSampler, level: 'warn' | 'error' = 'warn'): void {
  const cause = err.cause instanceof Error ? err.cause.message.slice(0, 200) : undefined;
  // Per kind, message (which may name an upstream status) and cause.
  const line = lines.take(`${err.code}\u0000${err.message}\u0000${cause ?? ''}`);
  if (!line.log) return;
  request.log[level](
    { errorType: errorTypeOf(err.code), ...(cause !== undefined ? { cause } : {}), ...(line.suppressed > 0 ? { suppressed: line.suppressed } : {}) },
    `${err.message} (refusals like this are logged at most every ${OUTAGE_LOG_INTERVAL_MS / 1000} s)`,
  );
}

/**
 * One envelope everywhere, in fal's dialect: {"detail": ..., "error_type": ...}. 5xx bodies
 * carry the gateway's own message only; internals go to the log under the request id.
 */
export function registerErrorHandling(
  app: FastifyInstance,
  /** Makes a refusal readable by a browser origin some tenant allows (see corsForRefusal). */
  corsForRefusal: (request: FastifyRequest, reply: FastifyReply) => void = () => {},
): void {
  const outageLines = new LogSampler(OUTAGE_LOG_INTERVAL_MS);
  app.setErrorHandler((raw: FastifyError, request, reply) => {
    if (raw instanceof RequestValidationError) {
      // On the request's own line: how many problems, and of which kinds (the values stay out;
      // field names may be the caller's own, unknown ones: each is cut short).
      const where = (loc: ReadonlyArray<string | number>) => loc.map((part) => String(part).slice(0, LOGGED_FIELD_CHARS)).join('.');
      addToRequestLine(request, { errorType: 'validation_error', problems: raw.detail.length, error: raw.detail.slice(0, 5).map((d) => `${where(d.loc)}: ${d.type}`).join('; ') });
      const body: ErrorEnvelope = { detail: raw.detail, error_type: 'validation_error' };
      return reply.code(422).send(body);
    }
    // No route takes this path, though its body was refused first (too large, not JSON, another
    // type): that is what the caller needs to hear.
    if (request.is404 && (raw.statusCode ?? 500) >= 400 && (raw.statusCode ?? 500) < 500) {
      return sendEnvelope(reply, 404, new errors.RouteNotFound(request.method, request.url.split('?')[0]));
    }
    const own = typeof raw.code === 'string' && raw.code.startsWith('FGW_');
    const err = (own ? raw : fromFastify(raw, request)) as FastifyError | undefined;
    if (!err) {
      request.log.error({ err: raw }, 'unhandled error');
      return sendEnvelope(reply, 500, new errors.Internal());
    }
    const status = err.statusCode ?? 500;
    // An error may carry response headers (Retry-After on a fail-fast 503).
    const headers = (err as { headers?: Record<string, string> }).headers;
    if (headers) reply.headers(headers);
    // 501 is the gateway's configuration (a feature turned off), not a failure: the request line says it.
    if (isOutage(err)) logOutage(request, err, outageLines);
    else if (CONFIGURATION_FAULT_CODES.has(err.code)) logOutage(request, err, outageLines, 'error');
    else if (status >= 500 && status !== 501) request.log.error({ err: err.cause ?? err, errorType: errorTypeOf(err.code) }, err.message);
    // A hint on when to come back from a 503 that gave none (fal's clients retry 503s).
    if (status === 503 && !reply.hasHeader('retry-after')) reply.header('retry-after', UNAVAILABLE_RETRY_AFTER_SECONDS);
    return sendEnvelope(reply, status, err);
  });

  app.setNotFoundHandler((request, reply) => {
    // No route, so no authentication ran to set CORS: a page calling a mistyped path reads the
    // 404 instead of a bare network error.
    corsForRefusal(request, reply);
    return sendEnvelope(reply, 404, new errors.RouteNotFound(request.method, request.url.split('?')[0]));
  });
}
