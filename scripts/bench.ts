import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { rmSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { request } from 'undici';
import { newKey } from '../src/cli/key.js';
import { APP_ID, SEED_REQUEST } from '../src/model.js';
import { startSimulator, type Simulator } from '../src/simulator/index.js';
import { cpuMsBetween, runMemoryProbe, startTarget, type BenchChild } from './bench-ipc.js';
import { drive, summarize, type LoadRun, type LoadSpec } from './bench-load.js';
import { gatewayEnv, PUBLIC_BASE_URL, RUN_DEADLINE_MS, SUBMIT_PATH, submitLoad, TENANT_ID } from './bench-submit.js';
import { topSelfTime } from './bench-profile.js';
import { BaselineKind, BenchResults, evaluateTargets, renderMarkdown, renderText, type Comparison, type Phase } from './bench-results.js';

/**
 * `npm run bench`: the gateway against a minimal pass-through proxy, both in front of the
 * simulated fal queue, each in a process of its own so its CPU is measured alone. Same requests,
 * same connections, same run. Prints a table, writes bench/results/latest.json and latest.md.
 *
 * BENCH_SCALE   multiplies every request count (default 1; 0.05 for a quick look)
 * BENCH_OUT     where the JSON goes (default bench/results/latest.json; the .md beside it)
 * BENCH_STRICT  1: exit 1 when a target is missed (default: report only)
 * BENCH_PROFILE 1: profile the gateway during extra, unmeasured runs of each path and name its hot spots
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const out = (text: string) => process.stdout.write(`${text}\n`);
const started = performance.now();
/** A progress line, with the seconds since the bench started. */
const step = (text: string) => out(`[${((performance.now() - started) / 1000).toFixed(1).padStart(5)} s] ${text}`);

/** Compiles the gateway into dist/ (`npm run build`): the bench measures the code that ships. */
async function buildGateway(): Promise<void> {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  try {
    await promisify(execFile)(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: ROOT });
  } catch (err) {
    const { stdout = '' } = err as { stdout?: string };
    throw new Error(`the build failed (npm run build):\n${stdout}`, { cause: err });
  }
}

function parseScale(raw: string | undefined): number {
  const scale = Number(raw ?? '1');
  if (!Number.isFinite(scale) || scale <= 0) throw new Error(`BENCH_SCALE must be a positive number, not "${raw}"`);
  return scale;
}

/** BENCH_BASELINE: what the gateway is compared with (see bench/README.md). */
function parseBaseline(raw: string | undefined): BaselineKind {
  const kind = BaselineKind.safeParse(raw === undefined || raw === '' ? 'proxy' : raw);
  if (!kind.success) throw new Error(`BENCH_BASELINE must be one of ${BaselineKind.options.join(', ')}, not "${raw}"`);
  return kind.data;
}

const BASELINE_SCRIPTS: Record<BaselineKind, string> = {
  proxy: 'bench-baseline.ts',
  fastify: 'bench-baseline-fastify.ts',
  skeleton: 'bench-baseline-skeleton.ts',
};

const scale = parseScale(process.env.BENCH_SCALE);
const counted = (base: number, min: number) => Math.max(min, Math.round(base * scale));
const SUBMIT_CONNECTIONS = 50;
const STATUS_CONNECTIONS = 100;
const STATUS_JOBS = 10;
/** Measured requests are split into rounds, the targets taking turns (see comparePath). */
const ROUNDS = 5;
const perRound = (total: number) => Math.ceil(total / ROUNDS);
const settings = {
  submit: { requests: ROUNDS * perRound(counted(45_000, 150)), rounds: ROUNDS, warmup: counted(3_000, 50), connections: SUBMIT_CONNECTIONS },
  status: { requests: ROUNDS * perRound(counted(120_000, 300)), rounds: ROUNDS, warmup: counted(10_000, 100), connections: STATUS_CONNECTIONS, jobs: STATUS_JOBS },
  // Jobs stay IN_QUEUE for the whole run, so every status read is the same cheap answer. The
  // simulator works out queue_position by walking every job ahead of the one asked about, so
  // its store is bounded to keep its cost flat however many submits came before; the jobs read
  // in the status phase are the newest and are never forgotten.
  simulator: { queueMs: 3_600_000, maxJobs: 1_000 },
  baseline: parseBaseline(process.env.BENCH_BASELINE),
};
const MEMORY_JOBS = 100_000;
/**
 * Upstream status calls per job per second are counted over one continuous polling run of about
 * this long (scaled, at least 1 s), not over the measured rounds: each round starts with the
 * status cache cold, and a round of half a second would count that first call as a rate.
 */
const POLL_SECONDS = Math.max(1, 5 * Math.min(1, scale));
const statusPath = (id: string) => `/${APP_ID}/requests/${id}/status`;

