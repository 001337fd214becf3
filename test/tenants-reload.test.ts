import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rename, symlink, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { buildApp, type GatewayApp } from '../src/app.js';
import { newKey } from '../src/cli/key.js';
import { parseConfig } from '../src/config.js';
import { startSimulator, type Simulator } from '../src/simulator/index.js';
import { digestKey } from '../src/tenants/registry.js';
import { attachTenantsReloader, readTenantsSnapshot, TenantsReloader } from '../src/tenants/reload.js';
import { json, SEED_REQUEST, UPSTREAM_TOKEN } from './helpers.js';
import { freePort } from './support/redis.js';

/**
 * The tenants file reloaded while the gateway serves: by call (what SIGHUP runs), by the directory
 * watcher (in-place writes, rename-replace, ConfigMap-style symlink swaps) and by SIGHUP on the
 * real server process. Real files in a temporary directory, real HTTP, the simulated upstream.
 */

const TOKEN_SECRET = 'reload-token-secret-0123456789abcdef-0123456789';

interface TenantLine {
  id: string;
  keys: string[];
  submitMax?: number;
}

const tenantsJson = (tenants: TenantLine[]) =>
  JSON.stringify(
    {
      tenants: tenants.map((t) => ({
        id: t.id,
        keys: t.keys.map(digestKey),
        limits: { submit: { max: t.submitMax ?? 100_000, timeWindow: '1 minute' }, read: { max: 100_000, timeWindow: '1 minute' } },
      })),
    },
    null,
    2,
  );

interface LogLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}

interface Gateway {
  app: GatewayApp;
  url: string;
  file: string;
  dir: string;
  reloader: TenantsReloader;
  logs: string[];
  lines(msg: string): LogLine[];
}

const cleanup: Array<{ close(): Promise<void> }> = [];
afterEach(async () => {
  await Promise.all(cleanup.splice(0).map((o) => o.close()));
});

let sim: Simulator | undefined;
async function simulator(): Promise<Simulator> {
  sim ??= await startSimulator({ token: UPSTREAM_TOKEN, queueMs: 50, runMs: 100 });
  return sim;
}
afterAll(() => sim?.close());

/** A listening gateway whose tenants come from a real file, with a reloader attached as the server attaches it. */
async function startGateway(initial: TenantLine[], options: { watch?: boolean } = {}): Promise<Gateway> {
  const upstream = await simulator();
  const dir = await mkdtemp(join(tmpdir(), 'tenants-reload-'));
  const file = join(dir, 'tenants.json');
  await writeFile(file, tenantsJson(initial));
  const snapshot = await readTenantsSnapshot(file);
  const logs: string[] = [];
  const config = parseConfig({ UPSTREAM_TOKEN, UPSTREAM_BASE_URL: upstream.url, TENANTS_FILE: file, LOG_LEVEL: 'debug', TOKEN_SECRET });
  const app = await buildApp({ config, tenants: snapshot.tenants, logStream: { write: (line) => void logs.push(line) } });
  const reloader = attachTenantsReloader(app, { file, watch: options.watch ?? false, debounceMs: 50, appliedDigest: snapshot.digest });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  cleanup.push(app);
  return {
    app,
    url,
    file,
    dir,
    reloader,
    logs,
    lines: (msg) => logs.map((l) => JSON.parse(l) as LogLine).filter((l) => l.msg === msg),
  };
}

const auth = (key: string) => ({ authorization: `Bearer ${key}` });

async function submit(url: string, key: string, dispatcher?: Agent): Promise<{ status: number; requestId?: string; detail?: string }> {
  const res = await request(`${url}/v1/image-to-image`, {
    method: 'POST',
    headers: { ...json, ...auth(key) },
    body: JSON.stringify(SEED_REQUEST),
    ...(dispatcher ? { dispatcher } : {}),
  });
  const body = (await res.body.json()) as { request_id?: string; detail?: unknown };
  return {
    status: res.statusCode,
    ...(body.request_id ? { requestId: body.request_id } : {}),
    ...(typeof body.detail === 'string' ? { detail: body.detail } : {}),
  };
}

