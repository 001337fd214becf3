import { z } from 'zod';
import { HotSpot } from './bench-profile.js';

/**
 * The shape of bench/results/latest.json, the targets the gateway is held to, and the two
 * renderings of a run: a compact table for the terminal and a Markdown one for the README.
 */

const Phase = z.object({
  requests: z.number(),
  seconds: z.number(),
  requestsPerSecond: z.number(),
  latencyP50Ms: z.number(),
  latencyP99Ms: z.number(),
  /** CPU (user + system) of the target's process over the measured phase. */
  cpuMs: z.number(),
  cpuMsPerRequest: z.number(),
  errors: z.number(),
  timeouts: z.number(),
  non2xx: z.number(),
  badBodies: z.number(),
  statusCodes: z.record(z.string(), z.number()),
  /** The target's resident set at the end of the phase. */
  rssMiB: z.number(),
});
export type Phase = z.infer<typeof Phase>;

const Comparison = z.object({
  baseline: Phase,
  gateway: Phase,
  /** gateway / baseline. */
  ratio: z.object({ cpuPerRequest: z.number(), requestsPerSecond: z.number(), latencyP99: z.number() }),
  /** The CPU ratio of each round (gateway round / the baseline round next to it): the run's own noise. */
  cpuRatioByRound: z.array(z.number()),
});
export type Comparison = z.infer<typeof Comparison>;

const Target = z.object({
  name: z.string(),
  value: z.number(),
  limit: z.number(),
  unit: z.string(),
  pass: z.boolean(),
});
export type Target = z.infer<typeof Target>;

const Profile = z.object({
  file: z.string(),
  requests: z.number(),
  /** Most self time, anything. */
  top: z.array(HotSpot),
  /** Most self time among JavaScript functions. */
  topJavaScript: z.array(HotSpot),
});

/** The bare undici proxy (the targets are set against it), the same on Fastify, or Fastify with the gateway's per-request frame. */
export const BaselineKind = z.enum(['proxy', 'fastify', 'skeleton']);
export type BaselineKind = z.infer<typeof BaselineKind>;

const BodyCheck = z.object({ checked: z.number(), ok: z.number() });

export const BenchResults = z.object({
  date: z.string(),
  node: z.string(),
  cpu: z.object({ model: z.string(), cores: z.number() }),
  platform: z.string(),
  scale: z.number(),
  settings: z.object({
    submit: z.object({ requests: z.number(), rounds: z.number(), warmup: z.number(), connections: z.number() }),
    status: z.object({ requests: z.number(), rounds: z.number(), warmup: z.number(), connections: z.number(), jobs: z.number() }),
    simulator: z.object({ queueMs: z.number(), maxJobs: z.number() }),
    /** What the gateway was compared with (BENCH_BASELINE): the bare proxy unless asked otherwise. */
    baseline: BaselineKind.default('proxy'),
  }),
  submit: Comparison,
  status: Comparison,
  /** Upstream status calls the gateway made during its measured status phase. */
  upstream: z.object({
    statusReads: z.number(),
    statusCalls: z.number(),
    jobs: z.number(),
    seconds: z.number(),
    callsPer1000Reads: z.number(),
    callsPerJobPerSecond: z.number(),
  }),
  memory: z.object({
    jobs: z.number(),
    heapBytesPerJob: z.number(),
    rssBytesPer100kJobs: z.number(),
    measured: z.array(z.string()),
  }),
  /** Informational: the whole gateway's heap growth over its measured submit phase, after full collections. */
  gatewayHeap: z.object({ submittedJobs: z.number(), heapBytesPerSubmittedJob: z.number() }),
  checks: z.object({ gatewayStatusBodies: BodyCheck, baselineStatusBodies: BodyCheck }),
  targets: z.array(Target),
  /** Present when run with BENCH_PROFILE=1: the gateway profiled during extra, unmeasured runs of each path. */
  profiles: z.object({ submit: Profile, status: Profile }).optional(),
});
export type BenchResults = z.infer<typeof BenchResults>;

