import type { ServerResponse } from 'node:http';
import type { FastifyInstance, onRequestHookHandler } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { errors } from '../errors.js';
import { queueUrlBase } from '../http/public-url.js';
import type { JobStore } from '../jobs/job-store.js';
import { APP_ID } from '../model.js';
import { ErrorEnvelope } from '../schemas/error.js';
import { flagOn, RequestIdParams, StatusQuery } from '../schemas/requests.js';
import type { UpstreamClient, UpstreamResponse } from '../upstream/client.js';
import { pickRelayedHeaders } from '../upstream/headers.js';
import { rewriteQueueUrls } from '../upstream/queue-urls.js';
import { relay } from '../upstream/relay.js';
import { pollingJoin, type PolledStreamOptions } from '../upstream/polled-status-stream.js';
import { StatusStreamHub, type StatusSink } from '../upstream/stream-hub.js';
import { assertOwned } from './ownership.js';
import { REQUEST_NOT_FOUND, UPSTREAM_5XX } from './queue.js';
import { tenantOf } from '../tenants/auth.js';
import type { Tenant } from '../tenants/tenants-file.js';
import { writeRateLimitFields } from '../tenants/ratelimit-fields.js';
import { CLIENT_CLOSED_REQUEST } from '../http/request-record.js';

/**
 * A polled stream reads its job's status this often (fal's own client polls every 500 ms), or
 * less often when the tenant has many: its polled streams together read no faster than its
 * `read` limit lets it poll.
 */
const POLLED_STREAM_INTERVAL_MS = 500;
/** As fal's stream: a comment line every 15 s without an event. */
const KEEP_ALIVE_MS = 15_000;
/** Reads failing in a row (the upstream's own retries already spent) before a polled stream is cut off. */
const POLLED_STREAM_MAX_FAILURES = 5;
/** Retry-After on a stream refused past CLIENT_STREAMS_PER_TENANT (streams last as long as jobs do). */
const STREAMS_RETRY_SECONDS = 5;
/** As the hub's bound for a subscriber that stops reading. */
const POLLED_STREAM_MAX_BUFFERED_BYTES = 1024 * 1024;

export interface StreamRouteDeps {
  upstream: UpstreamClient;
  jobs: JobStore;
  publicBaseUrl: string | undefined;
  readLimit: onRequestHookHandler;
  security: Array<Record<string, string[]>>;
  /** Largest single event accepted from upstream (bytes). */
  maxEventBytes: number;
  /** Called once per upstream status event (not per client), with the status before URL rewriting. */
  onStatus?: (requestId: string, status: Record<string, unknown>) => void;
  /** Called when a stream brings COMPLETED, with the status a poll would return (see StatusStreamHubOptions). */
  onCompleted?: (requestId: string, logs: boolean, status: Record<string, unknown>) => void;
  /** The job's kept COMPLETED status, if any (never asks upstream): a stream of a finished job is served from it. */
  keptCompleted?: (requestId: string, logs: boolean) => Promise<Record<string, unknown> | undefined>;
  /** Upstream status streams one tenant may hold at once (on this replica); its streams past them are polled. */
  streamsPerTenant: number;
  /** Status streams one tenant may have open at once (on this replica), upstream and polled: one more is a 429. */
  clientStreamsPerTenant: number;
  /** A status read as a poll makes it (shared, cached): what a polled stream is made of. */
  pollStatus: (requestId: string, logs: boolean) => Promise<UpstreamResponse>;
  /** Counts status streams opened upstream ('miss') and joined ('shared'). */
  metrics?: { cache(kind: 'status', outcome: 'hit' | 'miss' | 'shared'): void };
  /** Told the number of status streams open on this replica whenever it changes. */
  onOpenStreams?: (count: number) => void;
}

/**
 * GET .../status/stream: fal's status stream (server-sent events), relayed event by event with
 * the queue URL fields pointing at the gateway. One read of the tenant's budget per stream.
 * Clients watching the same job share one upstream stream (StatusStreamHub); when the last of
 * them goes away, the upstream stream is closed too.
 */