async function status(url: string, key: string, requestId: string, dispatcher?: Agent): Promise<number> {
  const res = await request(`${url}/v1/requests/${requestId}/status`, { headers: auth(key), ...(dispatcher ? { dispatcher } : {}) });
  await res.body.dump();
  return res.statusCode;
}

/** A status read answers 202 while the job is queued or running, 200 once it is done. */
const answered = (code: number) => code === 200 || code === 202;

/** Polls until `check` holds, failing after a bounded deadline. */
async function until(what: string, check: () => Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('reloading the tenants file', () => {
  it('swaps tenants mid-traffic: no 5xx or connection error, rotated and removed keys are 401, a lowered limit applies at once', async () => {
    const [a1, a2, b, c, d] = [newKey(), newKey(), newKey(), newKey(), newKey()] as const;
    const gw = await startGateway([
      { id: 'team-a', keys: [a1] },
      { id: 'team-b', keys: [b] },
      { id: 'team-c', keys: [c] },
    ]);
    const jobA = (await submit(gw.url, a1)).requestId!;
    const jobB = (await submit(gw.url, b)).requestId!;
    const jobC = (await submit(gw.url, c)).requestId!;
    const next = tenantsJson([
      { id: 'team-a', keys: [a2] },
      { id: 'team-c', keys: [c], submitMax: 2 },
      { id: 'team-d', keys: [d] },
    ]);

    type Call = { who: 'a1' | 'b' | 'c'; kind: 'submit' | 'status' };
    const mix: Call[] = [
      { who: 'a1', kind: 'submit' },
      { who: 'a1', kind: 'status' },
      { who: 'b', kind: 'submit' },
      { who: 'b', kind: 'status' },
      { who: 'c', kind: 'submit' },
    ];
    const keyOf = { a1, b, c };
    // At least 240 calls, and at least 60 started after the reload finished, however long the
    // reload takes on a busy machine (bounded, so a reload that never ends fails the test).
    const total = 240;
    const wantedAfterSwap = 60;
    const cap = 5_000;
    let startedAfter = 0;
    const outcomes: Array<Call & { status?: number; error?: string; startedAfterSwap: boolean; endedBeforeSwap: boolean }> = [];
    let swapStarted = false;
    let swapDone = false;
    let swap: Promise<unknown> | undefined;
    let sent = 0;
    const agent = new Agent({ connections: 24, keepAliveTimeout: 30_000 });
    const worker = async () => {
      while ((sent < total || !swapDone || startedAfter < wantedAfterSwap) && sent < cap) {
        const call = mix[sent++ % mix.length]!;
        const startedAfterSwap = swapDone;
        if (startedAfterSwap) startedAfter++;
        const outcome: (typeof outcomes)[number] = { ...call, startedAfterSwap, endedBeforeSwap: false };
        try {
          const key = keyOf[call.who];
          outcome.status =
            call.kind === 'submit'
              ? (await submit(gw.url, key, agent)).status
              : await status(gw.url, key, call.who === 'b' ? jobB : jobA, agent);
        } catch (err) {
          outcome.error = (err as { code?: string }).code ?? (err as Error).name;
        }
        outcome.endedBeforeSwap = !swapStarted;
        outcomes.push(outcome);
        // A quarter of the stream answered: rewrite the file and reload while the rest is in flight.
        if (outcomes.length === 60 && !swap) {
          swapStarted = true;
          swap = writeFile(gw.file, next)
            .then(() => gw.reloader.reload())
            .then((result) => {
              swapDone = true;
              return result;
            });
        }
      }
    };
    await Promise.all(Array.from({ length: 24 }, worker));
    const result = await swap;
    await agent.close();

    expect(result).toMatchObject({ ok: true, applied: true });
    expect(outcomes).toHaveLength(sent);
    expect(sent).toBeLessThan(cap);
    expect(outcomes.filter((o) => o.error || o.status === undefined || o.status >= 500)).toEqual([]);
    expect(outcomes.filter((o) => ![200, 202, 401, 429].includes(o.status!))).toEqual([]);
    // Before the swap every call succeeded; after it, the old file's key and tenant are gone and the new limit holds.
    expect(outcomes.filter((o) => o.endedBeforeSwap && !answered(o.status!))).toEqual([]);
    // Every other worker had a call in flight when the reload began.
    expect(outcomes.filter((o) => !o.endedBeforeSwap && !o.startedAfterSwap).length).toBeGreaterThanOrEqual(23);
    const after = outcomes.filter((o) => o.startedAfterSwap);
    expect(after.length).toBeGreaterThanOrEqual(wantedAfterSwap);
    expect(after.filter((o) => o.who !== 'c').every((o) => o.status === 401)).toBe(true);
    expect(after.filter((o) => o.who === 'c').every((o) => o.status === 429)).toBe(true);
    // Only the expected codes for the expected callers, whenever they were answered.
    expect(outcomes.filter((o) => o.status === 401 && o.who === 'c')).toEqual([]);
    expect(outcomes.filter((o) => o.status === 429 && o.who !== 'c')).toEqual([]);

    // The rotated key acts as the same tenant: it reads the job submitted with the old key.
    expect(answered(await status(gw.url, a2, jobA))).toBe(true);
    expect((await submit(gw.url, a2)).status).toBe(200);
    expect((await submit(gw.url, d)).status).toBe(200);
    expect((await submit(gw.url, a1)).status).toBe(401);
    expect(await status(gw.url, b, jobB)).toBe(401);
    const limited = await request(`${gw.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...auth(c) }, body: JSON.stringify(SEED_REQUEST) });
    expect(limited.statusCode).toBe(429);
    expect(((await limited.body.json()) as { detail: string }).detail).toContain('2 per');
    // Reads were not lowered: team-c still reads.
    expect(answered(await status(gw.url, c, jobC))).toBe(true);

    const [line] = gw.lines('tenants file reloaded');
    expect(line).toMatchObject({ level: 30, tenants: 3, added: ['team-d'], removed: ['team-b'], changed: ['team-a', 'team-c'], trigger: 'manual' });
    const text = gw.logs.join('\n');
    for (const secret of [a1, a2, b, c, d]) {
      expect(text).not.toContain(secret);
      expect(text).not.toContain(digestKey(secret));
    }
  }, 20_000);

  it('rejects invalid JSON, a schema-invalid file and a missing file with one error line each, keeping the tenants in force', async () => {
    const a = newKey();
    const gw = await startGateway([{ id: 'team-a', keys: [a] }]);
    const rejected = () => gw.lines('tenants file rejected; keeping the previous tenants');

    await writeFile(gw.file, '{"tenants": [');
    const badJson = await gw.reloader.reload();
    expect(badJson.ok).toBe(false);
    expect(rejected()).toHaveLength(1);
    expect(rejected()[0]).toMatchObject({ level: 50, file: gw.file });
    expect((rejected()[0]!.problems as string[])[0]).toMatch(/^is not valid JSON/);
    expect((await submit(gw.url, a)).status).toBe(200);

    const other = newKey();
    await writeFile(gw.file, tenantsJson([{ id: 'team-a', keys: [a] }, { id: 'team-a', keys: [other] }]));
    const duplicate = await gw.reloader.reload('signal');
    expect(duplicate).toEqual({ ok: false, problems: ['tenants.1.id: duplicate tenant id "team-a"'] });
    expect(rejected()).toHaveLength(2);
    expect(rejected()[1]).toMatchObject({ level: 50, trigger: 'signal', problems: ['tenants.1.id: duplicate tenant id "team-a"'] });
    expect((await submit(gw.url, a)).status).toBe(200);
    expect((await submit(gw.url, other)).status).toBe(401);

    // Missing for longer than a rename takes: looked for twice, then rejected.
    await unlink(gw.file);
    expect(await gw.reloader.reload()).toEqual({ ok: false, problems: [`cannot be read: ENOENT, there is no file at ${gw.file}`] });
    expect(rejected()).toHaveLength(3);
    expect((await submit(gw.url, a)).status).toBe(200);
    expect((await fetch(`${gw.url}/healthz`)).status).toBe(200);

    // A good file afterwards is applied as usual.
    const a2 = newKey();
    await writeFile(gw.file, tenantsJson([{ id: 'team-a', keys: [a2] }]));
    expect(await gw.reloader.reload()).toMatchObject({ ok: true, applied: true });
    expect((await submit(gw.url, a2)).status).toBe(200);
    expect(gw.logs.filter((l) => l.includes('"level":50'))).toHaveLength(3);
    // Counted, so an alert can catch a broken push without reading the logs.
    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    expect(metrics).toContain('fal_gateway_tenants_reloads_total{outcome="rejected"} 3');
    expect(metrics).toContain('fal_gateway_tenants_reloads_total{outcome="applied"} 1');
    expect(metrics).toMatch(/^fal_gateway_tenants 1$/m);
  });

  it('applies a valid file with no tenant, warning as at start that every call will be 401', async () => {
    const a = newKey();
    const gw = await startGateway([{ id: 'team-a', keys: [a] }, { id: 'team-b', keys: [newKey()] }]);
    expect(await (await fetch(`${gw.url}/metrics`)).text()).toMatch(/^fal_gateway_tenants 2$/m);
    await writeFile(gw.file, tenantsJson([]));
    expect(await gw.reloader.reload()).toMatchObject({ ok: true, applied: true, tenants: [] });
    expect(gw.lines('the tenants file lists no tenant: every call will be 401')).toEqual([expect.objectContaining({ level: 40, file: gw.file, trigger: 'manual' })]);
    expect((await submit(gw.url, a)).status).toBe(401);
    expect(await (await fetch(`${gw.url}/metrics`)).text()).toMatch(/^fal_gateway_tenants 0$/m);
  });

  it('applies content identical to what is in force only once, noting the skip at debug level (info when SIGHUP asked)', async () => {
    const a = newKey();
    const gw = await startGateway([{ id: 'team-a', keys: [a] }]);
    const unchanged = await gw.reloader.reload();
    expect(unchanged).toMatchObject({ ok: true, applied: false });
    expect(gw.lines('tenants file unchanged; nothing to reload')[0]).toMatchObject({ level: 20 });
    const b = newKey();
    await writeFile(gw.file, tenantsJson([{ id: 'team-a', keys: [a] }, { id: 'team-b', keys: [b] }]));
    expect(await gw.reloader.reload()).toMatchObject({ ok: true, applied: true });
    expect(await gw.reloader.reload()).toMatchObject({ ok: true, applied: false });
    expect(gw.lines('tenants file reloaded')).toHaveLength(1);
    expect(gw.lines('tenants file unchanged; nothing to reload')).toHaveLength(2);
    // Asked for by the operator (SIGHUP), the answer is at info: a reload that did nothing is confirmed.
    expect(await gw.reloader.reload('signal')).toMatchObject({ ok: true, applied: false });
    expect(gw.lines('tenants file unchanged; nothing to reload')[2]).toMatchObject({ level: 30, trigger: 'signal' });
  });

  it('reads a file missing mid-replacement once more before rejecting it', async () => {
    const a = newKey();
    const gw = await startGateway([{ id: 'team-a', keys: [a] }]);
    const slow = new TenantsReloader({ file: gw.file, target: gw.app, log: gw.app.log, watch: false, debounceMs: 800 });
    const a2 = newKey();
    await unlink(gw.file);
    const reloading = slow.reload();
    // The first look finds nothing; the new file lands well before the second look, 800 ms later.
    await new Promise((r) => setTimeout(r, 200));
    await writeFile(gw.file, tenantsJson([{ id: 'team-a', keys: [a2] }]));
    expect(await reloading).toMatchObject({ ok: true, applied: true });
    expect((await submit(gw.url, a2)).status).toBe(200);
    expect(gw.lines('tenants file missing; looking again shortly')).toHaveLength(1);
    expect(gw.lines('tenants file rejected; keeping the previous tenants')).toEqual([]);
    await slow.close();
  });

  it("invalidates a removed tenant's browser tokens, and those minted with a revoked key; a kept key's tokens survive a rotation", async () => {
    const [a, a2, a3, b] = [newKey(), newKey(), newKey(), newKey()];
    const gw = await startGateway([
      { id: 'team-a', keys: [a, a2] },
      { id: 'team-b', keys: [b] },
    ]);
    const mint = async (key: string) => {
      const res = await fetch(`${gw.url}/v1/tokens`, { method: 'POST', headers: { ...json, ...auth(key) }, body: JSON.stringify({ ttl_seconds: 600 }) });
      expect(res.status).toBe(200);
      return ((await res.json()) as { token: string }).token;
    };
    const [tokenA, tokenA2, tokenB] = [await mint(a), await mint(a2), await mint(b)];
    for (const token of [tokenA, tokenA2, tokenB]) expect((await submit(gw.url, token)).status).toBe(200);

    // team-b removed; team-a's key `a` revoked (leaked, say), `a2` kept, `a3` added.
    await writeFile(gw.file, tenantsJson([{ id: 'team-a', keys: [a2, a3] }]));
    expect(await gw.reloader.reload()).toMatchObject({ ok: true, applied: true });
    expect((await submit(gw.url, tokenB)).status).toBe(401);
    const revoked = await submit(gw.url, tokenA);
    expect(revoked.status).toBe(401);
    // The page learns it may get a new token (from its backend, which holds a current key).
    expect(revoked.detail).toBe(
      'The key that issued this browser token has been revoked: get a new one (POST /v1/tokens) and retry',
    );
    expect((await submit(gw.url, tokenA2)).status).toBe(200);
    expect((await submit(gw.url, await mint(a3))).status).toBe(200);
  });

  it('picks up in-place writes, rename-replacements and ConfigMap-style symlink swaps by watching the directory', async () => {
    const a = newKey();
    const gw = await startGateway([{ id: 'team-a', keys: [a] }], { watch: true });
    const works = (key: string) => async () => (await submit(gw.url, key)).status === 200;

    const k1 = newKey();
    await writeFile(gw.file, tenantsJson([{ id: 'team-a', keys: [k1] }]));
    await until('an in-place write is applied', works(k1));

    const k2 = newKey();
    const tmp = join(gw.dir, '.tenants.json.tmp');
    await writeFile(tmp, tenantsJson([{ id: 'team-a', keys: [k2] }]));
    await rename(tmp, gw.file);
    await until('a rename-replacement is applied', works(k2));
    // The watcher still follows the file after it was replaced.
    const k3 = newKey();
    await writeFile(tmp, tenantsJson([{ id: 'team-a', keys: [k3] }]));
    await rename(tmp, gw.file);
    await until('a second rename-replacement is applied', works(k3));
    expect((await submit(gw.url, a)).status).toBe(401);
    expect(gw.lines('tenants file reloaded').every((l) => l.trigger === 'watch')).toBe(true);
    expect(gw.lines('tenants file rejected; keeping the previous tenants')).toEqual([]);
  });

  it('follows a ConfigMap volume: tenants.json -> ..data/tenants.json, with ..data swapped atomically', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tenants-configmap-'));
    const a = newKey();
    const publish = async (version: string, key: string, first = false) => {
      await mkdir(join(dir, version));
      await writeFile(join(dir, version, 'tenants.json'), tenantsJson([{ id: 'team-a', keys: [key] }]));
      await symlink(version, join(dir, '..data_tmp'));
      await rename(join(dir, '..data_tmp'), join(dir, '..data'));
      if (first) await symlink(join('..data', 'tenants.json'), join(dir, 'tenants.json'));
    };
    await publish('..v1', a, true);
    const upstream = await simulator();
    const file = join(dir, 'tenants.json');
    const snapshot = await readTenantsSnapshot(file);
    const app = await buildApp({ config: parseConfig({ UPSTREAM_TOKEN, UPSTREAM_BASE_URL: upstream.url, TENANTS_FILE: file, LOG_LEVEL: 'silent' }), tenants: snapshot.tenants });
    attachTenantsReloader(app, { file, watch: true, debounceMs: 50, appliedDigest: snapshot.digest });
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    cleanup.push(app);
    expect((await submit(url, a)).status).toBe(200);

    const a2 = newKey();
    await publish('..v2', a2);
    await until('the swapped ConfigMap is applied', async () => (await submit(url, a2)).status === 200);
    expect((await submit(url, a)).status).toBe(401);
  });
});

/** The real server process, as deployed: `node --import tsx src/server.ts`. */
async function spawnServer(env: Record<string, string>): Promise<{ server: ChildProcess; base: string; output: () => string; exited: Promise<number | null> }> {
  const upstream = await simulator();
  const port = await freePort();
  const server = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: new URL('..', import.meta.url),
    env: { PATH: process.env.PATH, PORT: String(port), HOST: '127.0.0.1', UPSTREAM_TOKEN, UPSTREAM_BASE_URL: upstream.url, SHUTDOWN_DRAIN_DELAY_MS: '0', ...env },
  });
  let output = '';
  server.stdout!.on('data', (d) => (output += d));
  server.stderr!.on('data', (d) => (output += d));
  const exited = new Promise<number | null>((resolve) => server.on('exit', (code) => resolve(code)));
  cleanup.push({ close: async () => void (server.exitCode === null && server.signalCode === null && server.kill('SIGKILL')) });
  await until('the server is ready', async () => {
    if (server.exitCode !== null) throw new Error(`server exited:\n${output}`);
    return output.includes('tenants file reloads');
  }, 20_000);
  return { server, base: `http://127.0.0.1:${port}`, output: () => output, exited };
}

describe('the server process', () => {
  it('reloads on SIGHUP without exiting, and still shuts down cleanly on SIGTERM', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tenants-sighup-'));
    const file = join(dir, 'tenants.json');
    const [a, a2] = [newKey(), newKey()];
    await writeFile(file, tenantsJson([{ id: 'team-a', keys: [a] }]));
    const { server, base, output, exited } = await spawnServer({ TENANTS_FILE: file, TENANTS_WATCH: 'false', LOG_LEVEL: 'debug' });
    expect(output()).toContain('tenants file reloads on SIGHUP');
    expect((await submit(base, a)).status).toBe(200);

    await writeFile(file, tenantsJson([{ id: 'team-a', keys: [a2] }]));
    server.kill('SIGHUP');
    await until('the new key works after SIGHUP', async () => (await submit(base, a2)).status === 200);
    expect((await submit(base, a)).status).toBe(401);
    // A second SIGHUP (nothing changed) is no more a shutdown signal than the first.
    server.kill('SIGHUP');
    await until('the second SIGHUP is handled', async () => output().includes('tenants file unchanged'));
    expect(server.exitCode).toBeNull();
    expect(server.signalCode).toBeNull();
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect(output()).not.toContain('shutting down');

    server.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(output()).toContain('shut down cleanly');
  }, 30_000);

  it('with TENANTS_WATCH on, applies a rename-replacement and an in-place write without any signal', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tenants-watch-'));
    const file = join(dir, 'tenants.json');
    const [a, a2, a3] = [newKey(), newKey(), newKey()];
    await writeFile(file, tenantsJson([{ id: 'team-a', keys: [a] }]));
    const { server, base, output } = await spawnServer({ TENANTS_FILE: file });
    expect(output()).toContain('tenants file reloads when it changes and on SIGHUP');

    const tmp = join(dir, 'tenants.json.new');
    await writeFile(tmp, tenantsJson([{ id: 'team-a', keys: [a2] }]));
    await rename(tmp, file);
    await until('a rename-replacement is applied', async () => (await submit(base, a2)).status === 200);
    expect((await submit(base, a)).status).toBe(401);

    await writeFile(file, tenantsJson([{ id: 'team-a', keys: [a3] }]));
    await until('an in-place write is applied', async () => (await submit(base, a3)).status === 200);
    expect(server.exitCode).toBeNull();
    expect(output()).toContain('"trigger":"watch"');
  }, 30_000);
});