export const LIMITS = {
  submitCpuRatio: 1.3,
  statusCpuRatio: 1.0,
  upstreamCallsPerJobPerSecond: 4,
  heapBytesPerJob: 300,
} as const;

/** The targets this run can be held to: the CPU ratios are set against the bare proxy, so another baseline leaves them out. */
export function evaluateTargets(r: Omit<BenchResults, 'targets'>): Target[] {
  const target = (name: string, value: number, limit: number, unit: string): Target => ({ name, value, limit, unit, pass: value <= limit });
  const cpu =
    r.settings.baseline === 'proxy'
      ? [
          target('gateway CPU per submit vs baseline', r.submit.ratio.cpuPerRequest, LIMITS.submitCpuRatio, 'x'),
          target('gateway CPU per status read vs baseline', r.status.ratio.cpuPerRequest, LIMITS.statusCpuRatio, 'x'),
        ]
      : [];
  return [
    ...cpu,
    target('upstream status calls per job per second', r.upstream.callsPerJobPerSecond, LIMITS.upstreamCallsPerJobPerSecond, '/job/s'),
    target('heap per tracked job', r.memory.heapBytesPerJob, LIMITS.heapBytesPerJob, 'B'),
  ];
}

const fixed = (value: number, digits: number) => (Number.isFinite(value) ? value.toFixed(digits) : String(value));
const grouped = (value: number) => Math.round(value).toLocaleString('en-US');

function phaseRows(path: string, c: Comparison): string[][] {
  const row = (who: string, p: Phase) => [
    path,
    who,
    grouped(p.requestsPerSecond),
    fixed(p.latencyP50Ms, 2),
    fixed(p.latencyP99Ms, 2),
    fixed(p.cpuMsPerRequest, 3),
    String(p.errors + p.timeouts),
    String(p.non2xx + p.badBodies),
  ];
  return [
    row('baseline', c.baseline),
    row('gateway', c.gateway),
    [path, 'gateway/baseline', `${fixed(c.ratio.requestsPerSecond, 2)}x`, '', `${fixed(c.ratio.latencyP99, 2)}x`, `${fixed(c.ratio.cpuPerRequest, 2)}x`, '', ''],
  ];
}

/** "1.52x to 1.80x": the lowest and highest round ratio. */
function roundSpread(c: Comparison): string {
  if (c.cpuRatioByRound.length === 0) return 'no rounds';
  return `${fixed(Math.min(...c.cpuRatioByRound), 2)}x to ${fixed(Math.max(...c.cpuRatioByRound), 2)}x`;
}

const HEADER = ['path', 'target', 'req/s', 'p50 ms', 'p99 ms', 'CPU ms/req', 'errors', 'non-2xx/bad'];

/** 2.69x, 165 B, 2.81 /job/s. */
function withUnit(value: number, unit: string, digits = unit === 'B' ? 0 : 2): string {
  return unit === 'x' ? `${fixed(value, digits)}x` : `${fixed(value, digits)} ${unit}`;
}

function targetLine(t: Target): string {
  return `${t.pass ? 'PASS' : 'FAIL'}  ${t.name}: ${withUnit(t.value, t.unit)} (limit ${withUnit(t.limit, t.unit, t.unit === 'B' ? 0 : 1)})`;
}

function renderProfile(path: string, profile: z.infer<typeof Profile>): string {
  const line = (h: HotSpot) => `  ${fixed(h.percent, 1).padStart(5)}%  ${h.functionName}  ${h.location}`;
  return [
    '',
    `gateway ${path} path, self time of ${grouped(profile.requests)} requests (${profile.file}):`,
    ...profile.top.map(line),
    '  JavaScript only:',
    ...profile.topJavaScript.map(line),
  ].join('\n');
}

