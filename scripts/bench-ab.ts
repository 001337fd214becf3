import { randomBytes } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { newKey } from '../src/cli/key.js';
import { startSimulator, type Simulator } from '../src/simulator/index.js';
import { cpuMsBetween, pinTargets, positiveInteger, startTarget, type BenchChild } from './bench-ipc.js';
import { drive, percentile } from './bench-load.js';
import { gatewayEnv, PUBLIC_BASE_URL, submitLoad } from './bench-submit.js';

/**
 * `npm run bench:ab -- <dist-a> <dist-b>`: two builds of the gateway on the submit path, taking
 * turns, to tell whether a change made a submit cheaper and by how much. `npm run bench` compares
 * the gateway with a bare proxy and its ratios move by ±15 % between runs; a change worth a few
 * percent needs this: the same load, many short rounds, the median of the per-round ratios, and
 * (when `taskset` and a second CPU are there) each build pinned to the last CPU and the load
 * generator to the first, so neither shares a core with the other.
 *
 * Each argument is a built gateway's `dist/` directory inside a checkout with its dependencies
 * installed, e.g. `git worktree add ../before HEAD~1 && (cd ../before && npm ci && npm run build)`,
 * then `npm run build && npm run bench:ab -- ../before/dist dist`.
 *
 * BENCH_AB_ROUNDS    rounds (default 16); BENCH_AB_REQUESTS submits per build per round (default 4,000)
 * BENCH_AB_OUT       also write the figures as JSON to this file
 */

const CONNECTIONS = 50;

function distDirectory(arg: string | undefined, which: string): string {
  if (!arg) throw new Error('usage: npm run bench:ab -- <dist-a> <dist-b> (two built gateways: their dist/ directories)');
  const dir = resolve(arg);
  if (!existsSync(join(dir, 'app.js'))) throw new Error(`${which}: ${dir} holds no built gateway (no app.js; run npm run build there)`);
  return dir;
}

async function main(): Promise<void> {
  const dirs = { a: distDirectory(process.argv[2], 'A'), b: distDirectory(process.argv[3], 'B') };
  const rounds = positiveInteger('BENCH_AB_ROUNDS', 16);
  const requests = positiveInteger('BENCH_AB_REQUESTS', 4_000);
  const token = `bench-upstream-${randomBytes(16).toString('hex')}`;
  const tenantKey = newKey();
  const work = await mkdtemp(join(tmpdir(), 'fal-gateway-bench-ab-'));
  process.once('exit', () => rmSync(work, { recursive: true, force: true }));
  let sim: Simulator | undefined;
  const children: BenchChild[] = [];
  try {
    sim = await startSimulator({ token, queueMs: 3_600_000, runMs: 1_000, maxJobs: 1_000, maxRecordedRequests: 10_000_000 });
    const upstream = { url: sim.url, token };
    for (const name of ['a', 'b'] as const) {
      children.push(await startTarget('bench-gateway.ts', { ...gatewayEnv(upstream, work, tenantKey, name), BENCH_DIST: dirs[name] }));
    }
    const [a, b] = children as [BenchChild, BenchChild];
    const pinnedCpu = pinTargets([a, b]);
    const pinned = pinnedCpu !== null;
    process.stdout.write(
      `bench:ab: A ${dirs.a}\n          B ${dirs.b}\n${rounds} rounds of ${requests} submits each on ${CONNECTIONS} connections; ${pinned ? `builds pinned to CPU ${pinnedCpu}, load to CPU 0` : 'not pinned (no taskset or one CPU)'}\n`,
    );
    const headers = { authorization: `Bearer ${tenantKey}` };
    const load = (child: BenchChild, amount: number) => drive(submitLoad(child.url, headers, PUBLIC_BASE_URL, amount, CONNECTIONS));
    const simulator = sim;
    let failures = 0;
    const perRequest = { a: [] as number[], b: [] as number[] };
    // Uncounted warm-up: both builds reach their optimised code before the first round.
    for (const child of [a, b]) await load(child, Math.min(3_000, rounds * requests));
    for (let round = 0; round < rounds; round++) {
      const order = round % 2 === 0 ? (['a', 'b'] as const) : (['b', 'a'] as const);
      for (const name of order) {
        const child = name === 'a' ? a : b;
        const before = await child.usage();
        const run = await load(child, requests);
        const after = await child.usage();
        simulator.requests.length = 0;
        failures += run.errors + run.timeouts + run.non2xx + run.badBodies;
        perRequest[name].push(cpuMsBetween(before, after) / Math.max(1, run.latencies.length));
      }
    }
    const ratios = perRequest.b.map((ms, i) => ms / perRequest.a[i]!);
    const sorted = Float64Array.from(ratios).sort();
    const mean = (values: number[]) => values.reduce((sum, v) => sum + v, 0) / values.length;
    const result = {
      a: dirs.a,
      b: dirs.b,
      pinned,
      rounds,
      requestsPerRound: requests,
      failures,
      cpuMsPerSubmit: { a: mean(perRequest.a), b: mean(perRequest.b) },
      ratioByRound: ratios,
      medianRatio: percentile(sorted, 50),
      quartiles: [percentile(sorted, 25), percentile(sorted, 75)],
    };
    const fixed = (values: number[]) => values.map((v) => v.toFixed(3)).join(' ');
    process.stdout.write(
      [
        `CPU ms per submit, round by round: A ${fixed(perRequest.a)}`,
        `                                   B ${fixed(perRequest.b)}`,
        `B/A by round: ${fixed(ratios)}`,
        `B/A: median ${result.medianRatio.toFixed(3)} (quartiles ${result.quartiles[0]!.toFixed(3)} to ${result.quartiles[1]!.toFixed(3)}); means ${result.cpuMsPerSubmit.a.toFixed(3)} and ${result.cpuMsPerSubmit.b.toFixed(3)} ms`,
        failures > 0 ? `FAILED: ${failures} submits had an error, a non-2xx answer or a wrong body` : 'every answer checked: a job, with its status_url on the gateway',
        '',
      ].join('\n'),
    );
    if (process.env.BENCH_AB_OUT) await writeFile(process.env.BENCH_AB_OUT, `${JSON.stringify(result, null, 2)}\n`);
    if (failures > 0) process.exitCode = 1;
  } finally {
    for (const child of children) await child.stop();
    await sim?.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:ab failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
