import { once } from 'node:events';
import type { FastifyInstance, onRequestHookHandler } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { publicBaseUrl } from '../http/public-url.js';
import type { JobStore } from '../jobs/job-store.js';
import { APP_ID } from '../model.js';
import { ErrorEnvelope } from '../schemas/error.js';
import { RequestIdParams, StatusQuery } from '../schemas/requests.js';
import type { UpstreamClient } from '../upstream/client.js';
import { pickRelayedHeaders } from '../upstream/headers.js';
import { rewriteQueueUrls } from '../upstream/queue-urls.js';
import { relay } from '../upstream/relay.js';
import { SseRewriter } from '../upstream/sse-rewriter.js';
import { assertOwned } from './ownership.js';

export interface StreamRouteDeps {
  upstream: UpstreamClient;
  jobs: JobStore;
  publicBaseUrl: string | undefined;
  readLimit: onRequestHookHandler;
  security: Array<Record<string, string[]>>;
  /** Largest single event accepted from upstream (bytes). */
  maxEventBytes: number;
}

/**
 * GET .../status/stream: fal's status stream (server-sent events), relayed event by event with
 * the queue URL fields pointing at the gateway. One read of the tenant's budget per stream. When
 * the client goes away, the upstream stream is closed too.
 */
export function streamRoutes(app: FastifyInstance, deps: StreamRouteDeps): void {
  const api = app.withTypeProvider<ZodTypeProvider>();
  // Hijacked responses are invisible to Fastify's close: end them, so shutdown never waits on a stream.
  const open = new Set<() => void>();
  app.addHook('preClose', async () => {
    for (const stop of [...open]) stop();
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
            200: z.string().describe('text/event-stream of status objects'),
            401: ErrorEnvelope.describe('Missing or unknown API key'),
            404: ErrorEnvelope.describe('No such request for this tenant'),
            422: ErrorEnvelope.describe('Malformed request id or query'),
            429: ErrorEnvelope.describe('Rate limit exceeded (see Retry-After)'),
          },
        },
      },
      async (request, reply) => {
        const { request_id: requestId } = request.params;
        await assertOwned(deps.jobs, request, requestId);
        const logs = request.query.logs === '1' || request.query.logs === 'true';
        // Registered before waiting on upstream, so a client that leaves (or a shutdown) while the
        // stream is opening still closes the upstream side.
        const abort = new AbortController();
        const stopOpening = () => abort.abort();
        request.raw.once('close', stopOpening);
        open.add(stopOpening);
        let opened;
        try {
          opened = await deps.upstream.openStatusStream(requestId, logs, abort.signal);
        } finally {
          open.delete(stopOpening);
        }
        if ('response' in opened) return relay(reply, opened.response);
        const body = opened.stream as AsyncIterable<Buffer> & { destroy?: () => void };
        if (abort.signal.aborted || request.raw.destroyed) {
          body.destroy?.();
          return reply.hijack();
        }

        const base = publicBaseUrl(request, deps.publicBaseUrl);
        const rewriter = new SseRewriter((data) => {
          try {
            const status = JSON.parse(data) as Record<string, unknown>;
            rewriteQueueUrls(status, base, requestId);
            return JSON.stringify(status);
          } catch {
            return data;
          }
        }, deps.maxEventBytes);
        reply.hijack();
        const res = reply.raw;
        res.writeHead(200, {
          // Headers already set on the reply (CORS, rate limits) go out with the hijacked stream.
          ...(reply.getHeaders() as Record<string, string>),
          ...pickRelayedHeaders(opened.headers),
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
        const stop = () => {
          abort.abort();
          if (!res.writableEnded) res.end();
          res.socket?.destroy();
        };
        open.add(stop);
        res.on('close', () => abort.abort());
        const send = async (text: string) => {
          // Backpressure: a client that stops reading must not make the gateway buffer without bound.
          if (text && !res.write(deps.upstream.scrubText(text))) await once(res, 'drain', { signal: abort.signal });
        };
        try {
          for await (const chunk of body) await send(rewriter.push(chunk));
          await send(rewriter.flush());
        } catch (err) {
          if (!abort.signal.aborted) request.log.warn({ err: (err as Error).message, requestId }, 'upstream status stream failed');
        } finally {
          // Release the upstream connection even when the loop ended early (client gone).
          body.destroy?.();
          open.delete(stop);
          if (!res.writableEnded) res.end();
        }
      },
    );
  }
}
