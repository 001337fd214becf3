/**
 * One example per error status in the OpenAPI document (the zod transform keeps no examples on
 * responses), with per-operation overrides where the upstream's own body differs.
 */
const ERROR_EXAMPLES: Record<string, unknown> = {
  400: { detail: 'The request body is not valid JSON: Unexpected end of JSON input', error_type: 'invalid_json' },
  401: {
    detail: 'A valid API key is required: send "Authorization: Bearer <key>", "Authorization: Key <key>" or "x-api-key: <key>"',
    error_type: 'unauthorized',
  },
  403: {
    detail:
      'Requests from origin https://app.example.com are not allowed for this tenant; the operator lists allowed origins in the tenants file (allowedOrigins)',
    error_type: 'origin_not_allowed',
  },
  404: { detail: 'Request not found', error_type: 'request_not_found' },
  409: { detail: 'A submit with this Idempotency-Key is still in progress; retry shortly to get its answer', error_type: 'idempotency_in_progress' },
  413: { detail: 'The request body exceeds the limit of 10485760 bytes', error_type: 'payload_too_large' },
  415: { detail: 'Content-Type "text/plain" is not supported; send application/json', error_type: 'unsupported_media_type' },
  422: {
    detail: [{ loc: ['body', 'strength'], msg: 'strength must be a number between 0.01 and 1', type: 'less_than_equal' }],
    error_type: 'validation_error',
  },
  429: { detail: 'Rate limit exceeded for submit requests (10 per 1 minute). Retry in 42 seconds.', error_type: 'rate_limited' },
  500: {
    detail:
      'The job 6f1c2b8e-0000-4000-8000-000000000001 was queued upstream, but the gateway could not record that it is yours, so it cannot serve its status or result. Keep this request_id and contact the operator.',
    error_type: 'ownership_not_recorded',
  },
  502: {
    detail:
      "The upstream rejected the gateway's own credentials (HTTP 401). This is not your key: the operator must check UPSTREAM_TOKEN and UPSTREAM_AUTH_SCHEME.",
    error_type: 'upstream_auth_failed',
  },
  501: { detail: 'Browser tokens are not enabled on this gateway: the operator must set TOKEN_SECRET', error_type: 'tokens_disabled' },
  503: { detail: 'The upstream could not be reached; try again shortly', error_type: 'upstream_unavailable' },
  504: { detail: 'The upstream did not answer in time', error_type: 'upstream_timeout' },
};

const READ_LIMITED = { detail: 'Rate limit exceeded for read requests (600 per 1 minute). Retry in 12 seconds.', error_type: 'rate_limited' };

const BAD_REQUEST_ID = {
  detail: [{ loc: ['path', 'request_id'], msg: 'request_id must be the id returned by submit (letters, digits, "-", "_", ".")', type: 'value_error' }],
  error_type: 'validation_error',
};

/** A 5xx of fal's own, passed on (the category is the gateway's when fal named none). */
const UPSTREAM_500 = { detail: 'Internal Server Error', error_type: 'upstream_error' };
const BAD_HOST = { detail: 'The Host header does not name a host; the operator can set PUBLIC_BASE_URL', error_type: 'bad_request' };

const OPERATION_EXAMPLES: Record<string, Record<string, unknown>> = {
  getStatus: { 400: BAD_HOST, 422: BAD_REQUEST_ID, 429: READ_LIMITED, 500: UPSTREAM_500 },
  // fal relays the model's own answer: its verdict on the input is pydantic's 422, without error_type.
  getResult: {
    400: { detail: 'Request is still in progress' },
    422: { detail: [{ loc: ['body', 'image_url'], msg: 'Could not load the image from image_url', type: 'value_error' }] },
    429: READ_LIMITED,
    500: { detail: 'CUDA out of memory', error_type: 'upstream_error' },
  },
  cancel: { 400: { status: 'ALREADY_COMPLETED' }, 404: { status: 'NOT_FOUND', detail: 'Request not found', error_type: 'request_not_found' }, 422: BAD_REQUEST_ID, 429: READ_LIMITED, 500: UPSTREAM_500 },
  streamStatus: {
    400: BAD_HOST,
    422: BAD_REQUEST_ID,
    429: READ_LIMITED,
    500: UPSTREAM_500,
  },
  createBrowserToken: {
    403: { detail: 'A browser token cannot create tokens: call this with a tenant key, from a backend', error_type: 'token_cannot_mint' },
    422: {
      detail: [{ loc: ['body', 'ttl_seconds'], msg: 'ttl_seconds must be an integer between 60 and 3600', type: 'less_than_equal' }],
      error_type: 'validation_error',
    },
    429: READ_LIMITED,
  },
  getUsage: {
    422: { detail: [{ loc: ['query', 'from'], msg: 'from must not be after to', type: 'value_error' }], error_type: 'validation_error' },
    429: READ_LIMITED,
    503: { detail: 'The job store is unavailable; try again shortly', error_type: 'store_unavailable' },
  },
  getMetrics: { 401: { detail: 'GET /metrics requires "Authorization: Bearer <METRICS_TOKEN>"', error_type: 'unauthorized' } },
};

type Operation = { operationId?: string; responses?: Record<string, { content?: Record<string, { example?: unknown; schema?: { $ref?: string } }> }> };

export function addErrorExamples<T extends { paths?: Record<string, Record<string, Operation>> }>(doc: T): T {
  for (const methods of Object.values(doc.paths ?? {})) {
    for (const operation of Object.values(methods)) {
      const own = OPERATION_EXAMPLES[(operation.operationId ?? '').replace(/^fal(.)/, (_m, c: string) => c.toLowerCase())] ?? {};
      for (const [status, response] of Object.entries(operation.responses ?? {})) {
        const media = response.content?.['application/json'];
        const ref = media?.schema?.$ref ?? '';
        const example = own[status] ?? (ref.endsWith('/Error') || ref.endsWith('/UpstreamError') ? ERROR_EXAMPLES[status] : undefined);
        if (media && example !== undefined) media.example = example;
      }
    }
  }
  return doc;
}
