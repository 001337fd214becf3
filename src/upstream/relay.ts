import type { FastifyReply } from 'fastify';
import { ERROR_TYPE, errors } from '../errors.js';
import { UNAVAILABLE_RETRY_AFTER_SECONDS } from '../http/error-handler.js';
import type { UpstreamResponse } from './client.js';
import { pickRelayedHeaders } from './headers.js';

const JSON_TYPE = 'application/json; charset=utf-8';

/** Parses an upstream JSON object body, or fails as a bad upstream response (502). */
export function parseJsonObject(response: UpstreamResponse): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(response.body.toString('utf8'));
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    // fall through
  }
  throw new errors.UpstreamBadResponse();
}

/**
 * Whether an answer is a JSON object as it says (content type and body): only such an answer is
 * kept as a job's final result. A proxy's HTML page or a truncated body under a 200 is a passing
 * fault, to be asked again, never an answer to serve from the cache for the whole retention.
 */
export function isJsonObjectAnswer(response: UpstreamResponse): boolean {
  if (!isJson(response.contentType)) return false;
  try {
    const value: unknown = JSON.parse(response.body.toString('utf8'));
    return value !== null && typeof value === 'object' && !Array.isArray(value);
  } catch {
    return false;
  }
}


/** fal's own error body from a 5xx, reduced to the envelope's two fields, when it has one. */
function upstreamErrorBody(response: UpstreamResponse): { detail: unknown; error_type: string } | undefined {
  try {
    const value = JSON.parse(response.body.toString('utf8')) as Record<string, unknown>;
    const detail = value?.detail;
    if (typeof detail === 'string' || Array.isArray(detail)) {
      return { detail, error_type: typeof value.error_type === 'string' ? value.error_type : 'upstream_error' };
    }
  } catch {
    // not JSON: the caller gets the gateway's generic message
  }
  return undefined;
}

/**
 * Sends an upstream answer to the caller with fal's status code and body. The gateway's own
 * credentials failing (401/403) is the operator's problem, never shown as the caller's: 502.
 * A 5xx keeps its status but only fal's {detail, error_type}, never anything else it carried.
 * `rewrite` edits a successful JSON body (the queue URL fields) before it is sent.
 */
export function relay(
  reply: FastifyReply,
  response: UpstreamResponse,
  rewrite?: (body: Record<string, unknown>) => void,
): FastifyReply {
  const { statusCode } = response;
  // Logged by the error handler (at most every few seconds: it fails every request alike).
  if (statusCode === 401 || statusCode === 403) throw new errors.UpstreamAuthFailed(statusCode);
  if (statusCode < 200 || (statusCode >= 300 && statusCode < 400)) {
    reply.log.error({ upstreamStatus: statusCode }, 'unexpected upstream status');
    throw new errors.UpstreamBadResponse();
  }
  reply.headers(pickRelayedHeaders(response.headers));
  if (statusCode >= 500) {
    const body = upstreamErrorBody(response);
    reply.log.warn({ upstreamStatus: statusCode }, 'upstream error');
    if (!body) throw Object.assign(new errors.UpstreamError(statusCode), { statusCode });
    // The category in fal's header as in the body, as every error from the gateway has it, when
    // fal left the header out (and the category is a plain token, fit for a header).
    if (!reply.hasHeader('x-fal-error-type') && ERROR_TYPE.test(body.error_type)) reply.header('x-fal-error-type', body.error_type);
    // A 503 says when to come back, as the gateway's own do, when fal did not say.
    if (statusCode === 503 && !reply.hasHeader('retry-after')) reply.header('retry-after', UNAVAILABLE_RETRY_AFTER_SECONDS);
    return reply.code(statusCode).type(JSON_TYPE).send(response.redact(JSON.stringify(body)));
  }
  if (rewrite && statusCode < 300) {
    const body = parseJsonObject(response);
    rewrite(body);
    return sendJson(reply, response, body);
  }
  // Served from the gateway's origin (where the docs page keeps keys), an upstream body must be
  // data, never a page: only JSON passes as it came.
  if (!isJson(response.contentType)) {
    reply.log.error({ upstreamStatus: statusCode, contentType: response.contentType }, 'upstream answered with a body that is not JSON');
    throw new errors.UpstreamBadResponse();
  }
  const body = withoutEscapedToken(response);
  if (body === undefined) {
    reply.log.error({ upstreamStatus: statusCode }, 'upstream answered with a JSON body that does not parse');
    throw new errors.UpstreamBadResponse();
  }
  return reply.code(statusCode).type(response.contentType!).send(body);
}

/** A backslash: every JSON escape starts with one. */
const JSON_ESCAPE = 0x5c;

/**
 * The body to pass on as it came. The upstream token is scrubbed from the raw bytes already, but
 * JSON can spell it with escapes (`\u0041`, `\/`) that a client's parser turns back into the
 * token: a body with any escape in it is decoded, written out again and scrubbed once more. One
 * with escapes that does not parse could still be decoded by hand or by a lenient parser: it is
 * not passed on (undefined).
 */
function withoutEscapedToken(response: UpstreamResponse): Buffer | string | undefined {
  if (!response.body.includes(JSON_ESCAPE)) return response.body;
  let value: unknown;
  try {
    value = JSON.parse(response.body.toString('utf8'));
  } catch {
    return undefined;
  }
  return response.redact(JSON.stringify(value));
}

function isJson(contentType: string | undefined): boolean {
  const type = contentType?.split(';')[0]?.trim().toLowerCase() ?? '';
  return type === 'application/json' || (type.startsWith('application/') && type.endsWith('+json'));
}

/** Sends a successful upstream answer whose JSON body the gateway has already parsed and edited. */
export function sendRewritten(reply: FastifyReply, response: UpstreamResponse, body: Record<string, unknown>): FastifyReply {
  reply.headers(pickRelayedHeaders(response.headers));
  return sendJson(reply, response, body);
}

/** Parsing decodes JSON escapes, so the token is scrubbed again from the re-serialised text. */
function sendJson(reply: FastifyReply, response: UpstreamResponse, body: Record<string, unknown>): FastifyReply {
  return reply.code(response.statusCode).type(JSON_TYPE).send(response.redact(JSON.stringify(body)));
}
