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
import { freePort, PrivateRedis } from './support/redis.js';

/**
 * SIGTERM on the real server process while keep-alive clients keep submitting. The clients
 * behave as a load balancer does: they stop sending new requests once readiness reads 503.
 * Everything sent before and during the drain, including a request still running when the
 * listener closes, is answered; nothing is reset or refused. The process exits 0.
 */
/** The real server process with `env`, its output gathered; resolves once its output holds `line` (by default, that it is ready). */
async function startServer(env: Record<string, string>, line = 'fal gateway ready') {
  const key = newKey();
  const dir = await mkdtemp(join(tmpdir(), 'shutdown-'));
  const tenantsFile = join(dir, 'tenants.json');
  await writeFile(tenantsFile, JSON.stringify({ tenants: [{ id: 'team-a', keys: [digestKey(key)], limits: { submit: { max: 100000, timeWindow: 60000 } } }] }));
  const port = await freePort();
  const server = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: new URL('..', import.meta.url),
    env: { PATH: process.env.PATH, PORT: String(port), HOST: '127.0.0.1', UPSTREAM_TOKEN, TENANTS_FILE: tenantsFile, ...env },
  });
  const output = { stdout: '', stderr: '' };
  server.stdout.on('data', (d) => (output.stdout += d));
  server.stderr.on('data', (d) => (output.stderr += d));
  const exited = new Promise<number | null>((resolve) => server.on('exit', (code) => resolve(code)));
  const deadline = Date.now() + 20_000;
  while (!output.stdout.includes(line)) {
    if (Date.now() > deadline || server.exitCode !== null) throw new Error(`server did not start:\n${output.stdout}${output.stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { server, key, base: `http://127.0.0.1:${port}`, output, exited };
}

describe('graceful shutdown', () => {
  let upstream: FaultyUpstream;
  afterAll(() => upstream?.close());

  it('serves through the drain, resets no connection, and exits 0', async () => {
    upstream = await startFaultyUpstream();
    upstream.setHandler((_req, res, body) => {
      // The "slow" job is still upstream when the gateway stops listening.
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'IN_QUEUE', request_id: randomUUID(), queue_position: 0 }));
      }, body.includes('slow job') ? 4_000 : 150);
    });
    const { server, key, base, output: streams, exited } = await startServer({
      UPSTREAM_BASE_URL: upstream.url,
      SHUTDOWN_DRAIN_DELAY_MS: '3000',
      SHUTDOWN_GRACE_MS: '5000',
    });
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
        }
      }
    };
    const workers = Array.from({ length: 8 }, worker);
    await new Promise((r) => setTimeout(r, 400));
    const slow = request(`${base}/v1/image-to-image`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ...SEED_REQUEST, prompt: 'slow job' }),
    }).then(async (r) => (await r.body.text(), { status: r.statusCode, at: Date.now() }));
    await new Promise((r) => setTimeout(r, 100));
    sigtermAt = Date.now();
    server.kill('SIGTERM');
    // Readiness turns 503 once the signal is handled, while the gateway still serves (drain).
    let readiness = 0;
    for (const until = Date.now() + 5_000; Date.now() < until && readiness !== 503; ) {
      readiness = await request(`${base}/readyz`, { dispatcher: agent }).then(
        async (r) => (await r.body.text(), r.statusCode),
        () => -1,
      );
      if (readiness === -1) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    // The load balancer has seen it: no new requests from here on.
    stop = true;
    const stoppedAt = Date.now();
    await Promise.all(workers);
    // A straggler the load balancer sent just before it noticed: still served during the drain.
    const straggler = await request(`${base}/v1/image-to-image`, {
      method: 'POST',
      dispatcher: agent,
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify(SEED_REQUEST),
    }).then(async (r) => (await r.body.text(), r.statusCode));
    const slowOutcome = await slow;
    const code = await exited;
    await agent.close();
    const output = streams.stdout + streams.stderr;

    const errors = outcomes.filter((o) => o.error);
    const answered = outcomes.filter((o) => o.status !== undefined);
    expect(code).toBe(0);
    expect(output).toContain('shutting down');
    expect(output).toContain('shut down cleanly');
    expect(readiness).toBe(503);
    // Every worker was answered at least once (how many depends on the machine).
    expect(answered.length).toBeGreaterThanOrEqual(8);
    expect(answered.every((o) => o.status === 200)).toBe(true);
    // Requests kept being served after SIGTERM, during the drain: those in flight, and a new one.
    expect(answered.filter((o) => o.at > sigtermAt).length).toBeGreaterThan(0);
    expect(straggler).toBe(200);
    // Nothing reset: once the gateway stopped listening, a new connection is refused, and that is all.
    expect(errors.map((e) => `${e.error} at +${e.at - sigtermAt} ms`)).toEqual([]);
    // A request still running when the listener closed (drain ends 3 s after SIGTERM) was finished.
    expect(slowOutcome.status).toBe(200);
    expect(slowOutcome.at - sigtermAt).toBeGreaterThan(3_000);
    expect(stoppedAt - sigtermAt).toBeLessThan(3_000);
    expect(output).not.toContain(UPSTREAM_TOKEN);
  }, 60_000);

  it('does not wait at close for connections that carry no request (a preconnect, a spare keep-alive)', async () => {
    const { startStack } = await import('./helpers.js');
    const { connect } = await import('node:net');
    const stack = await startStack();
    const port = Number(new URL(stack.url).port);
    // One connection that never sends anything, one that served a request and stays open.
    const silent = connect(port, '127.0.0.1');
    const used = connect(port, '127.0.0.1');
    await Promise.all([silent, used].map((socket) => new Promise((resolve) => socket.once('connect', resolve))));
    await new Promise<void>((resolve) => {
      used.once('data', () => resolve());
      used.write('GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n');
    });
    const closed = Promise.all([silent, used].map((socket) => new Promise((resolve) => socket.once('close', resolve))));
    const started = Date.now();
    await stack.close();
    await closed;
    // Node would otherwise hold the silent one until its 60 s headers timeout.
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  /** A gateway, and a raw TCP connection to it (to send a request a byte at a time). */
  async function stackWithConnection() {
    const { startStack } = await import('./helpers.js');
    const { connect } = await import('node:net');
    const stack = await startStack();
    const socket = connect(Number(new URL(stack.url).port), '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    return { stack, socket };
  }

  it('serves a request whose first bytes had arrived when close began, rather than resetting it', async () => {
    const { stack, socket } = await stackWithConnection();
    let answer = '';
    socket.on('data', (chunk: Buffer) => (answer += chunk.toString()));
    const ended = new Promise<string>((resolve) => socket.once('close', () => resolve(answer)));
    // Half a request: its headers are not complete yet.
    socket.write('GET /healthz HTTP/1.1\r\nHost: gw\r\n');
    await new Promise((r) => setTimeout(r, 100));
    const closing = stack.close();
    await new Promise((r) => setTimeout(r, 100));
    socket.write('\r\n');
    expect(await ended).toMatch(/^HTTP\/1\.1 200 /);
    await closing;
  });

  it('does not wait long at close for a request that started to arrive and stalled (one byte sent)', async () => {
    const { stack, socket } = await stackWithConnection();
    const closed = new Promise((resolve) => socket.once('close', resolve));
    socket.write('G');
    await new Promise((r) => setTimeout(r, 100));
    const started = Date.now();
    await stack.close();
    await closed;
    // Node stops enforcing its headers timeout once closing: without a deadline of its own, this waits for ever.
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('lets status streams run to their job\'s end within the budget, and cuts off those that do not get there', async () => {
    const finishing = '6f1c2b8e-0000-4000-8000-0000000000f1';
    const endless = '6f1c2b8e-0000-4000-8000-0000000000f2';
    const own = await startFaultyUpstream();
    let submits = 0;
    own.setHandler((req, res) => {
      if (req.method === 'POST') {
        const id = submits++ === 0 ? finishing : endless;
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'IN_QUEUE', request_id: id, queue_position: 0 }));
      } else if (req.url?.includes('/status/stream')) {
        const id = req.url.includes(finishing) ? finishing : endless;
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(`data: ${JSON.stringify({ status: 'IN_PROGRESS', request_id: id, logs: [] })}\n\n`);
        // The first job ends 1.5 s later, during the shutdown; the other never does.
        if (id === finishing) setTimeout(() => res.end(`data: ${JSON.stringify({ status: 'COMPLETED', request_id: id, logs: [], metrics: {} })}\n\n`), 1_500);
      } else {
        res.writeHead(202, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'IN_PROGRESS', request_id: endless, logs: null }));
      }
    });
    const { server, key, base, output, exited } = await startServer({ UPSTREAM_BASE_URL: own.url, SHUTDOWN_DRAIN_DELAY_MS: '200', SHUTDOWN_GRACE_MS: '5000', STALE_JOB_CHECK_MS: '0' });
    try {
      const headers = { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
      for (let i = 0; i < 2; i++) expect((await fetch(`${base}/v1/image-to-image`, { method: 'POST', headers, body: JSON.stringify(SEED_REQUEST) })).status).toBe(200);
      const follow = async (id: string) => {
        const res = await fetch(`${base}/v1/requests/${id}/status/stream`, { headers: { authorization: `Bearer ${key}` } });
        const reader = res.body!.getReader();
        let text = Buffer.from((await reader.read()).value!).toString();
        return {
          rest: (async () => {
            for (;;) {
              const { done, value } = await reader.read();
              if (done) return text;
              text += Buffer.from(value).toString();
            }
          })(),
        };
      };
      const [a, b] = [await follow(finishing), await follow(endless)];
      const bOutcome = b.rest.then(() => 'ended', () => 'cut off');
      server.kill('SIGTERM');
      // The job that ends during the shutdown: its stream brings COMPLETED and ends cleanly.
      expect(await a.rest).toContain('"status":"COMPLETED"');
      // The one that never ends is cut off once the stream budget (5 s - 0.2 s - 2 s) is spent.
      expect(await bOutcome).toBe('cut off');
      expect(await exited).toBe(0);
      expect(output.stdout).toContain('cutting them off');
    } finally {
      server.kill('SIGKILL');
      await own.close();
    }
  }, 30_000);

  it('answers a submit still waiting on a slow upstream when the budget runs out (500 submit_outcome_unknown, logged), then exits 0', async () => {
    const slow = await startFaultyUpstream();
    // fal answers this submit long after the gateway's budget: the job may well be queued.
    slow.setHandler((_req, res) => {
      setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'IN_QUEUE', request_id: randomUUID(), queue_position: 0 })), 8_000);
    });
    const { server, key, base, output, exited } = await startServer({ UPSTREAM_BASE_URL: slow.url, SHUTDOWN_DRAIN_DELAY_MS: '0', SHUTDOWN_GRACE_MS: '2500' });
    try {
      const pending = request(`${base}/v1/image-to-image`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'x-request-id': 'slow-submit-at-shutdown' },
        body: JSON.stringify(SEED_REQUEST),
      });
      while (slow.requests.length === 0) await new Promise((r) => setTimeout(r, 20));
      server.kill('SIGTERM');
      // Before: the process died at the end of its budget and this connection closed without an answer.
      const answer = await pending;
      expect(answer.statusCode).toBe(500);
      expect(answer.headers['x-fal-error-type']).toBe('submit_outcome_unknown');
      expect(((await answer.body.json()) as { error_type: string }).error_type).toBe('submit_outcome_unknown');
      expect(await exited).toBe(0);
      const lines = output.stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
      expect(lines).toContainEqual(expect.objectContaining({ level: 50, count: 1, msg: expect.stringContaining('end of the shutdown budget') }));
      expect(lines).toContainEqual(expect.objectContaining({ msg: 'request', statusCode: 500, clientRequestId: 'slow-submit-at-shutdown' }));
      expect(slow.requests).toHaveLength(1);
      expect(output.stderr).toBe('');
    } finally {
      server.kill('SIGKILL');
      await slow.close();
    }
  }, 30_000);

  it('exits 1 when the budget runs out with a request still running, saying so in a JSON log line', async () => {
    const { connect } = await import('node:net');
    const { server, base, output, exited } = await startServer({ UPSTREAM_BASE_URL: 'http://127.0.0.1:9', SHUTDOWN_DRAIN_DELAY_MS: '0', SHUTDOWN_GRACE_MS: '500' });
    // A request whose headers stalled after one byte: close gives it a second to complete, more
    // than this budget, so the budget runs out first.
    const socket = connect(Number(new URL(base).port), '127.0.0.1');
    try {
      await new Promise((resolve) => socket.once('connect', resolve));
      socket.write('G');
      await new Promise((r) => setTimeout(r, 100));
      server.kill('SIGTERM');
      expect(await exited).toBe(1);
      const lines = output.stdout.trim().split('\n');
      for (const line of lines) expect(() => JSON.parse(line), line).not.toThrow();
      expect(lines.some((line) => line.includes('killed by timeout (500ms)'))).toBe(true);
      expect(output.stderr).toBe('');
    } finally {
      socket.destroy();
      server.kill('SIGKILL');
    }
  }, 30_000);

  it('says it is not ready while its Redis does not answer, and becomes ready once Redis is up', async () => {
    const redis = new PrivateRedis(await freePort());
    const { server, base, output } = await startServer({ UPSTREAM_BASE_URL: 'http://127.0.0.1:9', REDIS_URL: redis.url }, 'fal gateway listening, not ready');
    try {
      expect(output.stdout).not.toContain('fal gateway ready');
      const down = await request(`${base}/readyz`);
      expect(down.statusCode).toBe(503);
      expect(await down.body.json()).toMatchObject({ status: 'not_ready', checks: { store: 'failing' } });
      await redis.start();
      const deadline = Date.now() + 15_000;
      while ((await request(`${base}/readyz`).then(async (r) => (await r.body.text(), r.statusCode))) !== 200) {
        if (Date.now() > deadline) throw new Error(`never ready once Redis was up:\n${output.stdout}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      // Log lines leave in batches, at most 250 ms apart.
      while (!output.stdout.includes('redis connected') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(output.stdout).toContain('redis connected');
    } finally {
      server.kill('SIGKILL');
      await redis.stop();
    }
  }, 30_000);
});
