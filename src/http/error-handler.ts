import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { errors, errorTypeOf, RequestValidationError } from '../errors.js';
import type { ErrorEnvelope } from '../schemas/error.js';
import { SUBMIT_URLS } from './multipart.js';

/** Fastify's own request errors, translated into the gateway's. */
function fromFastify(err: FastifyError, bodyLimit: number, contentType: unknown, route: string | undefined): Error | undefined {
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new errors.PayloadTooLarge(bodyLimit);
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

/** Retry-After on a 503 that carries none of its own (upstream unreachable, a store down). */
export const UNAVAILABLE_RETRY_AFTER_SECONDS = '5';

/**
 * A gateway error in fal's envelope, its category in `X-Fal-Error-Type` too, as fal's
 * infrastructure errors have it (unless fal's own header was relayed already).
 */
function sendEnvelope(reply: FastifyReply, status: number, err: { message: string; code: string }): FastifyReply {
  const body: ErrorEnvelope = { detail: err.message, error_type: errorTypeOf(err.code) };
  if (!reply.hasHeader('x-fal-error-type')) reply.header('x-fal-error-type', body.error_type);
  return reply.code(status).send(body);
}

/**
 * One envelope everywhere, in fal's dialect: {"detail": ..., "error_type": ...}. 5xx bodies
 * carry the gateway's own message only; internals go to the log under the request id.
 */
export function registerErrorHandling(
  app: FastifyInstance,
  bodyLimit: number,
  /** Makes a refusal readable by a browser origin some tenant allows (see corsForRefusal). */
  corsForRefusal: (request: FastifyRequest, reply: FastifyReply) => void = () => {},
): void {
  app.setErrorHandler((raw: FastifyError, request, reply) => {
    if (raw instanceof RequestValidationError) {
      request.log.info({ problems: raw.detail.length }, 'request rejected by validation');
      const body: ErrorEnvelope = { detail: raw.detail, error_type: 'validation_error' };
      return reply.code(422).send(body);
    }
    const own = typeof raw.code === 'string' && raw.code.startsWith('FGW_');
    const err = (own ? raw : fromFastify(raw, bodyLimit, request.headers['content-type'], request.routeOptions.url)) as FastifyError | undefined;
    if (!err) {
      request.log.error({ err: raw }, 'unhandled error');
      return sendEnvelope(reply, 500, new errors.Internal());
    }
    const status = err.statusCode ?? 500;
    // An error may carry response headers (Retry-After on a fail-fast 503).
    const headers = (err as { headers?: Record<string, string> }).headers;
    if (headers) reply.headers(headers);
    // 501 is the gateway's configuration (a feature turned off), not a failure: the request line says it.
    if (status >= 500 && status !== 501) request.log.error({ err: err.cause ?? err, errorType: errorTypeOf(err.code) }, err.message);
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
