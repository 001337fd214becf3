import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BenchResults, evaluateTargets, LIMITS, type Phase } from '../scripts/bench-results.js';

/**
 * `npm run bench` at a tiny scale, as a real child process with real children of its own (the
 * gateway, the baseline proxy, the memory probe) in front of the simulated upstream. It checks
 * what the run wrote, never how fast anything was: the machines are shared.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runBench(env: Record<string, string>, script = 'scripts/bench.ts', args: string[] = []): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Pids of the direct children of `pid` (from /proc, Linux). */
async function childrenOf(pid: number): Promise<number[]> {
  const text = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '');
  return text.trim() === '' ? [] : text.trim().split(/\s+/).map(Number);
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** The targets load the gateway's modules from dist/ (npm run bench builds it; run alone, a test must). */
async function ensureBuilt(): Promise<void> {
  if (existsSync(join(ROOT, 'dist/app.js'))) return;
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  await promisify(execFile)(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: ROOT });
}

const positive = (value: number) => Number.isFinite(value) && value > 0;

describe('bench: a tiny run of npm run bench', () => {
  let dir: string;
  let run: Run;
  let results: BenchResults;
  let markdown: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bench-test-'));
    const out = join(dir, 'latest.json');
    run = await runBench({ BENCH_SCALE: '0.01', BENCH_OUT: out, BENCH_STRICT: '', BENCH_PROFILE: '' });
    if (run.code !== 0) throw new Error(`the bench exited ${run.code}:\n${run.stderr}`);
    results = BenchResults.parse(JSON.parse(await readFile(out, 'utf8')));
    markdown = await readFile(join(dir, 'latest.md'), 'utf8');
  }, 90_000);

  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const phases = (): Array<[string, Phase, number]> => [
    ['submit baseline', results.submit.baseline, results.settings.submit.requests],
    ['submit gateway', results.submit.gateway, results.settings.submit.requests],
    ['status baseline', results.status.baseline, results.settings.status.requests],
    ['status gateway', results.status.gateway, results.settings.status.requests],
  ];

  it('answers every request of every phase, with no error, non-2xx or wrong body', () => {
    for (const [name, phase, requests] of phases()) {
      expect({ name, requests: phase.requests, errors: phase.errors, timeouts: phase.timeouts, non2xx: phase.non2xx, badBodies: phase.badBodies }).toEqual({
        name,
        requests,
        errors: 0,
        timeouts: 0,
        non2xx: 0,
        badBodies: 0,
      });
    }
  });

  it('reports every figure as a positive finite number', () => {
    for (const [name, phase] of phases()) {
      const figures = {
        seconds: phase.seconds,
        requestsPerSecond: phase.requestsPerSecond,
        latencyP50Ms: phase.latencyP50Ms,
        latencyP99Ms: phase.latencyP99Ms,
        cpuMs: phase.cpuMs,
        cpuMsPerRequest: phase.cpuMsPerRequest,
        rssMiB: phase.rssMiB,
      };
      for (const [figure, value] of Object.entries(figures)) expect(positive(value), `${name} ${figure} = ${value}`).toBe(true);
    }
    const others = {
      'submit ratio cpu': results.submit.ratio.cpuPerRequest,
      'submit ratio req/s': results.submit.ratio.requestsPerSecond,
      'submit ratio p99': results.submit.ratio.latencyP99,
      'status ratio cpu': results.status.ratio.cpuPerRequest,
      'status ratio req/s': results.status.ratio.requestsPerSecond,
      'status ratio p99': results.status.ratio.latencyP99,
      'upstream status calls': results.upstream.statusCalls,
      'upstream calls per 1,000 reads': results.upstream.callsPer1000Reads,
      'upstream calls per job per second': results.upstream.callsPerJobPerSecond,
      'heap per tracked job': results.memory.heapBytesPerJob,
      'RSS per 100,000 jobs': results.memory.rssBytesPer100kJobs,
    };
    for (const [figure, value] of Object.entries(others)) expect(positive(value), `${figure} = ${value}`).toBe(true);
    expect(Number.isFinite(results.gatewayHeap.heapBytesPerSubmittedJob)).toBe(true);
    // The upstream calls are counted over one continuous polling run of about a second at this
    // scale, as many reads as the gateway served per second in the status rounds.
    expect(results.upstream.statusReads).toBe(Math.round(results.status.gateway.requestsPerSecond));
    expect(results.upstream.jobs).toBe(10);
    expect(results.memory.jobs).toBe(100_000);
  });

  it('reports the CPU ratio of every round, and the whole-run ratio lies within them', () => {
    for (const [path, comparison, rounds] of [
      ['submit', results.submit, results.settings.submit.rounds],
      ['status', results.status, results.settings.status.rounds],
    ] as const) {
      expect(comparison.cpuRatioByRound, path).toHaveLength(rounds);
      for (const ratio of comparison.cpuRatioByRound) expect(positive(ratio), `${path} round ratio ${ratio}`).toBe(true);
      // Rounds are the same size, so the whole run's ratio is a weighted mean of the rounds'.
      expect(comparison.ratio.cpuPerRequest, path).toBeGreaterThanOrEqual(Math.min(...comparison.cpuRatioByRound) * 0.999);
      expect(comparison.ratio.cpuPerRequest, path).toBeLessThanOrEqual(Math.max(...comparison.cpuRatioByRound) * 1.001);
    }
    expect(run.stdout).toContain('CPU ratio by round: submit ');
  });

  it('checked the status bodies of both targets whole: every job, IN_QUEUE, its id, its status_url', () => {
    expect(results.checks.gatewayStatusBodies).toEqual({ checked: 10, ok: 10 });
    expect(results.checks.baselineStatusBodies).toEqual({ checked: 10, ok: 10 });
  });

  it('judges each target from its own figure and limit', () => {
    expect(results.targets.map((t) => [t.name, t.limit])).toEqual([
      ['gateway CPU per submit vs baseline', LIMITS.submitCpuRatio],
      ['gateway CPU per status read vs baseline', LIMITS.statusCpuRatio],
      ['upstream status calls per job per second', LIMITS.upstreamCallsPerJobPerSecond],
      ['heap per tracked job', LIMITS.heapBytesPerJob],
    ]);
    const [submitCpu, statusCpu, upstream, heap] = results.targets;
    expect(submitCpu!.value).toBe(results.submit.ratio.cpuPerRequest);
    expect(statusCpu!.value).toBe(results.status.ratio.cpuPerRequest);
    expect(upstream!.value).toBe(results.upstream.callsPerJobPerSecond);
    expect(heap!.value).toBe(results.memory.heapBytesPerJob);
    for (const t of results.targets) expect(t.pass, t.name).toBe(t.value <= t.limit);
  });

  it('prints the table and writes the same figures as Markdown beside the JSON', () => {
    expect(run.stdout).toContain('gateway/baseline');
    expect(markdown).toContain('| path | target | req/s | p50 ms | p99 ms | CPU ms/req | errors | non-2xx/bad |');
    expect(markdown).toContain(`BENCH_SCALE=${results.scale}`);
    for (const t of results.targets) expect(markdown).toContain(`| ${t.name} |`);
  });
});

