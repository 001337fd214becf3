/**
 * Prometheus metrics for the gateway.
 *
 * `GatewayMetrics` owns a private prom-client `Registry` (never the global
 * one), so several gateway instances in one process keep separate counters.
 * Every metric is prefixed `fal_gateway_`. Label values are kept to bounded
 * sets: routes are route patterns (or `unmatched`), tenants are tenant ids (or
 * `anonymous`), statuses are numeric codes; request ids and raw URLs never
 * become labels.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { CounterFamily, HistogramFamily, type CounterSeries, type HistogramSeries } from './metric-series.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** The gateway's metrics, decorated on the root instance and inherited by every plugin. */
    metrics: GatewayMetrics;
  }
}

export const METRICS_PREFIX = 'fal_gateway_';

/** How a job ended, as observed by the gateway. */
export type JobOutcome = 'completed' | 'failed' | 'cancelled';

/** The upstream queue operations the gateway performs. */
export type UpstreamOperation = 'submit' | 'status' | 'result' | 'cancel' | 'stream';

/** Job states the gateway can observe upstream. */
export type ObservedJobState = 'IN_QUEUE' | 'IN_PROGRESS' | 'COMPLETED';

/** Stores whose failures are counted. */
export type MetricsStore = 'jobs' | 'rate_limit' | 'accounting' | 'cache';

/** Circuit breaker states. */
export type CircuitStateName = 'closed' | 'open' | 'half_open';

/** Label used for requests without an authenticated tenant. */
export const ANONYMOUS_TENANT = 'anonymous';

/** Label used for requests that matched no route. */
export const UNMATCHED_ROUTE = 'unmatched';

const CIRCUIT_STATE_VALUE: Record<CircuitStateName, number> = { closed: 0, half_open: 1, open: 2 };

/** Latency buckets (seconds) for gateway requests and upstream calls. */
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** Buckets (seconds) for image-job queue and run times: half a second to ten minutes. */
const JOB_BUCKETS = [0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600];

export interface GatewayMetricsOptions {
  /** Collect the default Node.js process metrics (default true). */
  defaultMetrics?: boolean;
  /** Version reported by `fal_gateway_build_info` (default `unknown`). */
  version?: string;
}

/** Each tenant with a concurrency cap and its slots in use. */
export type ConcurrencyReader = () => Promise<ReadonlyArray<readonly [tenant: string, inUse: number]>>;

export class GatewayMetrics {
  readonly registry: Registry;
  readonly contentType: string;

  // Recorded on every request: series bound once per label set (src/metric-series.ts).
  private readonly httpRequests: CounterFamily<'route' | 'method' | 'status' | 'tenant'>;
  private readonly httpDuration: HistogramFamily<'route' | 'method' | 'tenant'>;
  private readonly upstreamCalls: CounterFamily<'operation' | 'outcome'>;
  private readonly upstreamDuration: HistogramFamily<'operation'>;
  private readonly jobsSubmitted: CounterFamily<'tenant'>;
  private readonly jobsObserved: CounterFamily<'tenant' | 'state'>;
  private readonly cacheLookups: CounterFamily<'kind' | 'outcome'>;
  // Recorded on rarer events: prom-client's own metrics.
  private readonly rejections: Counter<'tenant' | 'policy'>;
  private readonly jobsFinished: Counter<'tenant' | 'outcome'>;
  private readonly jobQueued: Histogram<'tenant'>;
  private readonly jobRunning: Histogram<'tenant'>;
  private readonly storeErrors: Counter<'store' | 'operation'>;
  private readonly circuit: Gauge;
  private readonly tenantsReloads: Counter<'outcome'>;
  private readonly tenantsInForce: Gauge;
  private readonly concurrent: Gauge<'tenant'>;
  /** Where the in-flight gauge is read from at each scrape (the shared store). */
  private concurrencyReader?: ConcurrencyReader;

  // Each label set's series, found by a string key (cheaper than building the labels object).
  private readonly httpSeries = new Map<string, { requests: CounterSeries<string>; duration: HistogramSeries<string> }>();
  private readonly upstreamSeries = new Map<string, { calls: CounterSeries<string>; duration: HistogramSeries<string> }>();
  private readonly counterSeries = new Map<string, CounterSeries<string>>();

