import { isIP, isIPv4 } from 'node:net';
import { z } from 'zod';

/**
 * The gateway's whole configuration: one zod schema over the environment, parsed once at start.
 * Nothing else in the project reads `process.env`. Every variable carries a description; a test
 * keeps `.env.example` and the README's table in step with this schema.
 */

const int = (min: number, max: number) => {
  const error = `must be an integer from ${min} to ${max}`;
  // Digits only: Number() would also take " " (as 0), "0x10" and "1e3".
  return z
    .string({ error })
    .trim()
    .regex(/^\d+$/, { error })
    .transform(Number)
    .pipe(z.number().int({ error }).min(min, { error }).max(max, { error }));
};

/** Paths (and the trees under them) the gateway's own routes take: the fal proxy path cannot be one. */
const GATEWAY_PATHS = ['/v1', '/fal-ai', '/healthz', '/readyz', '/metrics', '/docs', '/openapi.json', '/playground'];

const boolean = z
  .string()
  .transform((v) => v.trim().toLowerCase())
  .pipe(z.enum(['true', 'false', '1', '0', 'yes', 'no'], { error: 'must be true or false (1 or 0, yes or no also do)' }))
  .transform((v) => v === 'true' || v === '1' || v === 'yes');

/** One entry of a trusted-proxy list, as Fastify takes it: an address, a CIDR (or IPv4 netmask), or a named range. */
function isProxyEntry(entry: string): boolean {
  if (['loopback', 'linklocal', 'uniquelocal'].includes(entry) || isIP(entry) !== 0) return true;
  const [address = '', range, ...rest] = entry.split('/');
  if (range === undefined || rest.length > 0) return false;
  const version = isIP(address);
  if (version === 0) return false;
  if (/^\d{1,3}$/.test(range)) return Number(range) <= (version === 4 ? 32 : 128);
  return version === 4 && isIPv4(range);
}

/** Fastify's trustProxy: true/false, a hop count, or a comma-separated list of addresses/CIDRs. */
const trustProxy = z
  .string()
  .transform((v): boolean | number | string => {
    const value = v.trim();
    if (value === '' || value === 'false' || value === '0') return false;
    if (value === 'true') return true;
    if (/^\d+$/.test(value)) return Number(value);
    return value;
  })
  .refine((value) => typeof value !== 'string' || value.split(',').every((entry) => isProxyEntry(entry.trim())), {
    error: 'must be true, false, a hop count, or a comma-separated list of IP addresses and CIDR ranges (e.g. 10.0.0.0/8,127.0.0.1)',
  });

/**
 * A credential sent or compared in an HTTP header: no spaces, line breaks or other control
 * characters. A secret read from a file often ends with a newline, which no header can carry:
 * the variable is refused at start rather than failing every request.
 */
const HEADER_SAFE = /^[\x21-\x7e]*$/;
const headerSafe = <T extends z.ZodString>(field: T) =>
  field.regex(HEADER_SAFE, {
    error: 'must be visible ASCII characters only: no spaces, line breaks or other control characters (a secret read from a file often ends with a newline: strip it)',
  });

/** A Redis URL's path selects a database: nothing, "/" or "/<number>". */
const REDIS_DB_PATH = /^\/?(\d{1,5})?$/;

/** An http(s) base URL: no credentials (they would be logged and never sent), query or fragment. */
const httpUrl = z
  .url({ protocol: /^https?$/, error: 'must be an http(s) URL' })
  .refine(
    (value) => {
      // Runs after a failed URL check too (zod goes on): a value that is no URL at all must not throw.
      if (!URL.canParse(value)) return true;
      const url = new URL(value);
      return !url.username && !url.password && !url.search && !url.hash;
    },
    { error: 'must be an http(s) URL without credentials, query or fragment' },
  );