interface Target {
  name: 'baseline' | 'gateway';
  child: BenchChild;
  headers: Record<string, string>;
  /** Where the target's answers point status_url. */
  statusUrlBase: string;
}

interface Measured {
  phase: Phase;
  /** CPU ms per request of each measured round, in order. */
  roundCpuMsPerRequest: number[];
  /** Heap growth over the measured rounds, after full collections (outside the CPU windows). */
  heapGrowth: number;
}

/**
 * A warm-up run of each target, not counted, then the measured requests in ROUNDS rounds, the
 * targets taking turns and alternating who goes first, so a change in the machine's background
 * load falls on both alike. The CPU of the target's process is read around each of its rounds;
 * `around` runs just before and after each of them (to count what the upstream saw).
 */
async function comparePath(
  targets: { baseline: Target; gateway: Target },
  spec: (target: Target, amount: number) => LoadSpec,
  { requests, warmup }: { requests: number; warmup: number },
  around: { before?: (target: Target) => void; after?: (target: Target) => void } = {},
): Promise<{ baseline: Measured; gateway: Measured }> {
  const order = [targets.baseline, targets.gateway];
  const state = new Map<Target, { runs: LoadRun[]; cpuMs: number; rounds: number[]; rssMiB: number; heapBefore: number }>();
  for (const target of order) {
    await drive(spec(target, warmup));
    state.set(target, { runs: [], cpuMs: 0, rounds: [], rssMiB: 0, heapBefore: (await target.child.usage({ gc: true })).memory.heapUsed });
  }
  for (let round = 0; round < ROUNDS; round++) {
    for (const target of round % 2 === 0 ? order : [...order].reverse()) {
      const own = state.get(target)!;
      const before = await target.child.usage();
      around.before?.(target);
      const run = await drive(spec(target, requests / ROUNDS));
      own.runs.push(run);
      const after = await target.child.usage();
      around.after?.(target);
      own.cpuMs += cpuMsBetween(before, after);
      own.rounds.push(cpuMsBetween(before, after) / Math.max(1, run.latencies.length));
      own.rssMiB = after.memory.rss / 2 ** 20;
    }
  }
  const measured = async (target: Target): Promise<Measured> => {
    const own = state.get(target)!;
    const load = summarize(own.runs);
    const heapAfter = (await target.child.usage({ gc: true })).memory.heapUsed;
    return {
      phase: { ...load, cpuMs: own.cpuMs, cpuMsPerRequest: own.cpuMs / load.requests, rssMiB: own.rssMiB },
      roundCpuMsPerRequest: own.rounds,
      heapGrowth: heapAfter - own.heapBefore,
    };
  };
  return { baseline: await measured(targets.baseline), gateway: await measured(targets.gateway) };
}

function compare(baseline: Measured, gateway: Measured): Comparison {
  return {
    baseline: baseline.phase,
    gateway: gateway.phase,
    ratio: {
      cpuPerRequest: gateway.phase.cpuMsPerRequest / baseline.phase.cpuMsPerRequest,
      requestsPerSecond: gateway.phase.requestsPerSecond / baseline.phase.requestsPerSecond,
      latencyP99: gateway.phase.latencyP99Ms / baseline.phase.latencyP99Ms,
    },
    // Each gateway round against the baseline round run next to it: how far the machine moved the ratio.
    cpuRatioByRound: gateway.roundCpuMsPerRequest.map((ms, i) => ms / baseline.roundCpuMsPerRequest[i]!),
  };
}

function submitSpec(target: Target, amount: number): LoadSpec {
  return submitLoad(target.child.url, target.headers, target.statusUrlBase, amount, settings.submit.connections);
}

function statusSpec(target: Target, ids: readonly string[], amount: number): LoadSpec {
  const paths = ids.map(statusPath);
  // The answer about that very job, with its status_url pointing where this target serves it.
  const expected = new Map(ids.map((id) => [statusPath(id), `"status_url":"${target.statusUrlBase}`]));
  const idOf = new Map(ids.map((id) => [statusPath(id), `"request_id":"${id}"`]));
  return {
    url: target.child.url,
    connections: settings.status.connections,
    amount,
    method: 'GET',
    headers: target.headers,
    paths,
    accept: (body, path) => body.includes(idOf.get(path) ?? '\0') && body.includes(expected.get(path) ?? '\0') && body.includes('"status":"IN_QUEUE"'),
    deadlineMs: RUN_DEADLINE_MS,
  };
}

/** Submits `count` jobs one by one and returns their request ids (the gateway records them as the tenant's). */
async function submitJobs(target: Target, count: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    const res = await request(`${target.child.url}${SUBMIT_PATH}`, {
      method: 'POST',
      headers: { ...target.headers, 'content-type': 'application/json' },
      body: JSON.stringify({ ...SEED_REQUEST, seed: i }),
    });
    const body = (await res.body.json()) as { request_id?: unknown };
    if (res.statusCode !== 200 || typeof body.request_id !== 'string') {
      throw new Error(`${target.name}: submit answered ${res.statusCode} ${JSON.stringify(body)}`);
    }
    ids.push(body.request_id);
  }
  return ids;
}

