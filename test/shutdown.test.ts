import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { afterAll, describe, expect, it } from 'vitest';
import { newKey } from '../src/cli/key.js';
import { digestKey } from '../src/tenants/registry.js';
import { SEED_REQUEST, UPSTREAM_TOKEN } from './helpers.js';
import { startFaultyUpstream, type FaultyUpstream } from './support/faulty-upstream.js';
import { freePort } from './support/redis.js';

/**
 * SIGTERM on the real server process while keep-alive clients keep submitting: every request
 * either gets its answer or, once the gateway has stopped listening, a refused connection;
 * none is reset mid-flight. The process finishes in-flight work and exits 0.
 */
describe('graceful shutdown', () => {
  let upstream: FaultyUpstream;
  afterAll(() => upstream?.close());

  it('serves through the drain, resets no connection, and exits 0', async () => {
    upstream = await startFaultyUpstream();
    upstream.setHandler((_req, res) => {
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'IN_QUEUE', request_id: randomUUID(), queue_position: 0 }));
      }, 150);
    });
    const key = newKey();
    const dir = await mkdtemp(join(tmpdir(), 'shutdown-'));
    const tenantsFile = join(dir, 'tenants.json');
    await writeFile(tenantsFile, JSON.stringify({ tenants: [{ id: 'team-a', keys: [digestKey(key)], limits: { submit: { max: 100000, timeWindow: 60000 } } }] }));
    const port = await freePort();
    const server = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
      cwd: new URL('..', import.meta.url),
      env: {
        PATH: process.env.PATH,
        PORT: String(port),
        HOST: '127.0.0.1',
        UPSTREAM_TOKEN,
        UPSTREAM_BASE_URL: upstream.url,
        TENANTS_FILE: tenantsFile,
        SHUTDOWN_DRAIN_DELAY_MS: '600',
        SHUTDOWN_GRACE_MS: '5000',
      },
    });
    let output = '';
    server.stdout.on('data', (d) => (output += d));
    server.stderr.on('data', (d) => (output += d));
    const exited = new Promise<number | null>((resolve) => server.on('exit', (code) => resolve(code)));
    const deadline = Date.now() + 20_000;
    while (!output.includes('fal gateway ready')) {
      if (Date.now() > deadline || server.exitCode !== null) throw new Error(`server did not start:\n${output}`);
      await new Promise((r) => setTimeout(r, 50));
    }

    const base = `http://127.0.0.1:${port}`;
    const agent = new Agent({ connections: 16, keepAliveTimeout: 30_000 });
    const outcomes: Array<{ at: number; status?: number; error?: string }> = [];
    let sigtermAt = Infinity;
    let stop = false;
    const worker = async () => {
      while (!stop) {
        try {
          const res = await request(`${base}/v1/image-to-image`, {
            method: 'POST',
            dispatcher: agent,
            headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
            body: JSON.stringify(SEED_REQUEST),
          });
          await res.body.text();
          outcomes.push({ at: Date.now(), status: res.statusCode });
        } catch (err) {
          const code = (err as { code?: string }).code ?? (err as Error).name;
          outcomes.push({ at: Date.now(), error: code });
          if (code === 'ECONNREFUSED') return;
        }
      }
    };
    const workers = Array.from({ length: 8 }, worker);
    await new Promise((r) => setTimeout(r, 400));
    sigtermAt = Date.now();
    server.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 200));
    const readiness = await request(`${base}/readyz`, { dispatcher: agent }).then(async (r) => ({ status: r.statusCode, body: await r.body.json() }));
    const code = await exited;
    stop = true;
    await Promise.all(workers);
    await agent.close();

    const errors = outcomes.filter((o) => o.error);
    const answered = outcomes.filter((o) => o.status !== undefined);
    expect(code).toBe(0);
    expect(output).toContain('shutting down');
    expect(output).toContain('shut down cleanly');
    expect(readiness.status).toBe(503);
    expect(answered.length).toBeGreaterThan(16);
    expect(answered.every((o) => o.status === 200)).toBe(true);
    // Requests kept being served after SIGTERM, during the drain.
    expect(answered.filter((o) => o.at > sigtermAt + 100).length).toBeGreaterThan(0);
    // Nothing reset: once the gateway stopped listening, a new connection is refused, and that is all.
    expect(errors.filter((e) => e.error !== 'ECONNREFUSED')).toEqual([]);
    expect(output).not.toContain(UPSTREAM_TOKEN);
  }, 60_000);
});