  constructor(options: GatewayMetricsOptions = {}) {
    const registry = new Registry();
    this.registry = registry;
    this.contentType = registry.contentType;
    if (options.defaultMetrics ?? true) {
      collectDefaultMetrics({ register: registry, prefix: METRICS_PREFIX });
    }
    const registers = [registry];
    const name = (suffix: string): string => `${METRICS_PREFIX}${suffix}`;

    this.httpRequests = new CounterFamily({
      name: name('http_requests_total'),
      help: 'HTTP requests answered by the gateway.',
      labelNames: ['route', 'method', 'status', 'tenant'] as const,
      registers,
    });
    this.httpDuration = new HistogramFamily({
      name: name('http_request_duration_seconds'),
      help: 'Time to answer an HTTP request, in seconds.',
      labelNames: ['route', 'method', 'tenant'] as const,
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.upstreamCalls = new CounterFamily({
      name: name('upstream_calls_total'),
      help: 'Calls to the upstream queue API, by operation and outcome (status class or error kind).',
      labelNames: ['operation', 'outcome'] as const,
      registers,
    });
    this.upstreamDuration = new HistogramFamily({
      name: name('upstream_call_duration_seconds'),
      help: 'Duration of one upstream call attempt, in seconds.',
      labelNames: ['operation'] as const,
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.rejections = new Counter({
      name: name('rejections_total'),
      help: 'Requests rejected by a tenant policy (rate limit, quota, concurrency).',
      labelNames: ['tenant', 'policy'] as const,
      registers,
    });
    this.jobsSubmitted = new CounterFamily({
      name: name('jobs_submitted_total'),
      help: 'Jobs accepted upstream.',
      labelNames: ['tenant'] as const,
      registers,
    });
    this.jobsObserved = new CounterFamily({
      name: name('jobs_observed_total'),
      help: 'Job states observed for the first time for a job.',
      labelNames: ['tenant', 'state'] as const,
      registers,
    });
    this.jobsFinished = new Counter({
      name: name('jobs_finished_total'),
      help: 'Jobs that reached a final outcome.',
      labelNames: ['tenant', 'outcome'] as const,
      registers,
    });
    this.jobQueued = new Histogram({
      name: name('job_queued_seconds'),
      help: 'Time a finished job spent queued, in seconds.',
      labelNames: ['tenant'] as const,
      buckets: JOB_BUCKETS,
      registers,
    });
    this.jobRunning = new Histogram({
      name: name('job_running_seconds'),
      help: 'Time a finished job spent running, in seconds.',
      labelNames: ['tenant'] as const,
      buckets: JOB_BUCKETS,
      registers,
    });
    this.storeErrors = new Counter({
      name: name('store_errors_total'),
      help: 'Failed operations against a backing store.',
      labelNames: ['store', 'operation'] as const,
      registers,
    });
    this.circuit = new Gauge({
      name: name('circuit_state'),
      help: 'Upstream circuit breaker state: 0 closed, 1 half_open, 2 open.',
      registers,
    });
    this.tenantsReloads = new Counter({
      name: name('tenants_reloads_total'),
      help: 'Reloads of the tenants file: applied, or rejected (the previous tenants stay in force).',
      labelNames: ['outcome'] as const,
      registers,
    });
    // Both series from the start, at 0: the first rejected reload is then an increase an alert sees.
    for (const outcome of ['applied', 'rejected'] as const) this.tenantsReloads.inc({ outcome }, 0);
    this.tenantsInForce = new Gauge({
      name: name('tenants'),
      help: 'Tenants in force (from the tenants file as last applied).',
      registers,
    });
    this.cacheLookups = new CounterFamily({
      name: name('cache_lookups_total'),
      help: 'Cache lookups by kind and outcome (hit, miss, shared in-flight).',
      labelNames: ['kind', 'outcome'] as const,
      registers,
    });
    // Read at scrape time from the store that holds the slots (Redis when shared), so every
    // replica reports the same count: a replica only sees the job ends it handles itself.
    const refresh = async (gauge: Gauge<'tenant'>) => {
      const read = this.concurrencyReader;
      if (!read) return;
      let counts: ReadonlyArray<readonly [tenant: string, inUse: number]>;
      try {
        counts = await read();
      } catch {
        // The store cannot answer: no count is reported rather than the last one, which may be
        // long wrong by the time the store is back (a gap on the chart, not a flat line), and the
        // failure is counted.
        gauge.reset();
        this.storeError('accounting', 'slots_in_use');
        return;
      }
      gauge.reset();
      for (const [tenant, inUse] of counts) gauge.set({ tenant }, inUse);
    };
    this.concurrent = new Gauge({
      name: name('concurrent_jobs'),
      help: 'Jobs in flight per tenant with maxConcurrentJobs, read from the shared store at each scrape.',
      labelNames: ['tenant'] as const,
      registers,
      collect() {
        return refresh(this);
      },
    });
    const buildInfo = new Gauge({
      name: name('build_info'),
      help: 'Gateway build information; always 1.',
      labelNames: ['version'] as const,
      registers,
    });
    buildInfo.set({ version: options.version ?? 'unknown' }, 1);
    this.circuit.set(CIRCUIT_STATE_VALUE.closed);
  }

  /** Records one answered HTTP request. `route` must be a route pattern or `unmatched`. */
  httpRequest(route: string, method: string, statusCode: number, tenant: string | undefined, seconds: number): void {
    // Once per request: the labelled series are made once per label set (see httpSeries).
    const key = `${route}\u0000${method}\u0000${statusCode}\u0000${tenant ?? ''}`;
    let series = this.httpSeries.get(key);
    if (!series) {
      const tenantLabel = tenant ?? ANONYMOUS_TENANT;
      series = {
        requests: this.httpRequests.with({ route, method, status: String(statusCode), tenant: tenantLabel }),
        duration: this.httpDuration.with({ route, method, tenant: tenantLabel }),
      };
      this.httpSeries.set(key, series);
    }
    series.requests.inc();
    series.duration.observe(seconds);
  }

  /** Records one upstream call attempt. */
  upstreamCall(operation: UpstreamOperation, outcome: string, seconds: number): void {
    const key = `${operation}\u0000${outcome}`;
    let series = this.upstreamSeries.get(key);
    if (!series) {
      series = { calls: this.upstreamCalls.with({ operation, outcome }), duration: this.upstreamDuration.with({ operation }) };
      this.upstreamSeries.set(key, series);
    }
    series.calls.inc();
    series.duration.observe(seconds);
  }

  /** `counter`'s series for these label values (`key` names the counter and the values), made once. */
  private counterSeriesOf<L extends string>(key: string, counter: CounterFamily<L>, labels: Record<L, string>): CounterSeries<string> {
    let series = this.counterSeries.get(key);
    if (!series) {
      series = counter.with(labels);
      this.counterSeries.set(key, series);
    }
    return series;
  }

  /** Records a policy rejection; policy is 'submit' | 'read' | 'quota_day' | 'quota_month' | 'concurrency' | 'streams'. */
  rejected(tenant: string, policy: string): void {
    this.rejections.inc({ tenant, policy });
  }

  jobSubmitted(tenant: string): void {
    this.counterSeriesOf(`submitted\u0000${tenant}`, this.jobsSubmitted, { tenant }).inc();
  }

  /** Records a state the gateway observed for the first time for a job. */
  jobState(tenant: string, state: ObservedJobState): void {
    this.counterSeriesOf(`observed\u0000${tenant}\u0000${state}`, this.jobsObserved, { tenant, state }).inc();
  }

  /** Records a job's final outcome and, when known, how long it was queued and running. */
  jobFinished(
    tenant: string,
    outcome: JobOutcome,
    queuedSeconds: number | undefined,
    runningSeconds: number | undefined,
  ): void {
    this.jobsFinished.inc({ tenant, outcome });
    if (queuedSeconds !== undefined && Number.isFinite(queuedSeconds) && queuedSeconds >= 0) {
      this.jobQueued.observe({ tenant }, queuedSeconds);
    }
    if (runningSeconds !== undefined && Number.isFinite(runningSeconds) && runningSeconds >= 0) {
      this.jobRunning.observe({ tenant }, runningSeconds);
    }
  }

  storeError(store: MetricsStore, operation: string): void {
    this.storeErrors.inc({ store, operation });
  }

  /** A tenants file reload: applied, or rejected. */
  tenantsReload(outcome: 'applied' | 'rejected'): void {
    this.tenantsReloads.inc({ outcome });
  }

  /** How many tenants are in force (at start, and after each reload). */
  tenants(count: number): void {
    this.tenantsInForce.set(count);
  }

  circuitState(state: CircuitStateName): void {
    this.circuit.set(CIRCUIT_STATE_VALUE[state]);
  }

  cache(kind: 'status' | 'result', outcome: 'hit' | 'miss' | 'shared'): void {
    this.counterSeriesOf(`cache\u0000${kind}\u0000${outcome}`, this.cacheLookups, { kind, outcome }).inc();
  }

  /** Sets where the jobs-in-flight gauge reads each capped tenant's count from, at each scrape. */
  readConcurrencyFrom(reader: ConcurrencyReader): void {
    this.concurrencyReader = reader;
  }

  /** The Prometheus text exposition of every metric in this registry. */
  metricsText(): Promise<string> {
    return this.registry.metrics();
  }
}