describe('bench: interrupted', () => {
  it('takes its child processes down with it', { timeout: 60_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'bench-test-'));
    try {
      const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/bench.ts'], {
        cwd: ROOT,
        env: { ...process.env, BENCH_SCALE: '0.01', BENCH_OUT: join(dir, 'latest.json') },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const closed = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
      // Both targets are up once the first load phase starts.
      await new Promise<void>((resolve, reject) => {
        let seen = '';
        child.stdout.on('data', (chunk: Buffer) => {
          seen += chunk.toString();
          if (seen.includes('] submit:')) resolve();
        });
        child.once('close', () => reject(new Error(`the bench ended before its first phase:\n${seen}`)));
      });
      const targets = await childrenOf(child.pid!);
      expect(targets.length, 'gateway and baseline processes').toBeGreaterThanOrEqual(2);
      child.kill('SIGINT');
      expect(await closed).toBe(130);
      await expect.poll(() => targets.filter(alive), { timeout: 5_000 }).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('bench: the baselines', () => {
  it('refuses an unknown BENCH_BASELINE, naming the ones it knows', { timeout: 30_000 }, async () => {
    const run = await runBench({ BENCH_BASELINE: 'express', BENCH_SCALE: '0.01' });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('BENCH_BASELINE must be one of proxy, fastify, skeleton, not "express"');
  });

  it('holds only the bare proxy to the CPU targets: another baseline is for telling costs apart', () => {
    const run = {
      submit: { ratio: { cpuPerRequest: 1.2 } },
      status: { ratio: { cpuPerRequest: 0.7 } },
      upstream: { callsPerJobPerSecond: 3.3 },
      memory: { heapBytesPerJob: 218 },
    };
    const judged = (baseline: 'proxy' | 'fastify' | 'skeleton') =>
      evaluateTargets({ ...run, settings: { baseline } } as unknown as Parameters<typeof evaluateTargets>[0]).map((t) => t.name);
    expect(judged('proxy')).toEqual([
      'gateway CPU per submit vs baseline',
      'gateway CPU per status read vs baseline',
      'upstream status calls per job per second',
      'heap per tracked job',
    ]);
    for (const other of ['fastify', 'skeleton'] as const) expect(judged(other)).toEqual(['upstream status calls per job per second', 'heap per tracked job']);
  });

  it('bench:frame: the bare proxy, Fastify, the skeleton and the gateway take turns; every answer checked, each ratio to the proxy reported', { timeout: 120_000 }, async () => {
    await ensureBuilt();
    const dir = await mkdtemp(join(tmpdir(), 'bench-frame-test-'));
    try {
      const out = join(dir, 'frame.json');
      const run = await runBench({ BENCH_FRAME_ROUNDS: '2', BENCH_FRAME_REQUESTS: '60', BENCH_FRAME_OUT: out }, 'scripts/bench-frame.ts');
      expect(run.code, run.stderr).toBe(0);
      const result = JSON.parse(await readFile(out, 'utf8')) as {
        rounds: number;
        failures: number;
        targets: Record<string, { cpuMsPerSubmitByRound: number[]; ratioToProxyByRound: number[]; medianRatioToProxy: number }>;
      };
      expect(result).toMatchObject({ rounds: 2, failures: 0 });
      expect(Object.keys(result.targets)).toEqual(['proxy', 'fastify', 'skeleton', 'gateway']);
      for (const [name, target] of Object.entries(result.targets)) {
        expect(target.cpuMsPerSubmitByRound, name).toHaveLength(2);
        for (const ms of target.cpuMsPerSubmitByRound) expect(positive(ms), `${name} ${ms} ms`).toBe(true);
        // Each round's ratio is that target's CPU per submit over the proxy's in the same round.
        expect(target.ratioToProxyByRound).toEqual(target.cpuMsPerSubmitByRound.map((ms, i) => ms / result.targets.proxy!.cpuMsPerSubmitByRound[i]!));
        expect(target.ratioToProxyByRound).toContain(target.medianRatioToProxy);
      }
      expect(run.stdout).toMatch(/framework \(fastify \/ proxy\) [\d.]+x; per-request frame \(skeleton \/ fastify\) [\d.]+x; features \(gateway \/ skeleton\) [\d.]+x/);
      expect(run.stdout).toContain('every answer checked');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('skeleton: passes submit and status through with the gateway\'s headers and one request line each, and nothing else', { timeout: 90_000 }, async () => {
    await ensureBuilt();
    const { startSimulator } = await import('../src/simulator/index.js');
    const { startTarget } = await import('../scripts/bench-ipc.js');
    const { SEED_REQUEST, MODEL_ID, APP_ID } = await import('../src/model.js');
    const dir = await mkdtemp(join(tmpdir(), 'bench-skeleton-'));
    const token = 'skeleton-test-upstream-token-0123456789';
    const sim = await startSimulator({ token, queueMs: 3_600_000, runMs: 1_000 });
    const logFile = join(dir, 'skeleton.log');
    const target = await startTarget('bench-baseline-skeleton.ts', { BENCH_UPSTREAM_URL: sim.url, BENCH_UPSTREAM_TOKEN: token, BENCH_LOG_FILE: logFile });
    try {
      const submitted = await fetch(`${target.url}/${MODEL_ID}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(SEED_REQUEST) });
      expect(submitted.status).toBe(200);
      const job = (await submitted.json()) as { request_id: string; status_url: string };
      // Passed through as the upstream wrote it: no URL rewriting.
      expect(job.status_url).toBe(`${sim.url}/${APP_ID}/requests/${job.request_id}/status`);
      expect(sim.requests.at(-1)?.headers.authorization).toBe(`Key ${token}`);
      const submitId = submitted.headers.get('x-request-id');
      expect(submitId).toMatch(/^[0-9a-f-]{36}$/);
      expect(Object.fromEntries(['x-content-type-options', 'referrer-policy', 'ratelimit', 'x-ratelimit-remaining'].map((h) => [h, submitted.headers.get(h) !== null]))).toEqual({
        'x-content-type-options': true,
        'referrer-policy': true,
        ratelimit: true,
        'x-ratelimit-remaining': true,
      });
      const status = await fetch(`${target.url}/${APP_ID}/requests/${job.request_id}/status`);
      expect(((await status.json()) as { status: string }).status).toBe('IN_QUEUE');
      // One line per request at info, through the gateway's batched destination (at most 250 ms late).
      const lines = async () =>
        (await readFile(logFile, 'utf8').catch(() => ''))
          .split('\n')
          .filter(Boolean)
          .map((line) => JSON.parse(line) as Record<string, unknown>)
          .filter((line) => line.msg === 'request');
      await expect.poll(async () => (await lines()).length, { timeout: 5_000 }).toBe(2);
      const [submitLine, statusLine] = await lines();
      expect(submitLine).toMatchObject({ level: 30, reqId: submitId, method: 'POST', url: `/${MODEL_ID}`, statusCode: 200, requestId: job.request_id });
      expect(statusLine).toMatchObject({ level: 30, method: 'GET', statusCode: status.status });
      expect(await readFile(logFile, 'utf8')).not.toContain(token);
    } finally {
      await target.stop();
      await sim.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('bench:ab: two builds of the gateway, taking turns', () => {
  let build: string;
  let dir: string;

  beforeAll(async () => {
    // A build of its own, where Node still finds the project's dependencies (node_modules/.cache).
    await mkdir(join(ROOT, 'node_modules/.cache'), { recursive: true });
    const checkout = await mkdtemp(join(ROOT, 'node_modules/.cache/bench-ab-'));
    build = join(checkout, 'dist');
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    await promisify(execFile)(process.execPath, [tsc, '-p', 'tsconfig.build.json', '--outDir', build], { cwd: ROOT });
    await copyFile(join(ROOT, 'package.json'), join(checkout, 'package.json'));
    dir = await mkdtemp(join(tmpdir(), 'bench-ab-test-'));
  }, 90_000);

  afterAll(async () => {
    if (build) await rm(dirname(build), { recursive: true, force: true });
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('runs both builds round by round, checks every answer, and reports the ratio of each round and their median', { timeout: 90_000 }, async () => {
    const out = join(dir, 'ab.json');
    const run = await runBench({ BENCH_AB_ROUNDS: '3', BENCH_AB_REQUESTS: '60', BENCH_AB_OUT: out }, 'scripts/bench-ab.ts', [build, build]);
    expect(run.code, run.stderr).toBe(0);
    const result = JSON.parse(await readFile(out, 'utf8')) as {
      a: string;
      b: string;
      pinned: boolean;
      failures: number;
      ratioByRound: number[];
      medianRatio: number;
      quartiles: [number, number];
      cpuMsPerSubmit: { a: number; b: number };
    };
    expect(result).toMatchObject({ a: build, b: build, failures: 0 });
    expect(typeof result.pinned).toBe('boolean');
    expect(result.ratioByRound).toHaveLength(3);
    for (const ratio of result.ratioByRound) expect(positive(ratio), `round ratio ${ratio}`).toBe(true);
    expect(result.ratioByRound).toContain(result.medianRatio);
    expect(result.quartiles[0]).toBeLessThanOrEqual(result.medianRatio);
    expect(result.quartiles[1]).toBeGreaterThanOrEqual(result.medianRatio);
    expect(positive(result.cpuMsPerSubmit.a) && positive(result.cpuMsPerSubmit.b)).toBe(true);
    expect(run.stdout).toContain('every answer checked');
  });

  it('refuses a directory that holds no built gateway, saying what to do', { timeout: 30_000 }, async () => {
    const run = await runBench({}, 'scripts/bench-ab.ts', [build, dir]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`${dir} holds no built gateway (no app.js; run npm run build there)`);
    const usage = await runBench({}, 'scripts/bench-ab.ts', []);
    expect(usage.code).toBe(1);
    expect(usage.stderr).toContain('usage: npm run bench:ab -- <dist-a> <dist-b>');
  });
});

describe('bench: the load driver', () => {
  it('times a run to its last answer, not to autocannon\'s once-a-second tick', async () => {
    const { createServer } = await import('node:http');
    const { drive } = await import('../scripts/bench-load.js');
    // Three answers of 100 ms each, one after the other: about 0.3 s of work.
    const server = createServer((_req, res) => setTimeout(() => res.end('{"ok":true}'), 100));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as import('node:net').AddressInfo;
      const run = await drive({
        url: `http://127.0.0.1:${port}`,
        connections: 1,
        amount: 3,
        method: 'GET',
        headers: {},
        paths: ['/'],
        accept: (body) => body.includes('"ok"'),
        deadlineMs: 10_000,
      });
      expect(run.latencies).toHaveLength(3);
      expect(run.badBodies).toBe(0);
      expect(run.seconds).toBeGreaterThanOrEqual(0.3);
      // autocannon's own end comes at its first sampling tick, a whole second after the start.
      expect(run.seconds).toBeLessThan(0.9);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
