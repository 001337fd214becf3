import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { newKey } from '../src/cli/key.js';
import { startSimulator, type Simulator } from '../src/simulator/index.js';
import { cpuMsBetween, pinTargets, positiveInteger, startTarget, type BenchChild } from './bench-ipc.js';
import { drive, percentile } from './bench-load.js';
import { gatewayEnv, PUBLIC_BASE_URL, submitLoad } from './bench-submit.js';

/**
 * `npm run bench:frame`: where a submit's CPU goes, in one run. Four targets take turns on the
 * submit path, round after round, in front of one simulated upstream:
 *
 *   proxy     the bare undici proxy the bench's targets are set against (bench-baseline.ts)
 *   fastify   the same pass-through on Fastify (bench-baseline-fastify.ts)
 *   skeleton  that, with what every gateway request carries whatever it asks for: the request
 *             line at info, a request id, the hooks and the response headers (bench-baseline-skeleton.ts)
 *   gateway   the gateway as it ships (bench-gateway.ts, the build in dist/)
 *
 * It prints each target's CPU per submit round by round and the median of its per-round ratio to
 * the proxy: fastify/proxy is the framework, skeleton/fastify the per-request frame, and
 * gateway/skeleton the gateway's features. `npm run bench` measures the targets over five
 * rounds; this needs more, shorter ones for figures a few percent apart, and (when `taskset` and
 * a second CPU are there) pins the targets to the last CPU and the load generator to the first.
 *
 * BENCH_FRAME_ROUNDS    rounds (default 10); BENCH_FRAME_REQUESTS submits per target per round (default 5,000)
 * BENCH_FRAME_OUT       also write the figures as JSON to this file
 */

const CONNECTIONS = 50;
const TARGETS = ['proxy', 'fastify', 'skeleton', 'gateway'] as const;
type TargetName = (typeof TARGETS)[number];
const SCRIPTS: Record<TargetName, string> = {
  proxy: 'bench-baseline.ts',
  fastify: 'bench-baseline-fastify.ts',
  skeleton: 'bench-baseline-skeleton.ts',
  gateway: 'bench-gateway.ts',
};

async function main(): Promise<void> {
  const rounds = positiveInteger('BENCH_FRAME_ROUNDS', 10);
  const requests = positiveInteger('BENCH_FRAME_REQUESTS', 5_000);
  const token = `bench-upstream-${randomBytes(16).toString('hex')}`;
  const tenantKey = newKey();
  const work = await mkdtemp(join(tmpdir(), 'fal-gateway-bench-frame-'));
  process.once('exit', () => rmSync(work, { recursive: true, force: true }));
  let sim: Simulator | undefined;
  const children = new Map<TargetName, BenchChild>();
  try {
    sim = await startSimulator({ token, queueMs: 3_600_000, runMs: 1_000, maxJobs: 1_000, maxRecordedRequests: 1_000 });
    const upstream = { BENCH_UPSTREAM_URL: sim.url, BENCH_UPSTREAM_TOKEN: token };
    for (const name of TARGETS) {
      const env = name === 'gateway' ? gatewayEnv({ url: sim.url, token }, work, tenantKey) : { ...upstream, BENCH_LOG_FILE: join(work, `${name}.log`) };
      children.set(name, await startTarget(SCRIPTS[name], env));
    }
    const pinnedCpu = pinTargets([...children.values()]);
    process.stdout.write(
      `bench:frame: ${TARGETS.join(', ')}; ${rounds} rounds of ${requests} submits each on ${CONNECTIONS} connections; ${pinnedCpu !== null ? `targets pinned to CPU ${pinnedCpu}, load to CPU 0` : 'not pinned (no taskset or one CPU)'}\n`,
    );
    // The pass-throughs answer with the upstream's own URLs; the gateway with its public ones.
    const load = (name: TargetName, amount: number) =>
      drive(
        submitLoad(
          children.get(name)!.url,
          name === 'gateway' ? { authorization: `Bearer ${tenantKey}` } : {},
          name === 'gateway' ? PUBLIC_BASE_URL : sim!.url,
          amount,
          CONNECTIONS,
        ),
      );
    let failures = 0;
    const perRequest = Object.fromEntries(TARGETS.map((name) => [name, [] as number[]])) as Record<TargetName, number[]>;
    // Uncounted warm-up: every target reaches its optimised code before the first round.
    for (const name of TARGETS) await load(name, Math.min(4_000, rounds * requests));
    for (let round = 0; round < rounds; round++) {
      // Turns alternate direction, so no target always runs right after the same other one.
      const order = round % 2 === 0 ? TARGETS : [...TARGETS].reverse();
      for (const name of order) {
        const child = children.get(name)!;
        const before = await child.usage();
        const run = await load(name, requests);
        const after = await child.usage();
        sim.requests.length = 0;
        failures += run.errors + run.timeouts + run.non2xx + run.badBodies;
        perRequest[name].push(cpuMsBetween(before, after) / Math.max(1, run.latencies.length));
      }
    }
    const summary = Object.fromEntries(
      TARGETS.map((name) => {
        const ratios = perRequest[name].map((ms, i) => ms / perRequest.proxy[i]!);
        const sorted = Float64Array.from(ratios).sort();
        return [
          name,
          {
            cpuMsPerSubmitByRound: perRequest[name],
            ratioToProxyByRound: ratios,
            medianRatioToProxy: percentile(sorted, 50),
            quartiles: [percentile(sorted, 25), percentile(sorted, 75)],
          },
        ];
      }),
    ) as Record<TargetName, { cpuMsPerSubmitByRound: number[]; ratioToProxyByRound: number[]; medianRatioToProxy: number; quartiles: number[] }>;
    const fixed = (values: number[]) => values.map((v) => v.toFixed(3)).join(' ');
    const lines = TARGETS.map((name) => {
      const s = summary[name];
      return `${name.padEnd(9)} CPU ms per submit ${fixed(s.cpuMsPerSubmitByRound)} | / proxy: median ${s.medianRatioToProxy.toFixed(2)}x (quartiles ${s.quartiles[0]!.toFixed(2)}x to ${s.quartiles[1]!.toFixed(2)}x)`;
    });
    const step = (a: TargetName, b: TargetName) => summary[b].medianRatioToProxy / summary[a].medianRatioToProxy;
    process.stdout.write(
      [
        ...lines,
        `framework (fastify / proxy) ${step('proxy', 'fastify').toFixed(2)}x; per-request frame (skeleton / fastify) ${step('fastify', 'skeleton').toFixed(2)}x; features (gateway / skeleton) ${step('skeleton', 'gateway').toFixed(2)}x`,
        failures > 0 ? `FAILED: ${failures} submits had an error, a non-2xx answer or a wrong body` : 'every answer checked: a job, with its status_url where that target serves it',
        '',
      ].join('\n'),
    );
    if (process.env.BENCH_FRAME_OUT) {
      await writeFile(process.env.BENCH_FRAME_OUT, `${JSON.stringify({ rounds, requestsPerRound: requests, pinned: pinnedCpu !== null, failures, targets: summary }, null, 2)}\n`);
    }
    if (failures > 0) process.exitCode = 1;
  } finally {
    for (const child of children.values()) await child.stop();
    await sim?.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:frame failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
