import { performance } from 'node:perf_hooks';
import autocannon from 'autocannon';

/**
 * Drives a target with autocannon over loopback: a fixed number of requests on a fixed number
 * of connections. Latencies are taken from every response at sub-millisecond resolution
 * (autocannon's own histogram rounds to whole milliseconds), and each answer's status and body
 * are checked as they arrive, so a fast wrong answer is counted, not rewarded.
 */

/** What one autocannon run saw. */
export interface LoadRun {
  /** Every response's latency (ms). */
  latencies: number[];
  seconds: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  badBodies: number;
  statusCodes: Record<string, number>;
}

/** Several runs against one target, taken together. */
export interface LoadResult {
  /** Responses received. */
  requests: number;
  seconds: number;
  requestsPerSecond: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
  /** Connection errors (autocannon's count, timeouts included). */
  errors: number;
  timeouts: number;
  non2xx: number;
  /** 2xx answers whose body was not the expected one. */
  badBodies: number;
  statusCodes: Record<string, number>;
}

export interface LoadSpec {
  url: string;
  connections: number;
  amount: number;
  method: 'GET' | 'POST';
  headers: Record<string, string>;
  body?: string;
  /** The path of each request, in turn (a cycle shared by all connections). */
  paths: readonly string[];
  /** True when a 2xx body answers the request sent to `path`. */
  accept(body: string, path: string): boolean;
  /** The run is stopped after this long whatever it has done (ms). */
  deadlineMs: number;
}

/** Nearest-rank percentile of sorted values. */
export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

/** The path in flight on a connection (autocannon hands the same context to setupRequest and onResponse). */
interface Flight {
  path?: string;
}

/** autocannon's sampling tick (ms), which is also how long a run may idle after its last answer. */
const SAMPLE_MS = 50;

export async function drive(spec: LoadSpec): Promise<LoadRun> {
  const latencies: number[] = [];
  let badBodies = 0;
  let next = 0;
  const started = performance.now();
  // autocannon ends a run on its sampling tick, not when the last answer arrives: its own
  // duration (and ours, measured to its callback) would round each run up to a whole tick. A run
  // lasts until its last answer; the tick is made short (SAMPLE_MS, not autocannon's second), so
  // the bench does not idle up to a second after each of its dozens of runs. (Its per-tick
  // samples are not used: rates come from the answers' own times.)
  let lastAnswerAt = started;
  let timer: NodeJS.Timeout | undefined;
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      {
        url: spec.url,
        connections: spec.connections,
        amount: spec.amount,
        sampleInt: SAMPLE_MS,
        timeout: 30,
        requests: [
          {
            method: spec.method,
            setupRequest: (request, context) => {
              const path = spec.paths[next++ % spec.paths.length]!;
              (context as Flight).path = path;
              return { ...request, path, headers: spec.headers, ...(spec.body !== undefined ? { body: spec.body } : {}) };
            },
            onResponse: (status, body, context) => {
              const path = (context as Flight).path ?? '';
              if (status >= 200 && status < 300 && !spec.accept(body, path)) badBodies++;
            },
          },
        ],
      },
      (err: unknown, res: autocannon.Result) => (err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve(res)),
    );
    instance.on('response', (_client, _status, _bytes, responseTime) => {
      latencies.push(responseTime);
      lastAnswerAt = performance.now();
    });
    timer = setTimeout(() => instance.stop(), spec.deadlineMs);
  }).finally(() => clearTimeout(timer));
  const statusCodes = Object.fromEntries(Object.entries(result.statusCodeStats ?? {}).map(([code, stat]) => [code, stat.count ?? 0]));
  return {
    latencies,
    seconds: (lastAnswerAt - started) / 1000,
    errors: result.errors,
    timeouts: result.timeouts,
    non2xx: result.non2xx,
    badBodies,
    statusCodes,
  };
}

export function summarize(runs: readonly LoadRun[]): LoadResult {
  const sum = (pick: (run: LoadRun) => number) => runs.reduce((total, run) => total + pick(run), 0);
  const statusCodes: Record<string, number> = {};
  for (const run of runs) {
    for (const [code, count] of Object.entries(run.statusCodes)) statusCodes[code] = (statusCodes[code] ?? 0) + count;
  }
  const requests = Object.values(statusCodes).reduce((total, n) => total + n, 0);
  const seconds = sum((run) => run.seconds);
  const sorted = Float64Array.from(runs.flatMap((run) => run.latencies)).sort();
  return {
    requests,
    seconds,
    requestsPerSecond: requests / seconds,
    latencyP50Ms: percentile(sorted, 50),
    latencyP99Ms: percentile(sorted, 99),
    errors: sum((run) => run.errors),
    timeouts: sum((run) => run.timeouts),
    non2xx: sum((run) => run.non2xx),
    badBodies: sum((run) => run.badBodies),
    statusCodes,
  };
}
