import { randomUUID } from 'node:crypto';
import Fastify, { LogController } from 'fastify';
import { Pool } from 'undici';
import { serveTarget } from './bench-ipc.js';
import { gatewayModule } from './bench-dist.js';

/**
 * A third baseline (BENCH_BASELINE=skeleton): the Fastify pass-through of
 * bench-baseline-fastify.ts with what every gateway request carries whatever it asks for, and
 * none of the gateway's features. It logs one line per request at info through the gateway's
 * own log destination and redaction (pino, a file, batched), gives each request a generated id,
 * runs a callback hook at the stages where the gateway authenticates and rate-limits, and sends
 * the gateway's response headers (request id, security headers, rate-limit fields with fixed
 * values). No authentication, validation, rate limiting, ownership, URL rewriting or metrics.
 *
 * gateway / skeleton is then what the features cost; skeleton / bare proxy, what the frame costs.
 *
 * Environment from the bench: BENCH_UPSTREAM_URL, BENCH_UPSTREAM_TOKEN, BENCH_LOG_FILE.
 */

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

const { createLogDestination } = (await import(gatewayModule('log-destination'))) as typeof import('../src/log-destination.js');
const { REDACTED_LOG_PATHS } = (await import(gatewayModule('app'))) as typeof import('../src/app.js');

await serveTarget(async () => {
  const authorization = `Key ${required('BENCH_UPSTREAM_TOKEN')}`;
  const pool = new Pool(required('BENCH_UPSTREAM_URL'), { connections: 128, keepAliveTimeout: 10_000 });
  const { stream } = createLogDestination(required('BENCH_LOG_FILE'));
  const app = Fastify({
    logger: { level: 'info', redact: { paths: REDACTED_LOG_PATHS, censor: '[redacted]' }, stream },
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'reqId' }),
    genReqId: () => randomUUID(),
  });
  app.decorateRequest('jobId', undefined);
  // Where the gateway authenticates (onRequest) and applies the tenant's rate limit (preHandler).
  app.addHook('onRequest', (_request, _reply, done) => done());
  app.addHook('preHandler', (_request, _reply, done) => done());
  app.addHook('onSend', (request, reply, payload, done) => {
    reply.header('x-ratelimit-limit', '1000000000');
    reply.header('x-ratelimit-remaining', '999999999');
    reply.header('x-ratelimit-reset', '60');
    reply.header('x-request-id', request.id);
    reply.header('x-content-type-options', 'nosniff');
    reply.header('content-security-policy', "default-src 'none'; frame-ancestors 'none'");
    reply.header('referrer-policy', 'no-referrer');
    reply.header('ratelimit-policy', '"submit";q=1000000000;w=60');
    reply.header('ratelimit', '"submit";r=999999999;t=60');
    done(null, payload);
  });
  // The gateway's one request line (src/http/request-record.ts), same fields.
  app.addHook('onResponse', (request, reply, done) => {
    const line: Record<string, unknown> = { method: request.method, url: request.url, statusCode: reply.statusCode, ms: Math.round(reply.elapsedTime) };
    const jobId = (request as unknown as { jobId?: string }).jobId;
    if (jobId !== undefined) line.requestId = jobId;
    request.log.info(line, 'request');
    done();
  });
  const forward = async (method: 'GET' | 'POST', url: string, body?: unknown) => {
    const upstream = await pool.request({ method, path: url, headers: { authorization, 'content-type': 'application/json' }, body: body === undefined ? null : JSON.stringify(body) });
    return { code: upstream.statusCode, body: (await upstream.body.json()) as Record<string, unknown> };
  };
  app.post('/fal-ai/flux-lora/image-to-image', async (req, reply) => {
    const r = await forward('POST', req.url, req.body);
    if (typeof r.body.request_id === 'string') (req as unknown as { jobId?: string }).jobId = r.body.request_id;
    return reply.code(r.code).send(r.body);
  });
  app.get('/fal-ai/flux-lora/requests/:id/status', async (req, reply) => {
    const r = await forward('GET', req.url);
    return reply.code(r.code).send(r.body);
  });
  return app.listen({ port: 0, host: '127.0.0.1' });
});
