import Fastify from 'fastify';
import { Pool } from 'undici';
import { serveTarget } from './bench-ipc.js';

/**
 * A second baseline (BENCH_BASELINE=fastify): the same pass-through as bench-baseline.ts, on
 * Fastify with JSON parsed and re-serialised both ways. It shows what the framework alone costs,
 * so the gateway's remaining overhead can be told apart from Fastify's.
 */

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

await serveTarget(async () => {
  const authorization = `Key ${required('BENCH_UPSTREAM_TOKEN')}`;
  const pool = new Pool(required('BENCH_UPSTREAM_URL'), { connections: 128, keepAliveTimeout: 10_000 });
  const app = Fastify({ logger: false });
  const forward = async (method: 'GET' | 'POST', url: string, body?: unknown) => {
    const upstream = await pool.request({ method, path: url, headers: { authorization, 'content-type': 'application/json' }, body: body === undefined ? null : JSON.stringify(body) });
    return { code: upstream.statusCode, body: await upstream.body.json() };
  };
  app.post('/fal-ai/flux-lora/image-to-image', async (req, reply) => {
    const r = await forward('POST', req.url, req.body);
    return reply.code(r.code).send(r.body);
  });
  app.get('/fal-ai/flux-lora/requests/:id/status', async (req, reply) => {
    const r = await forward('GET', req.url);
    return reply.code(r.code).send(r.body);
  });
  return app.listen({ port: 0, host: '127.0.0.1' });
});