const schema = z.object({
  NODE_ENV: z
    .enum(['development', 'production', 'test'], { error: 'must be development, production or test' })
    .default('development')
    .describe('production warns at start when limits and job ownership are per replica (no REDIS_URL).'),
  PORT: int(0, 65535).default(3000).describe('Port the gateway listens on.'),
  HOST: z.string().min(1).default('0.0.0.0').describe('Address the gateway listens on.'),
  LOG_LEVEL: z
    .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
    .default('info')
    .describe('pino log level.'),
  TRUST_PROXY: trustProxy
    .optional()
    .describe(
      'Trust X-Forwarded-* headers from a proxy in front: true, a hop count, or a comma-separated list of proxy addresses/CIDRs. Unset: not trusted.',
    ),
  UPSTREAM_BASE_URL: httpUrl
    .default('https://queue.fal.run')
    .describe("Base URL of fal's queue API, or of a reseller that serves fal's paths."),
  UPSTREAM_TOKEN: headerSafe(
    z
      .string({ error: 'is required: the fal key (or reseller token) the gateway injects upstream' })
      .min(1, { error: 'is required: the fal key (or reseller token) the gateway injects upstream' }),
  )
    .describe('The upstream credential. Required, never logged, never returned to callers; visible ASCII only, no spaces or line breaks (strip the newline of a secret file).'),
  UPSTREAM_AUTH_SCHEME: z
    .enum(['Key', 'Bearer'], { error: 'must be Key (fal) or Bearer (resellers)' })
    .default('Key')
    .describe('Authorization scheme used upstream: Key for fal, Bearer for resellers such as quickrouter.'),
  UPSTREAM_CONNECT_TIMEOUT_MS: int(1, 600_000).default(5_000).describe('Upstream TCP/TLS connect timeout (ms).'),
  UPSTREAM_HEADERS_TIMEOUT_MS: int(1, 600_000)
    .default(30_000)
    .describe('Time to wait for upstream response headers (ms).'),
  UPSTREAM_BODY_TIMEOUT_MS: int(1, 600_000)
    .default(30_000)
    .describe('Maximum idle time between upstream body chunks (ms).'),
  UPSTREAM_REQUEST_TIMEOUT_MS: int(100, 600_000)
    .default(60_000)
    .describe('Longest one upstream call may take, body included (ms): a trickling upstream cannot hold a request.'),
  UPSTREAM_READ_RETRIES: int(0, 10)
    .default(2)
    .describe('Retries of a status or result read after a connection failure, timeout, 429, 502, 503 or 504 (not a 504 for the caller\'s own start timeout). Submits and cancels are never retried.'),
  UPSTREAM_READ_DEADLINE_MS: int(100, 600_000)
    .default(10_000)
    .describe('Total time a read may spend on retries (ms); backoff is exponential with jitter, Retry-After honoured.'),
  CIRCUIT_BREAKER_THRESHOLD: int(1, 1_000)
    .default(5)
    .describe('Consecutive upstream failures (connection errors, timeouts, 5xx answers to submit, status or cancel; never a model\'s 5xx result) that open the circuit breaker.'),
  CIRCUIT_BREAKER_COOLDOWN_MS: int(100, 600_000)
    .default(10_000)
    .describe('How long an open circuit answers 503 with Retry-After before letting one probe through (ms).'),
  UPSTREAM_CONNECTIONS: int(1, 10_000).default(128).describe('Maximum concurrent connections to the upstream.'),
  UPSTREAM_STREAM_CONNECTIONS: int(1, 100_000)
    .default(256)
    .describe('Maximum concurrent status streams to the upstream; a separate pool, so streams never take the connections reads and submits need.'),
  STREAMS_PER_TENANT: int(1, 100_000)
    .default(64)
    .describe("Upstream status streams one tenant may hold at once on each replica, so no tenant can hold every upstream stream connection; its streams past them are served by polling the status (shared and cached like any poll; together no faster than the tenant's read limit, each at least every 15 s)."),
  CLIENT_STREAMS_PER_TENANT: int(1, 1_000_000)
    .default(1_000)
    .describe('Status streams one tenant may have open at once on each replica, upstream and polled together; one more is refused with 429 too_many_streams, so no tenant can hold every connection the process may open.'),
  UPSTREAM_MAX_RESPONSE_BYTES: int(1024, 1024 ** 3)
    .default(64 * 1024 * 1024)
    .describe('Largest upstream response body accepted (bytes); larger answers become 502.'),
  FAL_PROXY_PATH: z
    .string()
    .regex(/^(\/[A-Za-z0-9._-]+)+$/, { error: 'must be a path such as /api/fal/proxy' })
    .refine((path) => !GATEWAY_PATHS.some((own) => path === own || path.startsWith(`${own}/`)), {
      error: `must not be a path the gateway serves itself (${GATEWAY_PATHS.join(', ')}); the default is /api/fal/proxy`,
    })
    .default('/api/fal/proxy')
    .describe("Path of fal's proxy protocol for @fal-ai/client (proxyUrl): targets in x-fal-target-url are served by the gateway's own routes."),
  PUBLIC_BASE_URL: httpUrl
    .transform((v) => v.replace(/\/+$/, ''))
    .optional()
    .describe(
      'Origin used in rewritten status_url/response_url/cancel_url. Unset: derived from each request (X-Forwarded-* honoured only with TRUST_PROXY).',
    ),
  TENANTS_FILE: z
    .string({ error: 'is required: path to the tenants JSON file (see README, "Tenants")' })
    .min(1, { error: 'is required: path to the tenants JSON file (see README, "Tenants")' })
    .describe('Path to the tenants JSON file (tenant ids, SHA-256 digests of their keys, limits).'),
  JOB_TTL_SECONDS: int(60, 30 * 86_400)
    .default(86_400)
    .describe('How long the gateway remembers which tenant owns a job (seconds).'),
  JOB_STORE_MAX_ENTRIES: int(1_000, 50_000_000)
    .default(500_000)
    .describe('Upper bound on jobs tracked in memory; the oldest are forgotten first.'),
  REDIS_URL: z
    .url({ protocol: /^rediss?$/, error: 'must be a redis:// or rediss:// URL' })
    .refine(
      (value) => {
        let url: URL;
        try {
          url = new URL(value);
        } catch {
          return true; // not a URL at all: the check above says so
        }
        // The database: in the path (redis://host:6379/0), or as ?db= (ioredis reads both).
        const db = url.searchParams.get('db');
        return REDIS_DB_PATH.test(url.pathname) && (db === null || /^\d{1,5}$/.test(db));
      },
      { error: 'must name its database as a number, e.g. redis://host:6379/0' },
    )
    .optional()
    .describe(
      'Redis shared by all replicas (rate-limit counters, jobs, quotas, concurrency slots, usage, kept results), e.g. redis://127.0.0.1:6379/0; rediss:// for TLS. Unset: in-memory, per replica.',
    ),
  REDIS_KEY_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9:_.-]{1,64}$/, { error: 'must be 1-64 characters of letters, digits, ":", "_", ".", "-"' })
    .default('fal-gateway:')
    .describe('Prefix of every Redis key, so several deployments can share one Redis.'),
  REDIS_COMMAND_TIMEOUT_MS: int(5, 60_000)
    .default(500)
    .describe('Longest a Redis command may take before the request fails over to the store error policy (ms); it includes any event-loop delay, so keep room for a busy replica.'),
  RATE_LIMIT_ON_STORE_ERROR: z
    .enum(['open', 'closed'], { error: 'must be open or closed' })
    .default('open')
    .describe(
      'When the rate-limit store (Redis) cannot answer: open lets requests through uncounted, closed answers 503 rate_limit_unavailable. Either way, with the job store on the same Redis, what needs it (a submit, and status, result and cancel, which check whose job it is) is 503 store_unavailable while it is down.',
    ),
  IMAGE_DATA_URI_MAX_BYTES: int(1024, 512 * 1024 * 1024)
    .default(8 * 1024 * 1024)
    .describe('Largest image_url data URI accepted (bytes); larger images must be sent as URLs.'),
  IDEMPOTENCY_TTL_SECONDS: int(60, 30 * 86_400)
    .default(86_400)
    .describe('How long an Idempotency-Key replays the first answer to a submit (seconds).'),
  BODY_LIMIT_BYTES: int(1024, 512 * 1024 * 1024)
    .default(10 * 1024 * 1024)
    .describe('Largest submit body accepted (bytes), JSON or form, sized for a data-URI image; every other request takes at most 16 KiB.'),
  REQUEST_TIMEOUT_MS: int(1_000, 3_600_000)
    .default(120_000)
    .describe('Longest a client may take to send a whole request, headers and body (ms); a slower one is cut off with 408, so trickled bytes cannot hold a connection.'),
  SHUTDOWN_DRAIN_DELAY_MS: int(0, 600_000)
    .default(2_000)
    .describe(
      'On SIGTERM/SIGINT, how long the gateway keeps serving (readiness 503, Connection: close) so load balancers and clients move away before it stops listening (ms).',
    ),
  SHUTDOWN_GRACE_MS: int(0, 600_000)
    .default(10_000)
    .describe('On SIGTERM/SIGINT, the whole shutdown budget (drain delay, open status streams, in-flight requests) before the process exits anyway (ms); must be larger than SHUTDOWN_DRAIN_DELAY_MS. Status streams may run until 2 s before it ends; upstream calls still waiting then (a submit on a slow upstream) end 1 s before it, so their callers get an answer (500 submit_outcome_unknown for a submit that was sent).'),
  TOKEN_SECRET: z
    .string()
    .min(32, { error: 'must be at least 32 characters (e.g. openssl rand -base64 48)' })
    .optional()
    .describe('Secret that signs short-lived browser tokens (POST /v1/tokens), 32+ characters. Unset: tokens are disabled. Never logged.'),
  STATUS_CACHE_MS: int(0, 60_000)
    .default(300)
    .describe('How long a non-terminal status (IN_QUEUE, IN_PROGRESS), or a result answer that is not ready yet (a 4xx), is served from memory before asking upstream again (ms); concurrent reads of one job always share one upstream call. 0: no cache.'),
  RESULT_CACHE_TTL_SECONDS: int(0, 30 * 86_400)
    .default(86_400)
    .describe('How long a COMPLETED status and a fetched result are kept (memory, or Redis with REDIS_URL), so repeated reads never go upstream and results outlive fal\'s retention (seconds). 0: not kept.'),
  RESULT_PREFETCH: boolean
    .default(true)
    .describe('Fetch a job\'s result into the cache as soon as the gateway sees it COMPLETED (a few at a time), so it outlives fal\'s retention even if the client comes later; the client\'s own fetch is then served from the cache.'),
  RESULT_CACHE_MAX_ITEM_BYTES: int(1024, 64 * 1024 * 1024)
    .default(1024 * 1024)
    .describe('Largest result body kept in the result cache (bytes); larger results are always read from upstream.'),
  RESULT_CACHE_MAX_BYTES: int(1024 * 1024, 64 * 1024 ** 3)
    .default(256 * 1024 * 1024)
    .describe('Memory the in-process result cache may use (bytes); when full, the tenant keeping the most bytes gives up its oldest result first, so one tenant\'s large results never push out the others\'. Unused with REDIS_URL.'),
  METRICS_ENABLED: boolean.default(true).describe('Serve Prometheus metrics at GET /metrics.'),
  METRICS_TOKEN: headerSafe(z.string().min(16, { error: 'must be at least 16 characters' }))
    .optional()
    .describe('When set (16+ characters), GET /metrics requires `Authorization: Bearer <METRICS_TOKEN>`. Unset: /metrics is open (keep it off the public network). Never logged.'),
  ADMIN_TOKEN: headerSafe(z.string().min(32, { error: 'must be at least 32 characters (e.g. openssl rand -base64 48)' }))
    .optional()
    .describe('Bearer token of the operators (32+ characters): GET /v1/usage with it sees every tenant. Unset: no admin access. Never logged.'),
  USAGE_RETENTION_DAYS: int(1, 3_660)
    .default(400)
    .describe('How long per-tenant daily usage is kept (days).'),
  STALE_JOB_CHECK_MS: int(0, 3_600_000)
    .default(30_000)
    .describe('How long a job whose end the gateway has not seen goes unchecked before the gateway asks upstream itself (at most 100 jobs per check), so usage counts jobs nobody reads and finished jobs free their concurrency slot (ms). 0: never (a job nobody reads to its end then holds its concurrency slot for up to a day; a warning says so at start).'),
  TENANTS_WATCH: boolean
    .default(true)
    .describe('Reload the tenants file when it changes on disk (it is always reloaded on SIGHUP).'),
  DOCS_ENABLED: boolean.default(true).describe('Serve Swagger UI at /docs and the document at /openapi.json.'),
  PLAYGROUND_ENABLED: boolean
    .optional()
    .describe('Serve the /playground page. Unset: on, except with NODE_ENV=production.'),
}).check((ctx) => {
  const { SHUTDOWN_GRACE_MS: grace, SHUTDOWN_DRAIN_DELAY_MS: drain } = ctx.value;
  // The budget covers the drain delay and then the requests in flight: it must outlast the delay.
  if (grace <= drain) {
    ctx.issues.push({
      code: 'custom',
      input: grace,
      path: ['SHUTDOWN_GRACE_MS'],
      message: `must be larger than SHUTDOWN_DRAIN_DELAY_MS (${drain}): the shutdown budget covers the drain delay and then the requests in flight`,
    });
  }
});

export const configSchema = schema;
export type Config = z.infer<typeof schema>;

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** Parses the environment; throws a ConfigError with one line per problem. */
export function parseConfig(env: Record<string, string | undefined>): Config {
  // An empty variable is treated as unset, as shells and .env files commonly leave them.
  const cleaned = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const result = schema.safeParse(cleaned);
  if (!result.success) {
    throw new ConfigError(
      result.error.issues.map((issue) => `${issue.path.join('.') || '(environment)'}: ${issue.message}`),
    );
  }
  return result.data;
}

/** Names and descriptions of every variable, for docs and their drift check. */
export function describeConfig(): Array<{ name: string; description: string; default?: unknown; required: boolean }> {
  return Object.entries(schema.shape).map(([name, field]) => {
    const parsed = field.safeParse(undefined);
    return {
      name,
      description: field.description ?? '',
      required: !parsed.success,
      ...(parsed.success && parsed.data !== undefined ? { default: (field as z.ZodDefault).def.defaultValue } : {}),
    };
  });
}
