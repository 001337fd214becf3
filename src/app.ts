import type { Duplex } from 'node:stream';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import rateLimit from '@fastify/rate-limit';
import Fastify, { errorCodes, LogController, type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify';
import { Agent, type Dispatcher } from 'undici';
import type { Config } from './config.js';
import { registerErrorHandling } from './http/error-handler.js';
import { markAnsweredOnSocket, recordIfClientGone, registerRequestRecord } from './http/request-record.js';
import { proxyRewrite, TARGET_HEADER } from './http/fal-proxy.js';
import { errors } from './errors.js';
import { validatorCompiler } from './http/validation.js';
import type { AccountingStore } from './accounting/accounting-store.js';
import { MemoryAccountingStore } from './accounting/memory-accounting-store.js';
import { RedisAccountingStore } from './accounting/redis-accounting-store.js';
import { MemoryAnswerCache, RedisAnswerCache } from './jobs/answer-cache.js';
import { JobReads } from './jobs/job-reads.js';
import type { JobStore } from './jobs/job-store.js';
import { JobLifecycle } from './jobs/lifecycle.js';
import { MemoryJobStore } from './jobs/memory-job-store.js';
import { RedisJobStore } from './jobs/redis-job-store.js';
import { GatewayMetrics, UNMATCHED_ROUTE } from './metrics.js';
import { closeRedis, createRedis, redactUrl, redisAbandoned, waitForRedis } from './redis.js';
import { registerDocsUi, registerOpenApi } from './routes/docs.js';
import { HEALTH_PATH, healthRoutes, READY_PATH } from './routes/health.js';
import { METRICS_PATH, metricsRoutes } from './routes/metrics.js';
import { queueRoutes, SECURITY, submitRoutes, type QueueRouteDeps } from './routes/queue.js';
import { streamRoutes } from './routes/stream.js';
import { submitLimit } from './routes/submit.js';
import { tokenRoutes } from './routes/tokens.js';
import { usageRoutes } from './routes/usage.js';
import { TokenIssuer } from './tenants/tokens.js';
import { corsForRefusal, registerPreflight } from './http/cors.js';
import { unsupportedCharset, unsupportedEncoding } from './http/content-encoding.js';
import { APP_ID } from './model.js';
import { playgroundRoutes } from './routes/playground.js';
import { registerMultipartSubmit } from './http/multipart.js';
import { mayUpload, registerAuth } from './tenants/auth.js';
import { createPolicyLimiter, decorateRateLimitState } from './tenants/rate-limits.js';
import { dataUriBytes, largestFileFor } from './tenants/input-policy.js';
import { redisRateLimitStore } from './tenants/rate-limit-store.js';
import { decorateRateLimitFields, writeRateLimitFields } from './tenants/ratelimit-fields.js';
import { TenantRegistry } from './tenants/registry.js';
import type { Tenant } from './tenants/tenants-file.js';
import { CircuitBreaker } from './upstream/circuit-breaker.js';
import { UpstreamClient } from './upstream/client.js';

export const VERSION: string = (
  JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
).version;

/**
 * Paths whose values must never reach a log line. The gateway logs neither request headers nor
 * its configuration; these catch a future `log.info({ req })` or `log.info({ headers })`.
 */
export const REDACTED_LOG_PATHS = [
  'req.headers.authorization',
  'req.headers["x-api-key"]',
  'req.headers.cookie',
  'headers.authorization',
  'headers["x-api-key"]',
  'headers.cookie',
  'UPSTREAM_TOKEN',
  'config.UPSTREAM_TOKEN',
  'TOKEN_SECRET',
  'config.TOKEN_SECRET',
  'METRICS_TOKEN',
  'config.METRICS_TOKEN',
  'ADMIN_TOKEN',
  'config.ADMIN_TOKEN',
];

export interface AppOptions {
  config: Config;
  tenants: readonly Tenant[] | TenantRegistry;
  /** undici dispatcher for upstream calls; the app creates (and closes) its own pool when absent. */
  dispatcher?: Dispatcher;
  jobs?: JobStore;
  /** Fastify logger options or `false`; defaults to pino at config.LOG_LEVEL with redaction. */
  logger?: FastifyServerOptions['logger'];
  loggerInstance?: FastifyServerOptions['loggerInstance'];
  /** Where the default (production) logger writes; stdout when absent. */
  logStream?: { write(line: string): void };
}

export interface GatewayApp extends FastifyInstance {
  /** Marks the app as draining: /readyz answers 503 so load balancers stop sending traffic. */
  startDraining(): void;
  /** The tenants in force now. */
  tenants(): TenantRegistry;
  /**
   * Replaces every tenant at once (keys, limits, quotas, origins). Requests already past
   * authentication finish with the tenant they started with; the next one sees the new registry.
   */
  replaceTenants(next: readonly Tenant[] | TenantRegistry): void;
  /** Resolves when the gateway's background work (accounting finished jobs, keeping their results) is done. */
  whenIdle(): Promise<void>;
  /**
   * Resolves true once no status stream is open on this replica, or false after `timeoutMs`.
   * A shutdown waits on it, so streams whose job is about to end finish instead of being cut off.
   */
  streamsEnded(timeoutMs: number): Promise<boolean>;
  /**
   * Ends the upstream calls still under way, each as its deadline would (the shutdown budget is
   * running out): their callers get an answer, not a dropped connection. Returns how many.
   */
  abandonUpstreamCalls(reason: string): number;
  /** Whether the job store answers now (what /readyz checks, less draining): false while Redis is unreachable. */
  storeReady(): Promise<boolean>;
}

/**
 * Whether a JSON body needs Fastify's guarded parser (secure-json-parse: refuses `__proto__` and
 * `constructor` keys, drops a byte order mark). That parser scans every body twice with regular
 * expressions; a body that cannot spell those keys (neither word, no \u escape) and has no byte
 * order mark gets the same value from JSON.parse alone.
 */
function needsGuardedParse(text: string): boolean {
  return text.charCodeAt(0) === 0xfeff || text.includes('__proto__') || text.includes('constructor') || text.includes('\\u');
}

/** Whether a request announces a body (HTTP/1.1: a length above 0, or a transfer coding). */
function mayHaveBody(headers: FastifyRequest['headers']): boolean {
  const length = headers['content-length'];
  return headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/** Why a body the JSON parser refused was refused: its syntax, or a prototype-polluting key. */
function jsonProblem(text: string): Error {
  try {
    JSON.parse(text);
  } catch (err) {
    return new errors.InvalidJson((err as Error).message);
  }
  return new errors.BadRequest('The request body may not hold "__proto__" or "constructor" keys');
}

/** Each request's id by its Node request, for an answer written on the raw connection (a 408) to name it. */
const requestIds = new WeakMap<IncomingMessage, string>();

/**
 * Node's HTTP errors on a connection (a request not received within REQUEST_TIMEOUT_MS, headers
 * too large, bytes that are not HTTP), answered in the gateway's envelope on a connection that
 * then closes. Nothing is written to a socket already gone or answered. Each answer is recorded
 * once: by its request's own line when a request was under way (its headers had arrived), or here
 * with a line and a count of its own.
 */
function clientErrorAnswer(metrics: GatewayMetrics) {
  // Fastify calls it with itself as `this`.
  return function answerClientError(this: FastifyInstance, err: Error & { code?: string }, socket: Duplex): void {
    if (err.code === 'ECONNRESET' || socket.destroyed) return;
    const [status, reason, detail, type] =
      err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        // Not fal's request_timeout, which says a job did not start within X-Fal-Request-Timeout.
        ? [408, 'Request Timeout', 'The request was not received in time (REQUEST_TIMEOUT_MS)', 'request_not_received']
        : err.code === 'HPE_HEADER_OVERFLOW'
          ? [431, 'Request Header Fields Too Large', 'The request headers are too large', 'headers_too_large']
          : [400, 'Bad Request', 'The request is not valid HTTP', 'bad_request'];
    const body = JSON.stringify({ detail, error_type: type });
    // Unless an answer is already under way on it (a reused connection may have sent others before).
    const current = (socket as Duplex & { _httpMessage?: { headersSent?: boolean; req?: IncomingMessage } | null })._httpMessage;
    if (socket.writable && !current?.headersSent) {
      // The headers every answer of the gateway carries: its id (the request's own when one is
      // under way, logged on its line; else a new one, logged here), the error type as fal's
      // infrastructure errors give it, and the same hardening as any API answer.
      const id = (current?.req && requestIds.get(current.req)) ?? randomUUID();
      socket.write(
        `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
          `X-Fal-Error-Type: ${type}\r\nX-Request-Id: ${id}\r\nX-Content-Type-Options: nosniff\r\n` +
          `Content-Security-Policy: default-src 'none'; frame-ancestors 'none'\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n\r\n${body}`,
      );
      if (current) markAnsweredOnSocket(current, status, type);
      else {
        metrics.httpRequest(UNMATCHED_ROUTE, 'unknown', status, undefined, 0);
        this.log.info({ reqId: id, ip: (socket as Duplex & { remoteAddress?: string }).remoteAddress, statusCode: status, errorType: type }, 'request');
      }
    }
    socket.destroy(err);
  };
}

/** A hop count trusts that many proxies nearest to the gateway. */
function trustProxyOption(value: Config['TRUST_PROXY']): boolean | string | ((addr: string, hop: number) => boolean) {
  if (typeof value === 'number') return (_addr, hop) => hop < value;
  return value ?? false;
}

/** How long, once closing, a connection whose request has begun to arrive has to complete it. */
const PARTIAL_REQUEST_GRACE_MS = 1_000;

/** The largest body of any request but a submit (a browser token's options, a cancel's nothing). */
export const OTHER_BODY_LIMIT_BYTES = 16 * 1024;

/** Whether the gateway listens on this machine's loopback only (127.0.0.0/8, ::1, localhost). */
function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

export async function buildApp(options: AppOptions): Promise<GatewayApp> {
  const { config } = options;
  // Always present (other modules record into it); served at /metrics only when enabled.
  const metrics = new GatewayMetrics({ defaultMetrics: config.METRICS_ENABLED, version: VERSION });
  const app = Fastify({
    ...(options.loggerInstance
      ? { loggerInstance: options.loggerInstance }
      : {
          logger: options.logger ?? {
            level: config.LOG_LEVEL,
            redact: { paths: REDACTED_LOG_PATHS, censor: '[redacted]' },
            ...(options.logStream ? { stream: options.logStream } : {}),
          },
        }),
    trustProxy: trustProxyOption(config.TRUST_PROXY),
    // Only the submit routes take a large body (their own bodyLimit): every other route, an
    // unknown path and a preflight read at most this much before they answer, so a caller
    // without a key cannot make the gateway read and parse megabytes to answer a 404.
    bodyLimit: Math.min(config.BODY_LIMIT_BYTES, OTHER_BODY_LIMIT_BYTES),
    // A client that sends its request (headers and body) slower than this is cut off (408): it
    // cannot hold a connection open for ever by trickling bytes.
    requestTimeout: config.REQUEST_TIMEOUT_MS,
    http: {
      // Node enforces the request timeout only when the headers timeout is no longer than it,
      // and looks for late clients every 30 s by default: set here, so the timeout holds.
      requestTimeout: config.REQUEST_TIMEOUT_MS,
      headersTimeout: Math.min(60_000, config.REQUEST_TIMEOUT_MS),
      connectionsCheckingInterval: Math.max(250, Math.min(5_000, Math.floor(config.REQUEST_TIMEOUT_MS / 4))),
    },
    // One log line per request, written by the onResponse hook below.
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'reqId' }),
    // Always the gateway's own id: a caller must not choose the id its log lines are filed under.
    // A caller's own x-request-id is logged beside it (clientRequestId) for correlation.
    genReqId: (req) => {
      const id = randomUUID();
      requestIds.set(req, id);
      return id;
    },
    // Requests already on an open connection are still served while closing (no reset, no
    // bare 503); Fastify closes each connection after its response.
    return503OnClosing: false,
    frameworkErrors: (error, request, reply) => {
      reply.header('x-request-id', request.id).header('x-content-type-options', 'nosniff');
      (reply as FastifyReply).code(400).send({ detail: `The request could not be read: ${error.message}`, error_type: 'bad_request' });
    },
    clientErrorHandler: clientErrorAnswer(metrics),
    // Path ids up to REQUEST_ID_PATTERN's 128 characters reach the routes (the router stops at 100
    // by default): a job recorded at submit must stay readable, and a longer id gets the schema's 422.
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 256 },
    rewriteUrl: proxyRewrite(config.FAL_PROXY_PATH),
  }) as unknown as GatewayApp;

  app.decorate('metrics', metrics);

  let draining = false;
  app.decorate('startDraining', () => {
    draining = true;
  });

  let registry = options.tenants instanceof TenantRegistry ? options.tenants : new TenantRegistry(options.tenants);
  metrics.tenants(registry.tenants.length);
  app.decorate('tenants', () => registry);
  app.decorate('replaceTenants', (next: readonly Tenant[] | TenantRegistry) => {
    registry = next instanceof TenantRegistry ? next : new TenantRegistry(next);
    metrics.tenants(registry.tenants.length);
  });
  const tokens = config.TOKEN_SECRET ? new TokenIssuer(config.TOKEN_SECRET, Date.now, config.PUBLIC_BASE_URL ?? 'fal-gateway') : undefined;
  const ownDispatcher = options.dispatcher
    ? undefined
    : new Agent({
        connections: config.UPSTREAM_CONNECTIONS,
        connectTimeout: config.UPSTREAM_CONNECT_TIMEOUT_MS,
        headersTimeout: config.UPSTREAM_HEADERS_TIMEOUT_MS,
        bodyTimeout: config.UPSTREAM_BODY_TIMEOUT_MS,
        keepAliveTimeout: 10_000,
      });
  const ownStreamDispatcher = options.dispatcher
    ? undefined
    : new Agent({
        connections: config.UPSTREAM_STREAM_CONNECTIONS,
        connectTimeout: config.UPSTREAM_CONNECT_TIMEOUT_MS,
        headersTimeout: config.UPSTREAM_HEADERS_TIMEOUT_MS,
        bodyTimeout: config.UPSTREAM_BODY_TIMEOUT_MS,
      });
  const upstream = new UpstreamClient({
    baseUrl: config.UPSTREAM_BASE_URL,
    token: config.UPSTREAM_TOKEN,
    authScheme: config.UPSTREAM_AUTH_SCHEME,
    dispatcher: options.dispatcher ?? ownDispatcher!,
    ...(ownStreamDispatcher ? { streamDispatcher: ownStreamDispatcher } : {}),
    maxResponseBytes: config.UPSTREAM_MAX_RESPONSE_BYTES,
    requestTimeoutMs: config.UPSTREAM_REQUEST_TIMEOUT_MS,
    readRetry: { retries: config.UPSTREAM_READ_RETRIES, deadlineMs: config.UPSTREAM_READ_DEADLINE_MS, baseDelayMs: 100, maxDelayMs: 2_000 },
    breaker: new CircuitBreaker({
      threshold: config.CIRCUIT_BREAKER_THRESHOLD,
      cooldownMs: config.CIRCUIT_BREAKER_COOLDOWN_MS,
      onStateChange: (state) => {
        metrics.circuitState(state);
        app.log[state === 'closed' ? 'info' : 'warn']({ circuit: state }, `upstream circuit ${state}`);
      },
    }),
    userAgent: `fal-gateway/${VERSION}`,
    onRetry: (info) => app.log.warn(info, 'retrying upstream read'),
    onCall: (info) => metrics.upstreamCall(info.operation, info.outcome, info.seconds),
  });
  const redis = config.REDIS_URL
    ? createRedis({ url: config.REDIS_URL, keyPrefix: config.REDIS_KEY_PREFIX, commandTimeoutMs: config.REDIS_COMMAND_TIMEOUT_MS }, app.log)
    : undefined;
  const jobs =
    options.jobs ??
    (redis
      ? new RedisJobStore(redis, config.JOB_TTL_SECONDS * 1000)
      : new MemoryJobStore({
          ttlMs: config.JOB_TTL_SECONDS * 1000,
          maxEntries: config.JOB_STORE_MAX_ENTRIES,
          onEvict: (count) => app.log.warn({ count }, 'job store full: forgot the oldest jobs before their TTL; raise JOB_STORE_MAX_ENTRIES'),
        }));
  const accounting: AccountingStore = redis
    ? new RedisAccountingStore(redis, { retentionDays: config.USAGE_RETENTION_DAYS })
    : new MemoryAccountingStore({ retentionDays: config.USAGE_RETENTION_DAYS });
  metrics.readConcurrencyFrom(() =>
    Promise.all(
      registry.tenants
        .filter((tenant) => tenant.limits.maxConcurrentJobs !== undefined)
        .map(async (tenant) => [tenant.id, await accounting.slotsInUse(tenant.id)] as const),
    ),
  );
  const resultTtlMs = config.RESULT_CACHE_TTL_SECONDS * 1000;
  const reads = new JobReads({
    upstream,
    cache: redis
      ? new RedisAnswerCache(redis, resultTtlMs)
      : new MemoryAnswerCache({ ttlMs: resultTtlMs, maxBytes: config.RESULT_CACHE_MAX_BYTES }),
    statusTtlMs: config.STATUS_CACHE_MS,
    maxResultBytes: config.RESULT_CACHE_MAX_ITEM_BYTES,
    onStatus: (requestId, status) => lifecycle.observe(requestId, status),
    onFinalResult: (requestId) => lifecycle.resultSeen(requestId),
    onLookup: (kind, outcome) => metrics.cache(kind, outcome),
    // The memory cache shares its room among tenants by owner (Redis bounds its own memory).
    ...(redis ? {} : { ownerOf: (requestId: string) => jobs.ownerOf(requestId) }),
    onCacheError: (operation, err) => {
      metrics.storeError('cache', operation);
      app.log.warn({ err: (err as Error).message, operation }, 'answer cache unavailable: reading upstream');
    },
  });
  const lifecycle: JobLifecycle = new JobLifecycle({
    jobs,
    accounting,
    reads,
    log: app.log,
    metrics,
    warmResults: resultTtlMs > 0 && config.RESULT_PREFETCH,
    staleCheckMs: config.STALE_JOB_CHECK_MS,
    pendingSlotMaxMs: config.UPSTREAM_REQUEST_TIMEOUT_MS + 60_000,
  });
  app.addHook('onReady', async () => lifecycle.start());
  app.decorate('abandonUpstreamCalls', (reason: string) => upstream.abandonAll(reason));
  app.decorate('whenIdle', () => lifecycle.idle());
  app.decorate('storeReady', () => jobs.ready().catch(() => false));
  let openStreams = 0;
  const streamWaiters = new Set<() => void>();
  const countStreams = (count: number) => {
    openStreams = count;
    if (count === 0) for (const wake of [...streamWaiters]) wake();
  };
  app.decorate('streamsEnded', (timeoutMs: number) => {
    if (openStreams === 0) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      const done = (ended: boolean) => {
        clearTimeout(timer);
        streamWaiters.delete(wake);
        resolve(ended);
      };
      const wake = () => done(true);
      const timer = setTimeout(() => done(false), timeoutMs);
      streamWaiters.add(wake);
    });
  });
  if (redis && !(await waitForRedis(redis, 2_000)) && !redisAbandoned(redis)) {
    // (A Redis the gateway closed itself, a database it does not have say, was logged as an error already.)
    app.log.warn({ redis: redactUrl(config.REDIS_URL!) }, 'redis not reachable yet: not ready until it is; reconnecting in the background');
  }
  if (config.STALE_JOB_CHECK_MS === 0 && registry.tenants.some((tenant) => tenant.limits.maxConcurrentJobs !== undefined)) {
    app.log.warn(
      'STALE_JOB_CHECK_MS=0: a job whose end nobody reads keeps its tenant\'s maxConcurrentJobs slot taken for up to a day; set STALE_JOB_CHECK_MS (e.g. 30000) to free it',
    );
  }
  if (config.METRICS_ENABLED && !config.METRICS_TOKEN && config.NODE_ENV === 'production' && !isLoopbackHost(config.HOST)) {
    app.log.warn(
      `METRICS_TOKEN is not set: GET /metrics (tenant ids, traffic, job counts) is open to anyone who can reach ${config.HOST}:${config.PORT}; set METRICS_TOKEN, or keep the port off networks you do not trust`,
    );
  }
  // An image travels in the submit body: as a data URI in JSON, or as a file in a form, whose
  // data URI (made here) is 4/3 of it. A cap past the largest file's URI is never reached.
  const reachableDataUri = dataUriBytes(config.BODY_LIMIT_BYTES);
  if (config.IMAGE_DATA_URI_MAX_BYTES > reachableDataUri) {
    app.log.warn(
      `IMAGE_DATA_URI_MAX_BYTES (${config.IMAGE_DATA_URI_MAX_BYTES}) is more than the data URI of the largest image a submit body of BODY_LIMIT_BYTES (${config.BODY_LIMIT_BYTES}) can carry (${reachableDataUri}): larger images are refused as payload_too_large first; raise BODY_LIMIT_BYTES to let them through`,
    );
  }
  if (!redis && config.NODE_ENV === 'production') {
    app.log.warn('REDIS_URL is not set: rate limits and job ownership are per replica; set REDIS_URL when running more than one');
  }

  // JSON only: anything else is a 415, not a body the schema then rejects. An empty JSON body
  // is no body (fal's clients send the JSON content type on a bodiless cancel too).
  app.removeContentTypeParser(['text/plain', 'application/json']);
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    const refused = unsupportedEncoding(request.headers) ?? unsupportedCharset(request.headers);
    if (refused) return done(refused);
    const text = body.toString();
    if (text.trim() === '') return done(null, undefined);
    if (!needsGuardedParse(text)) {
      let value: unknown;
      try {
        value = JSON.parse(text);
      } catch {
        return done(jsonProblem(text));
      }
      return done(null, value);
    }
    // Fastify's parser says only "not valid JSON"; on failure, say what is wrong.
    parseJson(request, text, (err, value) => (err ? done(jsonProblem(text)) : done(null, value)));
  });
  // Any other type: an empty body is no body (`curl -X PUT -d ''` sends a form type on a cancel);
  // a body is refused at once (415), unread.
  app.addContentTypeParser('*', (request, _payload, done) => {
    if (request.headers['content-length'] === '0' && request.headers['transfer-encoding'] === undefined) return done(null, undefined);
    done(new errorCodes.FST_ERR_CTP_INVALID_MEDIA_TYPE(request.headers['content-type']));
  });
  app.setValidatorCompiler(validatorCompiler);
  // Responses are documented by their schemas but never reshaped: upstream bodies pass as fal sent them.
  app.setSerializerCompiler(() => (data) => JSON.stringify(data));
  registerErrorHandling(app, (request, reply) => corsForRefusal(request, reply, registry));

  decorateRateLimitFields(app);
  decorateRateLimitState(app);
  // Hooks on every request are plain callbacks: no promise per hook on the hot path.
  app.addHook('onSend', (request, reply, payload, done) => {
    reply.header('x-request-id', request.id);
    reply.header('x-content-type-options', 'nosniff');
    // API answers are data, never a page: nothing may load or frame them. The docs page sets its own.
    reply.header('content-security-policy', "default-src 'none'; frame-ancestors 'none'");
    reply.header('referrer-policy', 'no-referrer');
    writeRateLimitFields(request, reply);
    // While draining, every response closes its connection so clients reconnect elsewhere
    // instead of reusing a socket that is about to go away.
    if (draining) reply.header('connection', 'close');
    // Answered before its body arrived (a 401 or 403 from authentication, a 413): the connection
    // closes after the answer instead of reading, and discarding, whatever the client still sends.
    // (A request without a body may not count as complete yet when answered at once, a preflight
    // say: there is nothing to discard, and its connection stays open.)
    if (!request.raw.complete && mayHaveBody(request.headers)) reply.header('connection', 'close');
    recordIfClientGone(request, reply);
    done(null, payload);
  });
  registerRequestRecord(app, metrics, { uncounted: new Set([METRICS_PATH]), quietWhenOk: new Set([METRICS_PATH, HEALTH_PATH, READY_PATH]) });
  // Closing waits for every connection with a request in flight, and Node counts a connection
  // that has not sent its first request yet (a browser's preconnect, a client's spare) as busy
  // until it times out. When the gateway closes, connections with no request in flight go at once.
  const sockets = new Set<Duplex>();
  app.server.on('connection', (socket: Duplex) => {
    sockets.add(socket);
    // Read once now, the socket keeps it: the log line of a request whose connection is already
    // gone (a client that left, a 408) still names the caller's address.
    void (socket as Duplex & { remoteAddress?: string }).remoteAddress;
    socket.once('close', () => sockets.delete(socket));
  });
  const withoutRequest = (socket: Duplex) => !(socket as Duplex & { _httpMessage?: unknown })._httpMessage;
  app.addHook('preClose', (done) => {
    for (const socket of sockets) {
      if (!withoutRequest(socket)) continue;
      // Never used (not a byte read): closed at once. Idle keep-alives Node closes itself. One
      // whose request has started to arrive gets a moment to complete it, not more: Node stops
      // enforcing its headers timeout once closing, and a client that sent one byte would
      // otherwise hold the shutdown for its whole budget.
      if ((socket as Duplex & { bytesRead?: number }).bytesRead === 0) socket.destroy();
      else setTimeout(() => withoutRequest(socket) && socket.destroy(), PARTIAL_REQUEST_GRACE_MS).unref();
    }
    done();
  });
  app.addHook('onClose', async () => {
    lifecycle.stop();
    await lifecycle.idle();
    await accounting.close();
    await jobs.close();
    if (redis) await closeRedis(redis);
    await ownDispatcher?.close();
    await ownStreamDispatcher?.close();
  });

  if (config.DOCS_ENABLED) await registerOpenApi(app, VERSION);
  // Counters live in Redis when configured, so every replica counts against the same budget.
  await app.register(rateLimit, { global: false, ...(redis ? { store: redisRateLimitStore(redis, 'rl:') } : {}) });

  healthRoutes(app, { jobs, isShuttingDown: () => draining });
  if (config.METRICS_ENABLED) metricsRoutes(app, { metrics, token: config.METRICS_TOKEN });
  registerPreflight(app, ['/v1/*', `/${APP_ID}/*`, config.FAL_PROXY_PATH], () => registry, config.PUBLIC_BASE_URL);
  const authOptions = { registry: () => registry, tokens, publicBaseUrl: config.PUBLIC_BASE_URL };
  // `Expect: 100-continue` (curl sends it for large uploads): only a caller with credentials is
  // invited to send its body; Node would otherwise invite everyone before authentication ran.
  app.server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    if (mayUpload(req.headers, authOptions)) res.writeContinue();
    app.server.emit('request', req, res);
  });
  // One limiter per policy for the whole app: status, result, cancel, streams, tokens and usage
  // draw from a tenant's one `read` budget (each limiter has a counter store of its own).
  const readLimit = createPolicyLimiter(app, 'read', config.RATE_LIMIT_ON_STORE_ERROR);
  await app.register(async (tenantScope) => {
    registerAuth(tenantScope, authOptions);
    // Proxy calls whose target was not mapped onto a gateway route (OPTIONS is the preflight).
    tenantScope.route({
      method: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'],
      url: config.FAL_PROXY_PATH,
      // Counted like any other call of the tenant's, then refused before its body is read: a
      // large one (fal.run with an inline image) hears why, not that it is too large.
      onRequest: [readLimit, (_request, _reply, done) => done(new errors.ProxyTargetNotAllowed(TARGET_HEADER))],
      schema: { hide: true },
      // Never reached (the hook refuses every call); Fastify wants a handler.
      handler: async () => undefined,
    });
    tokenRoutes(tenantScope, { tokens, limit: readLimit, security: SECURITY });
    streamRoutes(tenantScope, {
      upstream,
      jobs,
      publicBaseUrl: config.PUBLIC_BASE_URL,
      readLimit,
      security: SECURITY,
      maxEventBytes: config.UPSTREAM_MAX_RESPONSE_BYTES,
      streamsPerTenant: config.STREAMS_PER_TENANT,
      clientStreamsPerTenant: config.CLIENT_STREAMS_PER_TENANT,
      pollStatus: (requestId, logs) => reads.status(requestId, logs),
      onOpenStreams: countStreams,
      onStatus: (requestId, status) => lifecycle.observe(requestId, status),
      // Kept as a polled COMPLETED is (the hub calls this before onStatus, so the result warm-up
      // that observe() starts does not meet a "not ready yet" answer kept from before).
      onCompleted: (requestId, logs, status) => void reads.completedElsewhere(requestId, logs, status),
      keptCompleted: (requestId, logs) => reads.keptCompleted(requestId, logs),
    });
    const queueDeps: QueueRouteDeps = {
      upstream,
      jobs,
      publicBaseUrl: config.PUBLIC_BASE_URL,
      inputPolicy: { maxDataUriBytes: config.IMAGE_DATA_URI_MAX_BYTES },
      idempotencyTtlMs: config.IDEMPOTENCY_TTL_SECONDS * 1000,
      idempotencyPendingMs: config.UPSTREAM_REQUEST_TIMEOUT_MS + 30_000,
      submitBodyLimit: config.BODY_LIMIT_BYTES,
      accounting,
      lifecycle,
      reads,
      metrics,
      limits: {
        submit: submitLimit(createPolicyLimiter(tenantScope, 'submit', config.RATE_LIMIT_ON_STORE_ERROR), readLimit, jobs),
        read: readLimit,
      },
    };
    // Uploads: a file part is turned into the model input's data URI, so limits and validation
    // apply as for JSON. Only the submit routes take a form, in a scope of their own: the routes
    // polled all day (status, result) carry no multipart hooks, and a form sent to them is a 415.
    // base64 makes a data URI about 4/3 of the file: the file cap is the one that fits the URI cap.
    const maxFileBytes = largestFileFor(config.IMAGE_DATA_URI_MAX_BYTES);
    await tenantScope.register(async (uploads) => {
      await registerMultipartSubmit(uploads, { maxFileBytes, maxBodyBytes: config.BODY_LIMIT_BYTES });
      submitRoutes(uploads, queueDeps);
    });
    queueRoutes(tenantScope, queueDeps);
  });
  await usageRoutes(app, {
    accounting,
    auth: { registry: () => registry, tokens, publicBaseUrl: config.PUBLIC_BASE_URL },
    readLimit,
    adminToken: config.ADMIN_TOKEN,
    security: SECURITY,
  });
  if (config.DOCS_ENABLED) await registerDocsUi(app);
  if (config.PLAYGROUND_ENABLED ?? config.NODE_ENV !== 'production') await app.register(playgroundRoutes);

  return app;
}