export function streamRoutes(app: FastifyInstance, deps: StreamRouteDeps): void {
  const api = app.withTypeProvider<ZodTypeProvider>();
  // Hijacked responses are invisible to Fastify's close: end them, so shutdown never waits on a stream.
  const open = new Set<() => void>();
  const hub = new StatusStreamHub({
    upstream: deps.upstream,
    maxEventBytes: deps.maxEventBytes,
    ...(deps.onStatus ? { onStatus: deps.onStatus } : {}),
    ...(deps.onCompleted ? { onCompleted: deps.onCompleted } : {}),
    ...(deps.metrics ? { metrics: deps.metrics } : {}),
    log: app.log,
  });
  app.addHook('preClose', async () => {
    for (const stop of [...open]) stop();
  });
  // Upstream streams held per tenant: one tenant cannot take every upstream stream connection.
  const heldBy = new Map<string, number>();
  // Polled streams per tenant: their reads are spread so that together they keep to its read rate.
  const polledBy = new Map<string, number>();
  const count = (counts: Map<string, number>, tenantId: string, by: 1 | -1) => {
    const next = (counts.get(tenantId) ?? 0) + by;
    if (next > 0) counts.set(tenantId, next);
    else counts.delete(tenantId);
  };
  const pollOptions = (tenant: Tenant, requestId: string, logs: boolean, signal: AbortSignal): PolledStreamOptions => ({
    read: () => deps.pollStatus(requestId, logs),
    requestId,
    scrub: (text) => deps.upstream.scrubText(text),
    signal,
    intervalMs: () => {
      const { max, timeWindowMs } = tenant.limits.read;
      const spread = max > 0 ? ((polledBy.get(tenant.id) ?? 1) * timeWindowMs) / max : Number.POSITIVE_INFINITY;
      return Math.min(Math.max(POLLED_STREAM_INTERVAL_MS, spread), KEEP_ALIVE_MS);
    },
    keepAliveMs: KEEP_ALIVE_MS,
    maxFailures: POLLED_STREAM_MAX_FAILURES,
    maxBufferedBytes: POLLED_STREAM_MAX_BUFFERED_BYTES,
  });
  for (const [path, fal] of [
    ['/v1/requests/:request_id/status/stream', false],
    [`/${APP_ID}/requests/:request_id/status/stream`, true],
  ] as const) {
    api.get(
      path,
      {
        onRequest: deps.readLimit,
        schema: {
          operationId: fal ? 'falStreamStatus' : 'streamStatus',
          tags: [fal ? 'fal-compatible' : 'Image to image'],
          summary: fal ? 'Status stream (fal path)' : 'Status of a job, as a stream (SSE)',
          description:
            'Server-sent events: each `data:` line is a status object (as from the status route), keep-alive comments in between; the stream ends after COMPLETED. Counts once against the `read` limit.',
          security: deps.security,
          params: RequestIdParams,
          querystring: StatusQuery,
          response: {
            200: {
              description: 'Server-sent events: `data:` lines of status objects, keep-alive comments in between',
              content: { 'text/event-stream': { schema: z.string() } },
            },
            400: ErrorEnvelope.describe('A Host header that names no host (without PUBLIC_BASE_URL)'),
            401: ErrorEnvelope.describe('Missing or unknown API key, or an invalid or expired browser token'),
            403: ErrorEnvelope.describe('A browser origin this tenant does not allow (origin_not_allowed)'),
            404: REQUEST_NOT_FOUND,
            500: UPSTREAM_5XX,
            422: ErrorEnvelope.describe('Malformed request id or query'),
            429: ErrorEnvelope.describe('Rate limit exceeded (rate_limited), or the tenant has CLIENT_STREAMS_PER_TENANT streams open on this replica (too_many_streams); see Retry-After'),
            502: ErrorEnvelope.describe('The upstream answered with something that is not a status stream'),
            503: ErrorEnvelope.describe('Upstream unavailable (circuit open, unreachable) or the job store is down (see Retry-After)'),
            504: ErrorEnvelope.describe('The upstream did not answer in time'),
          },
        },
      },
      async (request, reply) => {
        const { request_id: requestId } = request.params;
        await assertOwned(deps.jobs, request, requestId);
        // HEAD: what a GET would answer, at once; nothing is opened upstream.
        if (request.method === 'HEAD') return reply.type('text/event-stream; charset=utf-8').header('cache-control', 'no-cache').send('');
        const logs = flagOn(request.query.logs);
        // Before anything is opened: a Host that names no host is a 400, not an empty stream.
        const base = queueUrlBase(request, deps.publicBaseUrl);
        // A job known to be done: its COMPLETED status is the whole stream, as fal's would be, and
        // is there even after fal has forgotten the job. No upstream stream is opened for it.
        const kept = await deps.keptCompleted?.(requestId, logs).catch(() => undefined);
        if (kept) {
          rewriteQueueUrls(kept, base, requestId);
          return reply
            .type('text/event-stream; charset=utf-8')
            .header('cache-control', 'no-cache')
            // As fal's stream has it: fal's client reads the job's id from this header.
            .header('x-fal-request-id', requestId)
            .send(deps.upstream.scrubText(`data: ${JSON.stringify(kept)}\n\n`));
        }
        const res = reply.raw;
        // Registered before waiting on upstream, so a client that leaves (or a shutdown) while the
        // stream is opening still lets go of it.
        const leave = new AbortController();
        let clientGone = false;
        let hijacked = false;
        let shutDown = false;
        const onClose = () => {
          clientGone = !shutDown;
          leave.abort();
          // Fastify's onResponse sees only a finished answer: a stream its client left is logged here.
          if (hijacked && !res.writableFinished) app.recordRequest(request, reply, res.statusCode, clientGone);
        };
        // The client may already have left while its ownership was checked.
        if (res.destroyed) onClose();
        else res.once('close', onClose);
        const stop = () => {
          shutDown = true;
          // Asked before leaving: the last subscriber leaving forgets the channel. (A polled stream
          // that sent COMPLETED has ended already: one still open has not.)
          const completed = !polled && hub.hasCompleted(requestId, logs);
          leave.abort();
          if (!hijacked || res.writableEnded) return;
          // Cut off, not ended: a stream that ends cleanly before COMPLETED tells fal's clients
          // the job is done. A broken one makes them reconnect (to another replica) or poll.
          // One that has brought COMPLETED already (only the upstream's close to come) ends.
          if (completed) res.end();
          else res.destroy();
        };
        const tenant = tenantOf(request);
        const tenantId = tenant.id;
        const opened = (heldBy.get(tenantId) ?? 0) + (polledBy.get(tenantId) ?? 0);
        if (opened >= deps.clientStreamsPerTenant) {
          app.metrics.rejected(tenantId, 'streams');
          throw Object.assign(new errors.TooManyStreams(opened), { headers: { 'retry-after': String(STREAMS_RETRY_SECONDS) } });
        }
        // Past its share of upstream streams, a tenant's stream is made from polled status reads
        // (shared and cached per job, as every poller's are): no upstream connection is taken, and
        // a client that opens its stream right after its submit is never turned away. (Joining a
        // stream open for the job would hold it open past the share once its opener left.)
        const polled = (heldBy.get(tenantId) ?? 0) >= deps.streamsPerTenant;
        count(polled ? polledBy : heldBy, tenantId, 1);
        open.add(stop);
        deps.onOpenStreams?.(open.size);
        try {
          if (clientGone) {
            app.recordRequest(request, reply, CLIENT_CLOSED_REQUEST, true);
            return reply.hijack();
          }
          const joined = polled ? await pollingJoin(pollOptions(tenant, requestId, logs, leave.signal)) : await hub.join(requestId, logs, leave.signal);
          if (polled) request.log.debug({ requestId }, 'status stream served by polling: the tenant holds STREAMS_PER_TENANT upstream streams');
          if (joined.kind === 'response') return relay(reply, joined.response);
          if (joined.kind === 'left' || leave.signal.aborted) {
            if (clientGone) {
              app.recordRequest(request, reply, CLIENT_CLOSED_REQUEST, true);
              return reply.hijack();
            }
            // Shutting down while the stream was opening: the client reconnects elsewhere.
            throw new errors.UpstreamUnavailable();
          }
          // A hijacked reply skips onSend: the RateLimit fields are added here instead.
          writeRateLimitFields(request, reply);
          reply.hijack();
          hijacked = true;
          res.writeHead(200, {
            // Headers already set on the reply (CORS, rate limits) go out with the hijacked stream.
            ...(reply.getHeaders() as Record<string, string>),
            ...pickRelayedHeaders(joined.headers),
            'content-type': 'text/event-stream; charset=utf-8',
            'cache-control': 'no-cache',
            'x-accel-buffering': 'no',
            'x-request-id': request.id,
            'x-content-type-options': 'nosniff',
            'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
            'referrer-policy': 'no-referrer',
            // A stream's connection is not reused: it closes with the stream.
            connection: 'close',
          });
          await joined.attach(responseSink(res), base);
        } finally {
          count(polled ? polledBy : heldBy, tenantId, -1);
          open.delete(stop);
          deps.onOpenStreams?.(open.size);
          if (hijacked && !res.writableEnded && !res.destroyed) res.end();
        }
      },
    );
  }
}

/** A hijacked response as a hub subscriber; nothing is written once it has ended or closed. */
function responseSink(res: ServerResponse): StatusSink {
  const writable = () => !res.writableEnded && !res.destroyed;
  return {
    write: (text) => {
      if (writable()) res.write(text);
    },
    get buffered() {
      return res.writableLength;
    },
    end: () => {
      if (writable()) res.end();
    },
    drop: () => res.destroy(),
  };
}
