import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Pool } from 'undici';
import { serveTarget } from './bench-ipc.js';

/**
 * The benchmark's baseline: the least a proxy in front of fal's queue must do. It forwards the
 * method, path, content type and body to the upstream with the upstream Authorization header,
 * and relays status code, content type and body. No authentication, validation, rate limits,
 * ownership, URL rewriting or logging: what the gateway spends beyond this is its features.
 *
 * Environment from the bench: BENCH_UPSTREAM_URL, BENCH_UPSTREAM_TOKEN.
 */

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

async function readBody(req: IncomingMessage): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return chunks.length === 0 ? undefined : Buffer.concat(chunks);
}

await serveTarget(async () => {
  const authorization = `Key ${required('BENCH_UPSTREAM_TOKEN')}`;
  // As many upstream connections as the gateway's default pool (UPSTREAM_CONNECTIONS).
  const pool = new Pool(required('BENCH_UPSTREAM_URL'), { connections: 128, keepAliveTimeout: 10_000 });

  const forward = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const body = await readBody(req);
    const headers: Record<string, string> = { authorization };
    const contentType = req.headers['content-type'];
    if (contentType) headers['content-type'] = contentType;
    const upstream = await pool.request({
      method: req.method === 'POST' ? 'POST' : req.method === 'PUT' ? 'PUT' : 'GET',
      path: req.url ?? '/',
      headers,
      body: body ?? null,
    });
    const bytes = Buffer.from(await upstream.body.arrayBuffer());
    const type = upstream.headers['content-type'];
    res.writeHead(upstream.statusCode, {
      'content-type': typeof type === 'string' ? type : 'application/json',
      'content-length': bytes.length,
    });
    res.end(bytes);
  };

  const server = createServer((req, res) => {
    forward(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'application/json' });
      res.end('{"detail":"upstream failure"}');
    });
  });
  process.once('SIGTERM', () => {
    server.close();
    server.closeAllConnections();
    void pool.close().finally(() => process.exit(0));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
