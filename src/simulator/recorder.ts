import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { RecordedRequest } from './context.js';

/**
 * Keeps what the simulator received so tests can assert on what a gateway sent upstream
 * (headers it forwarded or must not forward, the body it relayed). Registered before the auth
 * check, so rejected requests are recorded too.
 */
export function registerRecorder(app: FastifyInstance, requests: RecordedRequest[], max: number): void {
  const byRequest = new WeakMap<FastifyRequest, RecordedRequest>();

  app.addHook('onRequest', async (request) => {
    const record: RecordedRequest = { method: request.method, path: request.url, headers: { ...request.headers } };
    byRequest.set(request, record);
    requests.push(record);
    if (requests.length > max) requests.splice(0, requests.length - max);
  });

  // The body only exists once parsed; bodies arrive as raw bytes (see app.ts), so decode them.
  app.addHook('preValidation', async (request) => {
    const record = byRequest.get(request);
    if (record && request.body !== undefined) record.body = decodeBody(request.body);
  });
}

export function decodeBody(body: unknown): unknown {
  if (!Buffer.isBuffer(body)) return body;
  const text = body.toString('utf8');
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
