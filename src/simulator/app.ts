import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import { authHook } from './auth.js';
import { createContext, type RecordedRequest, type SimulatorOptions } from './context.js';
import { registerRecorder } from './recorder.js';
import { registerFileRoutes, registerQueueRoutes } from './routes.js';
import { registerStreamRoute } from './stream.js';

/**
 * A stand-in for fal's queue host (`queue.fal.run`) serving `fal-ai/flux-lora/image-to-image`,
 * close enough in paths, status codes and bodies that a gateway cannot tell the difference. It
 * lets the gateway be developed, tested and demoed without a fal account or GPU time.
 */

export interface Simulator {
  /** Where it listens, e.g. http://127.0.0.1:PORT (no trailing slash). */
  url: string;
  app: FastifyInstance;
  /** Every request received, oldest first. */
  requests: RecordedRequest[];
  close(): Promise<void>;
}

// Generous: image_url may be a data URI, and fal takes large bodies.
const BODY_LIMIT = 32 * 1024 * 1024;

const recorded = new WeakMap<FastifyInstance, RecordedRequest[]>();

export function buildSimulator(options: SimulatorOptions): FastifyInstance {
  const app: FastifyInstance = Fastify({ logger: options.logger ?? false, bodyLimit: BODY_LIMIT });
  const ctx = createContext(app, options);
  recorded.set(app, ctx.requests);

  // Take every body as raw bytes: the submit route answers malformed bodies the way fal does
  // (400 / 422 with `detail`) instead of Fastify's 415 and FST_ERR_* messages.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));

  registerRecorder(app, ctx.requests, options.maxRecordedRequests ?? 10_000);
  app.addHook('onRequest', authHook(options.token, options.authScheme ?? 'Key'));

  registerQueueRoutes(app, ctx);
  registerStreamRoute(app, ctx);
  registerFileRoutes(app, ctx);

  app.setNotFoundHandler((_request, reply) => reply.code(404).send({ detail: 'Not Found' }));
  app.setErrorHandler((error: FastifyError, request, reply) => {
    const code = error.statusCode && error.statusCode >= 400 ? error.statusCode : 500;
    if (code >= 500) request.log.error({ err: error }, 'simulator error');
    return reply.code(code).send({ detail: code >= 500 ? 'Internal Server Error' : error.message });
  });
  return app;
}

/** The requests recorded by an app made with buildSimulator (startSimulator exposes them too). */
export function recordedRequests(app: FastifyInstance): RecordedRequest[] {
  const requests = recorded.get(app);
  if (!requests) throw new Error('not a simulator app');
  return requests;
}

export async function startSimulator(options: SimulatorOptions): Promise<Simulator> {
  const app = buildSimulator(options);
  const host = options.host ?? '127.0.0.1';
  await app.listen({ port: options.port ?? 0, host });
  const address = app.server.address();
  if (address === null || typeof address === 'string') throw new Error('simulator is not listening on TCP');
  const shown = host.includes(':') ? `[${host}]` : host;
  return {
    url: `http://${shown}:${address.port}`,
    app,
    requests: recordedRequests(app),
    close: () => app.close(),
  };
}
