import createError from '@fastify/error';

/**
 * Every error the gateway itself produces, in one place. Codes share the FGW_ prefix; the
 * snake_case rest of the code is the `error_type` clients see in fal's envelope
 * `{"detail": ..., "error_type": ...}`. Messages tell the caller (or the operator) what to do.
 */

const define = (code: string, status: number, message: string) => createError(`FGW_${code}`, message, status);

export const errors = {
  Unauthorized: define(
    'UNAUTHORIZED',
    401,
    'A valid API key is required: send "Authorization: Bearer <key>", "Authorization: Key <key>" or "x-api-key: <key>"',
  ),
  MalformedAuthorization: define('UNAUTHORIZED', 401, 'The Authorization header must read "Bearer <key>" or "Key <key>": %s'),
  TokenExpired: define('UNAUTHORIZED', 401, 'The browser token has expired: get a new one (POST /v1/tokens) and retry'),
  TokenRevoked: define('UNAUTHORIZED', 401, 'The key that issued this browser token has been revoked: get a new one (POST /v1/tokens) and retry'),
  MetricsUnauthorized: define('UNAUTHORIZED', 401, 'GET /metrics requires "Authorization: Bearer <METRICS_TOKEN>"'),
  RequestNotFound: define('REQUEST_NOT_FOUND', 404, 'Request not found'),
  OriginNotAllowed: define(
    'ORIGIN_NOT_ALLOWED',
    403,
    'Requests from origin %s are not allowed for this tenant; the operator lists allowed origins in the tenants file (allowedOrigins)',
  ),
  TokenCannotMint: define('TOKEN_CANNOT_MINT', 403, 'A browser token cannot create tokens: call this with a tenant key, from a backend'),
  TokensDisabled: define('TOKENS_DISABLED', 501, 'Browser tokens are not enabled on this gateway: the operator must set TOKEN_SECRET'),
  RouteNotFound: define('ROUTE_NOT_FOUND', 404, 'Route %s %s not found; see /docs for the available routes'),
  RateLimited: define('RATE_LIMITED', 429, 'Rate limit exceeded for %s requests (%s). Retry in %s.'),
  QuotaExceeded: define(
    'QUOTA_EXCEEDED',
    429,
    'Image quota: %s %s (see Retry-After).',
  ),
  TooManyStreams: define(
    'TOO_MANY_STREAMS',
    429,
    'This tenant has %s status streams open on this replica, the most it may (CLIENT_STREAMS_PER_TENANT): close one, or poll status_url instead',
  ),
  ConcurrencyExceeded: define(
    'CONCURRENCY_EXCEEDED',
    429,
    'Too many jobs in flight: %s of %s allowed are queued or running. Submit again when one has finished (see Retry-After).',
  ),
  ProxyTargetNotAllowed: define(
    'PROXY_TARGET_NOT_ALLOWED',
    400,
    'The %s header must name this gateway\'s model on fal\'s queue: POST https://queue.fal.run/fal-ai/flux-lora/image-to-image, or GET/PUT https://queue.fal.run/fal-ai/flux-lora/requests/{request_id}[/status|/status/stream|/cancel]',
  ),
  InvalidJson: define('INVALID_JSON', 400, 'The request body is not valid JSON: %s'),
  BadRequest: define('BAD_REQUEST', 400, '%s'),
  PayloadTooLarge: define('PAYLOAD_TOO_LARGE', 413, 'The request body exceeds the limit of %s bytes'),
  ImageTooLarge: define(
    'IMAGE_TOO_LARGE',
    413,
    'The image file exceeds the limit of %s bytes; send larger images as an http(s) image_url',
  ),
  UnsupportedMediaType: define(
    'UNSUPPORTED_MEDIA_TYPE',
    415,
    'Content-Type "%s" is not supported; send application/json',
  ),
  UnsupportedSubmitMediaType: define(
    'UNSUPPORTED_MEDIA_TYPE',
    415,
    'Content-Type "%s" is not supported; send application/json, or multipart/form-data with an image file',
  ),
  UnsupportedEncoding: define('UNSUPPORTED_MEDIA_TYPE', 415, 'Content-Encoding "%s" is not supported; send the body uncompressed'),
  UnsupportedCharset: define('UNSUPPORTED_MEDIA_TYPE', 415, 'charset "%s" is not supported; send JSON as UTF-8'),
  UpstreamAuthFailed: define(
    'UPSTREAM_AUTH_FAILED',
    502,
    "The upstream rejected the gateway's own credentials (HTTP %s). This is not your key: the operator must check UPSTREAM_TOKEN and UPSTREAM_AUTH_SCHEME.",
  ),
  UpstreamUnavailable: define('UPSTREAM_UNAVAILABLE', 503, 'The upstream could not be reached; try again shortly'),
  UpstreamConnectionError: define('UPSTREAM_CONNECTION_ERROR', 502, 'The connection to the upstream failed'),
  UpstreamTimeout: define('UPSTREAM_TIMEOUT', 504, 'The upstream did not answer in time'),
  UpstreamBadResponse: define('UPSTREAM_BAD_RESPONSE', 502, 'The upstream sent a response the gateway could not read'),
  UpstreamResponseTooLarge: define(
    'UPSTREAM_RESPONSE_TOO_LARGE',
    502,
    'The upstream response exceeds the limit of %s bytes',
  ),
  UpstreamError: define('UPSTREAM_ERROR', 502, 'The upstream failed (HTTP %s)'),
  UpstreamCircuitOpen: define(
    'UPSTREAM_CIRCUIT_OPEN',
    503,
    'The upstream has been failing; the gateway is not sending it requests for a short while. Retry after the Retry-After delay.',
  ),
  // A submit that may have been queued is answered 500, a status clients do not retry: a
  // retried submit is a second paid job.
  SubmitOutcomeUnknown: define(
    'SUBMIT_OUTCOME_UNKNOWN',
    500,
    'The upstream may or may not have queued this job (%s), so the gateway cannot tell you its request_id. Do not resubmit blindly; contact the operator if you need to know.',
  ),
  UpstreamMisconfigured: define(
    'UPSTREAM_MISCONFIGURED',
    502,
    'The upstream does not serve this model at the configured address (HTTP %s); the operator must check UPSTREAM_BASE_URL',
  ),
  /** undici refused to build the request (an invalid header value, say): nothing left the gateway. */
  UpstreamRequestInvalid: define(
    'UPSTREAM_MISCONFIGURED',
    502,
    'The gateway could not build its request to the upstream (%s), so nothing was sent; the operator must check UPSTREAM_TOKEN and UPSTREAM_BASE_URL',
  ),
  OwnershipNotRecorded: define(
    'OWNERSHIP_NOT_RECORDED',
    500,
    'The job %s was queued upstream, but the gateway could not record that it is yours, so it cannot serve its status or result. Keep this request_id and contact the operator.',
  ),
  IdempotencyInProgress: define(
    'IDEMPOTENCY_IN_PROGRESS',
    409,
    'A submit with this Idempotency-Key is still in progress; retry shortly to get its answer',
  ),
  IdempotencyExpired: define(
    'IDEMPOTENCY_KEY_EXPIRED',
    409,
    'The answer this Idempotency-Key held expired while the request was being received, so there is nothing to replay; send the submit again: it will be a new job, counted against the submit limit',
  ),
  StoreUnavailable: define('STORE_UNAVAILABLE', 503, 'The job store is unavailable; try again shortly'),
  RateLimitUnavailable: define(
    'RATE_LIMIT_UNAVAILABLE',
    503,
    'Rate limits cannot be checked right now, and this gateway refuses requests it cannot count; try again shortly',
  ),
  Internal: define('INTERNAL_ERROR', 500, 'Internal error; the gateway logged it under this x-request-id'),
};

/** An error category as fal spells them (`runner_scheduling_failure`): safe in a header and a log line. */
export const ERROR_TYPE = /^[A-Za-z0-9_.-]{1,64}$/;

/** The `error_type` of a gateway error code: FGW_RATE_LIMITED → rate_limited. */
export function errorTypeOf(code: string): string {
  return code.startsWith('FGW_') ? code.slice(4).toLowerCase() : 'error';
}

export interface FalValidationEntry {
  loc: Array<string | number>;
  msg: string;
  type: string;
}

/** 422 in fal's (FastAPI's) shape: one entry per problem. */
export class RequestValidationError extends Error {
  readonly statusCode = 422;
  readonly code = 'FGW_VALIDATION_ERROR';
  constructor(readonly detail: FalValidationEntry[]) {
    super(detail.map((d) => `${d.loc.join('.')}: ${d.msg}`).join('; '));
    this.name = 'RequestValidationError';
  }
}