/** Reads each job's status once and checks the whole answer, not only its status code. */
async function checkStatusBodies(target: Target, ids: readonly string[]): Promise<{ checked: number; ok: number }> {
  let ok = 0;
  for (const id of ids) {
    const res = await request(`${target.child.url}${statusPath(id)}`, { headers: target.headers });
    const body = (await res.body.json()) as Record<string, unknown>;
    // Both serve fal's paths, and answer with URLs of that shape (the gateway's on its public origin).
    const statusUrl = `${target.statusUrlBase}${statusPath(id)}`;
    if (res.statusCode === 202 && body.status === 'IN_QUEUE' && body.request_id === id && body.status_url === statusUrl && typeof body.queue_position === 'number') ok++;
  }
  return { checked: ids.length, ok };
}

/** On failure, the gateway's last error lines say why better than a status code. */
async function reportGatewayErrors(logFile: string): Promise<void> {
  const text = await readFile(logFile, 'utf8').catch(() => '');
  const errors = text.split('\n').filter((line) => /"level":(5|6)\d/.test(line));
  for (const line of errors.slice(-5)) process.stderr.write(`gateway log: ${line}\n`);
}

async function run(): Promise<BenchResults> {
  const resultsFile = resolve(ROOT, process.env.BENCH_OUT ?? 'bench/results/latest.json');
  const upstreamToken = `bench-upstream-${randomBytes(16).toString('hex')}`;
  const tenantKey = newKey();
  const work = await mkdtemp(join(tmpdir(), 'fal-gateway-bench-'));
  const logFile = join(work, 'gateway.log');
  // Also when interrupted: the exit handlers run on process.exit.
  const removeWork = () => rmSync(work, { recursive: true, force: true });
  process.once('exit', removeWork);
  let sim: Simulator | undefined;
  const children: BenchChild[] = [];
  try {
    out(`fal-gateway bench: scale ${scale}, ${settings.submit.requests} submits and ${settings.status.requests} status reads per target`);
    step('building the gateway (npm run build)...');
    await buildGateway();
    sim = await startSimulator({
      token: upstreamToken,
      queueMs: settings.simulator.queueMs,
      runMs: 1_000,
      maxJobs: settings.simulator.maxJobs,
      maxRecordedRequests: 10_000_000,
    });
    const upstreamEnv = { BENCH_UPSTREAM_URL: sim.url, BENCH_UPSTREAM_TOKEN: upstreamToken };
    // Nothing is measured yet: the memory probe (heap only) runs while the targets start.
    step('starting the gateway and the baseline; memory: recording jobs in the job store...');
    const gatewayEnvironment = gatewayEnv({ url: sim.url, token: upstreamToken }, work, tenantKey);
    const [gatewayStart, baselineStart, probeRun] = await Promise.allSettled([
      startTarget('bench-gateway.ts', gatewayEnvironment, ['--expose-gc']),
      startTarget(BASELINE_SCRIPTS[settings.baseline], { ...upstreamEnv, BENCH_LOG_FILE: join(work, 'baseline.log') }, ['--expose-gc']),
      runMemoryProbe('bench-memory.ts', { BENCH_MEMORY_JOBS: String(MEMORY_JOBS), BENCH_TENANT_ID: TENANT_ID }),
    ]);
    for (const start of [gatewayStart, baselineStart]) if (start.status === 'fulfilled') children.push(start.value);
    if (gatewayStart.status === 'rejected') throw gatewayStart.reason;
    if (baselineStart.status === 'rejected') throw baselineStart.reason;
    if (probeRun.status === 'rejected') throw probeRun.reason;
    const gatewayChild = gatewayStart.value;
    const baselineChild = baselineStart.value;
    const probe = probeRun.value;
    const baseline: Target = { name: 'baseline', child: baselineChild, headers: {}, statusUrlBase: sim.url };
    const gateway: Target = { name: 'gateway', child: gatewayChild, headers: { authorization: `Bearer ${tenantKey}` }, statusUrlBase: PUBLIC_BASE_URL };
    const simulator = sim;
    const forgetRecorded = () => {
      simulator.requests.length = 0;
    };

    const targets = { baseline, gateway };
    step(`submit: ${ROUNDS} rounds of each target...`);
    forgetRecorded();
    // The simulator keeps what it records; nothing about submits is needed, so it is dropped as it goes.
    const submit = await comparePath(targets, submitSpec, settings.submit, { after: forgetRecorded });

    step(`status: ${ROUNDS} rounds of each target...`);
    const baselineIds = await submitJobs(baseline, STATUS_JOBS);
    const gatewayIds = await submitJobs(gateway, STATUS_JOBS);
    const idsOf = (target: Target) => (target === gateway ? gatewayIds : baselineIds);
    const status = await comparePath(targets, (target, amount) => statusSpec(target, idsOf(target), amount), settings.status, {
      before: forgetRecorded,
      after: forgetRecorded,
    });
    const statusGateway = status.gateway.phase;

    // Upstream status calls for the polled jobs, over one continuous run at the gateway's own
    // pace (the gateway's check of jobs it has not seen end reads other jobs meanwhile).
    step(`upstream calls: 100 clients polling ${STATUS_JOBS} jobs through the gateway for about ${POLL_SECONDS} s...`);
    const polled = new Set(gatewayIds.map(statusPath));
    forgetRecorded();
    const polling = await drive(statusSpec(gateway, gatewayIds, Math.round(statusGateway.requestsPerSecond * POLL_SECONDS)));
    const statusCalls = simulator.requests.filter((r) => r.method === 'GET' && polled.has(r.path.split('?')[0]!)).length;
    forgetRecorded();
    const pollingReads = polling.latencies.length;
    if (polling.errors + polling.timeouts + polling.non2xx + polling.badBodies > 0) throw new Error('the polling run had errors, non-2xx answers or wrong bodies');
    const baselineBodies = await checkStatusBodies(baseline, baselineIds);
    const gatewayBodies = await checkStatusBodies(gateway, gatewayIds);

    let profiles: BenchResults['profiles'];
    if (process.env.BENCH_PROFILE === '1') {
      const profileRun = async (path: 'submit' | 'status', spec: LoadSpec) => {
        step(`profile: gateway ${path} path (unmeasured)...`);
        const file = join(tmpdir(), `fal-gateway-bench-${path}-${process.pid}.cpuprofile`);
        await gateway.child.profileStart();
        const profiled = await drive(spec);
        await gateway.child.profileStop(file);
        forgetRecorded();
        return { file, requests: summarize([profiled]).requests, top: await topSelfTime(file, 5), topJavaScript: await topSelfTime(file, 5, { javascriptOnly: true }) };
      };
      profiles = {
        status: await profileRun('status', statusSpec(gateway, gatewayIds, settings.status.requests / ROUNDS)),
        submit: await profileRun('submit', submitSpec(gateway, settings.submit.requests / ROUNDS)),
      };
    }

    const results: Omit<BenchResults, 'targets'> = {
      date: new Date().toISOString(),
      node: process.versions.node,
      cpu: { model: cpus()[0]?.model ?? 'unknown', cores: cpus().length },
      platform: `${process.platform} ${process.arch}`,
      scale,
      settings,
      submit: compare(submit.baseline, submit.gateway),
      status: compare(status.baseline, status.gateway),
      upstream: {
        statusReads: pollingReads,
        statusCalls,
        jobs: STATUS_JOBS,
        seconds: polling.seconds,
        callsPer1000Reads: (1000 * statusCalls) / pollingReads,
        callsPerJobPerSecond: statusCalls / STATUS_JOBS / polling.seconds,
      },
      memory: {
        jobs: probe.jobs,
        heapBytesPerJob: (probe.heapAfter - probe.heapBefore) / probe.jobs,
        rssBytesPer100kJobs: ((probe.rssAfter - probe.rssBefore) / probe.jobs) * 100_000,
        measured: probe.measured,
      },
      gatewayHeap: {
        submittedJobs: submit.gateway.phase.requests,
        heapBytesPerSubmittedJob: submit.gateway.heapGrowth / submit.gateway.phase.requests,
      },
      checks: { gatewayStatusBodies: gatewayBodies, baselineStatusBodies: baselineBodies },
      ...(profiles ? { profiles } : {}),
    };
    const complete = BenchResults.parse({ ...results, targets: evaluateTargets(results) });
    await mkdir(dirname(resultsFile), { recursive: true });
    await writeFile(resultsFile, `${JSON.stringify(complete, null, 2)}\n`);
    await writeFile(resultsFile.replace(/\.json$/, '') + '.md', renderMarkdown(complete));
    out('');
    out(renderText(complete));
    out('');
    out(renderMarkdown(complete));
    out(`wrote ${resultsFile}`);
    return complete;
  } catch (err) {
    await reportGatewayErrors(logFile);
    throw err;
  } finally {
    await Promise.all(children.map((child) => child.stop()));
    await sim?.close();
    removeWork();
  }
}

try {
  const results = await run();
  const missed = results.targets.filter((t) => !t.pass);
  process.exitCode = process.env.BENCH_STRICT === '1' && missed.length > 0 ? 1 : 0;
} catch (err) {
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
}