/** Plain-text table for the terminal. */
export function renderText(r: BenchResults): string {
  const rows = [HEADER, ...phaseRows('submit', r.submit), ...phaseRows('status', r.status)];
  const widths = HEADER.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
  const lines = rows.map((row) => row.map((cell, i) => (i < 2 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  '));
  lines.splice(1, 0, widths.map((w) => '-'.repeat(w)).join('  '));
  return [
    ...lines,
    '',
    `CPU ratio by round: submit ${roundSpread(r.submit)}, status ${roundSpread(r.status)} (${r.settings.submit.rounds} rounds each)`,
    `upstream status calls: ${fixed(r.upstream.callsPer1000Reads, 1)} per 1,000 reads, ${fixed(r.upstream.callsPerJobPerSecond, 2)} per job per second (${r.upstream.jobs} jobs, ${fixed(r.upstream.seconds, 1)} s)`,
    `memory: ${fixed(r.memory.heapBytesPerJob, 0)} B heap per tracked job, ${fixed(r.memory.rssBytesPer100kJobs / 2 ** 20, 1)} MiB RSS per 100,000 jobs; whole gateway ${fixed(r.gatewayHeap.heapBytesPerSubmittedJob, 0)} B heap per submitted job`,
    ...(r.profiles ? [renderProfile('submit', r.profiles.submit), renderProfile('status', r.profiles.status)] : []),
    '',
    ...r.targets.map(targetLine),
  ].join('\n');
}

/** Markdown for the README: results, targets and the machine they were measured on. */
export function renderMarkdown(r: BenchResults): string {
  const table = (header: string[], rows: string[][]) => [
    `| ${header.join(' | ')} |`,
    `| ${header.map((_, i) => (i < 2 ? '---' : '---:')).join(' | ')} |`,
    ...rows.map((row) => `| ${row.join(' | ')} |`),
  ];
  return [
    `Measured ${r.date.slice(0, 10)} on ${r.cpu.model} (${r.cpu.cores} cores), Node ${r.node}, ${r.platform}; BENCH_SCALE=${r.scale}${r.settings.baseline === 'proxy' ? '' : `; BENCH_BASELINE=${r.settings.baseline} (the targets are set against the bare proxy)`}.`,
    `Submit: ${grouped(r.settings.submit.requests)} requests on ${r.settings.submit.connections} connections; status: ${grouped(r.settings.status.requests)} reads of ${r.settings.status.jobs} jobs on ${r.settings.status.connections} connections; each after a warm-up, in ${r.settings.submit.rounds} rounds with the targets taking turns. CPU is the target process's own (user + system).`,
    '',
    ...table(HEADER, [...phaseRows('submit', r.submit), ...phaseRows('status', r.status)]),
    '',
    ...table(
      ['target', 'limit', 'measured', 'result'],
      r.targets.map((t) => [t.name, `<= ${withUnit(t.limit, t.unit, t.unit === 'B' ? 0 : 1)}`, withUnit(t.value, t.unit), t.pass ? 'pass' : '**fail**']),
    ),
    '',
    `Gateway/baseline CPU per request, round by round (each gateway round against the baseline round next to it): submit ${r.submit.cpuRatioByRound.map((x) => `${fixed(x, 2)}x`).join(', ')}; status ${r.status.cpuRatioByRound.map((x) => `${fixed(x, 2)}x`).join(', ')}.`,
    '',
    `Upstream status calls while 100 clients polled ${r.upstream.jobs} jobs through the gateway for ${fixed(r.upstream.seconds, 1)} s: ${fixed(r.upstream.callsPer1000Reads, 1)} per 1,000 reads. ` +
      `Memory per tracked job: ${r.memory.measured.join('; ')}; ${fixed(r.memory.rssBytesPer100kJobs / 2 ** 20, 1)} MiB RSS per 100,000 jobs.`,
    '',
  ].join('\n');
}
