import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { MemoryJobStore } from '../src/jobs/memory-job-store.js';
import { GatewayMetrics, type CircuitStateName } from '../src/metrics.js';
import { manualClock } from '../src/simulator/index.js';
import { json, SEED_REQUEST, startStack, type Stack } from './helpers.js';

/**
 * The sample Grafana dashboard in deploy/grafana: a valid dashboard model whose every query runs
 * on the datasource variable, and whose every metric, label matcher, grouping label and legend
 * label is one a real gateway exposes on GET /metrics after ordinary traffic. A panel querying a
 * metric or label the gateway does not export fails here instead of showing "No data".
 */

const DASHBOARD_PATH = new URL('../deploy/grafana/fal-gateway-dashboard.json', import.meta.url);

/** Labels Prometheus attaches to every series at scrape time; they are never in the exposition. */
const TARGET_LABELS = new Set(['instance', 'job']);

/** Grafana's own variables that may appear in an expression. */
const BUILTIN_VARIABLES = new Set(['__rate_interval', '__interval', '__range']);

/** PromQL functions and aggregations the dashboard may call. */
const FUNCTIONS = new Set([
  'sum', 'max', 'min', 'avg', 'count', 'topk', 'bottomk', 'rate', 'irate', 'increase',
  'histogram_quantile', 'label_replace', 'clamp_min', 'clamp_max', 'abs', 'vector', 'scalar',
]);
const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'and', 'or', 'unless', 'offset']);
const HISTOGRAM_SUFFIXES = ['_bucket', '_sum', '_count'];

/** Gateway metric families deliberately left off the dashboard, and why. */
const NOT_CHARTED: Record<string, string> = {
  fal_gateway_jobs_observed_total: 'its IN_QUEUE and COMPLETED counts repeat jobs submitted and finished',
};

// ---------------------------------------------------------------------------------------------
// Dashboard model

const DatasourceRef = z.object({ type: z.literal('prometheus'), uid: z.literal('${datasource}') });

const GridPos = z.object({
  h: z.int().min(1),
  w: z.int().min(1).max(24),
  x: z.int().min(0).max(23),
  y: z.int().min(0),
});

const Target = z.object({
  refId: z.string().min(1),
  expr: z.string().min(1),
  legendFormat: z.string().optional(),
  datasource: DatasourceRef,
});

const ValueMapping = z.object({
  type: z.literal('value'),
  options: z.record(z.string(), z.object({ text: z.string(), color: z.string().optional() })),
});

const RowPanel = z.object({
  id: z.int().positive(),
  type: z.literal('row'),
  title: z.string().min(1),
  gridPos: GridPos,
  collapsed: z.literal(false),
  panels: z.array(z.unknown()).length(0),
});

const QueryPanel = z.object({
  id: z.int().positive(),
  type: z.enum(['timeseries', 'stat', 'gauge', 'bargauge', 'table']),
  title: z.string().min(1),
  description: z.string().min(1),
  gridPos: GridPos,
  datasource: DatasourceRef,
  targets: z.array(Target).min(1),
  fieldConfig: z.object({
    defaults: z.object({ unit: z.string().min(1), mappings: z.array(ValueMapping).optional() }),
    overrides: z.array(z.unknown()),
  }),
  options: z.record(z.string(), z.unknown()),
});

const Panel = z.union([RowPanel, QueryPanel]);

const DatasourceVariable = z.object({
  name: z.literal('datasource'),
  type: z.literal('datasource'),
  query: z.literal('prometheus'),
});

const QueryVariable = z.object({
  name: z.string().min(1),
  type: z.literal('query'),
  datasource: DatasourceRef,
  definition: z.string().min(1),
  query: z.object({ query: z.string().min(1) }),
  multi: z.boolean(),
  includeAll: z.boolean(),
  allValue: z.string().optional(),
  refresh: z.int(),
});

const Dashboard = z.object({
  uid: z.string().min(1),
  title: z.string().min(1),
  schemaVersion: z.int().min(36),
  time: z.object({ from: z.string(), to: z.string() }),
  templating: z.object({ list: z.array(z.union([DatasourceVariable, QueryVariable])) }),
  panels: z.array(Panel).min(1),
});

type QueryPanel = z.infer<typeof QueryPanel>;
type Dashboard = z.infer<typeof Dashboard>;

const isQueryPanel = (panel: z.infer<typeof Panel>): panel is QueryPanel => panel.type !== 'row';

function loadDashboard(): Dashboard {
  return Dashboard.parse(JSON.parse(readFileSync(DASHBOARD_PATH, 'utf8')));
}

// ---------------------------------------------------------------------------------------------
// What GET /metrics exposes

/** Per series name (as queried: histograms by their _bucket/_sum/_count series), its labels; per family, its type. */
interface Exposition {
  labels: Map<string, Set<string>>;
  types: Map<string, string>;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+\S+(?:\s+\d+)?$/;
const SAMPLE_LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"\s*,?\s*/gy;

function parseExposition(text: string): Exposition {
  const labels = new Map<string, Set<string>>();
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) types.set(type[1]!, type[2]!);
    if (line.trim() === '' || line.startsWith('#')) continue;
    const sample = SAMPLE.exec(line);
    if (!sample) throw new Error(`not a sample line: ${line}`);
    const names = labels.get(sample[1]!) ?? new Set<string>();
    const body = sample[2] ?? '';
    SAMPLE_LABEL.lastIndex = 0;
    for (let m = SAMPLE_LABEL.exec(body); m; m = SAMPLE_LABEL.exec(body)) names.add(m[1]!);
    labels.set(sample[1]!, names);
  }
  return { labels, types };
}

/** The family type of a queried series name: its own TYPE, or `histogram` for a histogram's component series. */
function familyType(expo: Exposition, name: string): string | undefined {
  const own = expo.types.get(name);
  if (own) return own;
  const suffix = HISTOGRAM_SUFFIXES.find((s) => name.endsWith(s));
  return suffix && expo.types.get(name.slice(0, -suffix.length)) === 'histogram' ? 'histogram' : undefined;
}

/** The family a queried series name belongs to. */
function familyOf(expo: Exposition, name: string): string {
  if (expo.types.has(name)) return name;
  const suffix = HISTOGRAM_SUFFIXES.find((s) => name.endsWith(s));
  return suffix ? name.slice(0, -suffix.length) : name;
}

// ---------------------------------------------------------------------------------------------
// PromQL, read just far enough to know which series and labels an expression relies on

const STRING = /"(?:[^"\\]|\\.)*"/g;
const MATCHER = /([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"/g;
const GATEWAY_SELECTOR = /\b(fal_gateway_[a-z0-9_]+)\b(\s*\{([^}]*)\})?/g;
const GROUPING = /\b(by|without|on|ignoring)\s*\(([^)]*)\)/g;

interface SeriesRef {
  name: string;
  at: number;
  matchers: string[];
}

/** Index of the parenthesis matching the one at `open` (searching forwards), or backwards from a `)`. */
function matchingParen(code: string, at: number): number {
  const step = code[at] === '(' ? 1 : -1;
  let depth = 0;
  for (let i = at; i >= 0 && i < code.length; i += step) {
    if (code[i] === '(') depth += step;
    if (code[i] === ')') depth -= step;
    if (depth === 0) return i;
  }
  throw new Error(`unbalanced parenthesis at ${at} in ${code}`);
}

/** The span [open, close] of the parenthesised group that opens at `open`. */
function callSpan(code: string, open: number): [number, number] {
  return [open, matchingParen(code, open)];
}

/** Every problem with `expr` against what the gateway exposes; empty when the query is sound. */
function checkExpression(expr: string, expo: Exposition): string[] {
  const problems: string[] = [];
  // Same length as expr, string literals blanked: parentheses and names inside strings are not code.
  const code = expr.replace(STRING, (s) => `"${' '.repeat(s.length - 2)}"`);

  const refs: SeriesRef[] = [];
  for (const m of code.matchAll(GATEWAY_SELECTOR)) {
    const selector = m[2] ? expr.slice(m.index + m[0].indexOf('{') + 1, m.index + m[0].length - 1) : '';
    refs.push({ name: m[1]!, at: m.index, matchers: [...selector.matchAll(MATCHER)].map((x) => x[1]!) });
  }
  if (refs.length === 0) problems.push(`queries no gateway metric: ${expr}`);
  const inside = ([start, end]: [number, number]) => refs.filter((r) => r.at > start && r.at < end);
  const hasLabel = (ref: SeriesRef, label: string) => TARGET_LABELS.has(label) || (expo.labels.get(ref.name)?.has(label) ?? false);

  // Names that are neither functions, keywords nor gateway metrics: a metric from elsewhere.
  const bare = code.replace(/\{[^}]*\}/g, '{}').replace(/\[[^\]]*\]/g, '[]').replace(GROUPING, ' ');
  for (const m of bare.matchAll(/(?<![\w.$])[a-zA-Z_:][\w:]*/g)) {
    const name = m[0];
    const isCall = /^\s*\(/.test(bare.slice(m.index + name.length));
    if (isCall ? !FUNCTIONS.has(name) : !KEYWORDS.has(name) && !name.startsWith('fal_gateway_')) {
      problems.push(`${name}: ${isCall ? 'unexpected function' : 'not a gateway metric'}`);
    }
  }

  for (const ref of refs) {
    if (!expo.labels.has(ref.name)) {
      problems.push(`${ref.name}: ${expo.types.has(familyOf(expo, ref.name)) ? 'declared but has no series' : 'no such series'} in /metrics`);
      continue;
    }
    for (const label of ref.matchers) {
      if (!hasLabel(ref, label)) problems.push(`${ref.name}: matcher on missing label ${label}`);
    }
  }

  // label_replace(v, "dst", "replacement", "src", "regex"): src must exist, dst becomes available.
  const derived = new Set<string>();
  for (const m of code.matchAll(/\blabel_replace\s*\(/g)) {
    const span = callSpan(code, m.index + m[0].length - 1);
    const strings = [...expr.slice(span[0], span[1]).matchAll(STRING)].map((s) => s[0].slice(1, -1));
    const [dst, , src] = strings.slice(-4);
    if (dst === undefined || src === undefined) {
      problems.push(`label_replace without its four string arguments: ${expr}`);
      continue;
    }
    derived.add(dst);
    for (const ref of inside(span)) if (expo.labels.has(ref.name) && !hasLabel(ref, src)) problems.push(`${ref.name}: label_replace reads missing label ${src}`);
  }

  // Grouping labels must exist on every series the grouped expression reads.
  for (const m of code.matchAll(GROUPING)) {
    const labels = m[2]!.split(',').map((l) => l.trim()).filter(Boolean);
    let span: [number, number];
    if (m[1] === 'on' || m[1] === 'ignoring') {
      span = [-1, code.length];
    } else {
      const before = code.slice(0, m.index).trimEnd();
      if (before.endsWith(')')) {
        span = [matchingParen(code, before.length - 1), before.length - 1];
      } else {
        const open = code.indexOf('(', m.index + m[0].length);
        span = callSpan(code, open);
      }
    }
    for (const label of labels) {
      if (derived.has(label)) continue;
      for (const ref of inside(span)) if (expo.labels.has(ref.name) && !hasLabel(ref, label)) problems.push(`${ref.name}: grouped ${m[1]} missing label ${label}`);
    }
  }

  // Counters and histogram series only make sense under rate(); gauges never do.
  const rateSpans = [...code.matchAll(/\b(?:rate|irate|increase)\s*\(/g)].map((m) => callSpan(code, m.index + m[0].length - 1));
  for (const ref of refs) {
    const type = familyType(expo, ref.name);
    const underRate = rateSpans.some(([s, e]) => ref.at > s && ref.at < e);
    if ((type === 'counter' || type === 'histogram') && !underRate) problems.push(`${ref.name}: ${type} read without rate()`);
    if (type === 'gauge' && underRate) problems.push(`${ref.name}: rate() over a gauge`);
  }

  // histogram_quantile needs _bucket series grouped by le; _bucket series need histogram_quantile.
  const quantileSpans = [...code.matchAll(/\bhistogram_quantile\s*\(/g)].map((m) => callSpan(code, m.index + m[0].length - 1));
  for (const span of quantileSpans) {
    const buckets = inside(span).filter((r) => r.name.endsWith('_bucket') && familyType(expo, r.name) === 'histogram');
    if (buckets.length === 0) problems.push(`histogram_quantile over no histogram _bucket series: ${expr}`);
    for (const m of code.slice(span[0], span[1]).matchAll(/\b(by|without)\s*\(([^)]*)\)/g)) {
      const labels = m[2]!.split(',').map((l) => l.trim());
      if (m[1] === 'without' || !labels.includes('le')) problems.push(`histogram_quantile whose aggregation drops le: ${expr}`);
    }
  }
  for (const ref of refs) {
    if (ref.name.endsWith('_bucket') && !quantileSpans.some(([s, e]) => ref.at > s && ref.at < e)) problems.push(`${ref.name}: buckets outside histogram_quantile`);
  }

  return [...new Set(problems)];
}

/** Labels a legend template shows, each of which the query's result must carry. */
function checkLegend(legend: string, expr: string, expo: Exposition): string[] {
  const wanted = [...legend.matchAll(/\{\{\s*(\w+)\s*\}\}/g)].map((m) => m[1]!);
  const code = expr.replace(STRING, '""');
  const groupings = [...code.matchAll(/\bby\s*\(([^)]*)\)/g)].map((m) => m[1]!.split(',').map((l) => l.trim()));
  const names = [...code.matchAll(GATEWAY_SELECTOR)].map((m) => m[1]!);
  return wanted
    .filter((label) =>
      groupings.length > 0
        ? !groupings.some((g) => g.includes(label))
        : !names.every((n) => TARGET_LABELS.has(label) || (expo.labels.get(n)?.has(label) ?? false)),
    )
    .map((label) => `legend {{${label}}} is not a label of the result of ${expr}`);
}

/** Grafana variables an expression uses, as names (`$1` in a label_replace replacement is a regex group, left alone by Grafana). */
const variablesIn = (expr: string) => [...expr.matchAll(/\$\{?([a-zA-Z_]\w*)\}?/g)].map((m) => m[1]!);

/** Every query of the dashboard, with the panel it belongs to. */
function queries(dashboard: Dashboard): Array<{ panel: QueryPanel; expr: string; legend: string }> {
  return dashboard.panels.filter(isQueryPanel).flatMap((panel) => panel.targets.map((t) => ({ panel, expr: t.expr, legend: t.legendFormat ?? '' })));
}

// ---------------------------------------------------------------------------------------------

/** A real memory job store whose ownership lookups can be made to fail. */
class FlakyOwnerStore extends MemoryJobStore {
  failOwnerOf = false;
  override async ownerOf(requestId: string): Promise<string | undefined> {
    if (this.failOwnerOf) throw new Error('store down');
    return super.ownerOf(requestId);
  }
}

describe('Grafana dashboard model', () => {
  const dashboard = loadDashboard();
  const panels = dashboard.panels;

  it('has unique panel ids, rows first, and panels inside the 24-column grid without overlapping', () => {
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(panels[0]!.type).toBe('row');
    for (const p of panels) {
      expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
      if (p.type === 'row') expect(p.gridPos, p.title).toMatchObject({ x: 0, w: 24, h: 1 });
    }
    for (const [i, a] of panels.entries()) {
      for (const b of panels.slice(i + 1)) {
        const apart =
          a.gridPos.x + a.gridPos.w <= b.gridPos.x || b.gridPos.x + b.gridPos.w <= a.gridPos.x ||
          a.gridPos.y + a.gridPos.h <= b.gridPos.y || b.gridPos.y + b.gridPos.h <= a.gridPos.y;
        expect(apart, `${a.title} overlaps ${b.title}`).toBe(true);
      }
    }
    for (const p of panels.filter(isQueryPanel)) {
      const refIds = p.targets.map((t) => t.refId);
      expect(new Set(refIds).size, p.title).toBe(refIds.length);
    }
    expect(panels.filter((p) => p.type === 'row').map((p) => p.title)).toEqual(['Traffic', 'Upstream', 'Tenants', 'Caching', 'Health']);
  });

  it('runs every query on the datasource variable and uses only defined variables', () => {
    const variables = dashboard.templating.list;
    expect(variables.find((v) => v.name === 'datasource')).toMatchObject({ type: 'datasource', query: 'prometheus' });
    const tenant = variables.find((v) => v.name === 'tenant');
    expect(tenant).toMatchObject({ type: 'query', multi: true, includeAll: true, allValue: '.*', definition: 'label_values(fal_gateway_http_requests_total, tenant)' });
    const defined = new Set(variables.map((v) => v.name));
    for (const { panel, expr } of queries(dashboard)) {
      expect(panel.datasource.uid).toBe('${datasource}');
      for (const name of variablesIn(expr)) expect(defined.has(name) || BUILTIN_VARIABLES.has(name), `${panel.title}: $${name}`).toBe(true);
    }
  });

  it('maps every circuit breaker value the gateway reports to its state name', async () => {
    const circuit = panels.filter(isQueryPanel).find((p) => p.targets.some((t) => t.expr.includes('fal_gateway_circuit_state')));
    expect(circuit?.type).toBe('stat');
    const mapping = circuit!.fieldConfig.defaults.mappings?.[0]?.options ?? {};
    const metrics = new GatewayMetrics({ defaultMetrics: false });
    const states: CircuitStateName[] = ['closed', 'half_open', 'open'];
    for (const state of states) {
      metrics.circuitState(state);
      const value = /^fal_gateway_circuit_state (\S+)$/m.exec(await metrics.metricsText())?.[1];
      expect(mapping[value!]?.text, `value ${value}`).toBe(state);
    }
    expect(Object.keys(mapping)).toHaveLength(states.length);
  });
});

describe('Grafana dashboard against a running gateway', () => {
  const dashboard = loadDashboard();
  const clock = manualClock(Date.now());
  const store = new FlakyOwnerStore({ ttlMs: 60_000, maxEntries: 1_000 });
  let stack: Stack;
  let expo: Exposition;

  beforeAll(async () => {
    stack = await startStack({
      tenants: [{ id: 'team-a', maxConcurrentJobs: 2 }, { id: 'team-b', submit: { max: 1, timeWindowMs: 60_000 } }],
      sim: { now: clock.now, queueMs: 1_000, runMs: 1_000 },
      env: { STATUS_CACHE_MS: '0' },
      app: { jobs: store },
    });
    const submit = (tenant: string) =>
      fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer(tenant) }, body: JSON.stringify(SEED_REQUEST) });
    const auth = stack.bearer('team-a');

    // One job seen queued, running and completed: request, upstream, job and cache series, and
    // team-a's concurrency slot taken and freed again.
    const accepted = await submit('team-a');
    expect(accepted.status).toBe(200);
    const job = (await accepted.json()) as { status_url: string; response_url: string };
    clock.advance(1_000);
    expect(((await (await fetch(job.status_url, { headers: auth })).json()) as { status: string }).status).toBe('IN_PROGRESS');
    clock.advance(1_000);
    expect(((await (await fetch(job.status_url, { headers: auth })).json()) as { status: string }).status).toBe('COMPLETED');
    await stack.app.whenIdle();
    expect((await fetch(job.response_url, { headers: auth })).status).toBe(200);

    // An unknown key, a rate-limit rejection and a job-store failure.
    expect((await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, authorization: 'Bearer wrong' }, body: '{}' })).status).toBe(401);
    expect((await submit('team-b')).status).toBe(200);
    expect((await submit('team-b')).status).toBe(429);
    store.failOwnerOf = true;
    try {
      expect((await fetch(job.status_url, { headers: auth })).status).toBe(503);
    } finally {
      store.failOwnerOf = false;
    }

    const res = await fetch(`${stack.url}/metrics`);
    expect(res.status).toBe(200);
    expo = parseExposition(await res.text());
  });
  afterAll(() => stack.close());

  it('queries only metrics, labels and series types that GET /metrics exposes', () => {
    const problems = queries(dashboard).flatMap(({ panel, expr, legend }) =>
      [...checkExpression(expr, expo), ...checkLegend(legend, expr, expo)].map((p) => `${panel.title}: ${p}`),
    );
    expect(problems).toEqual([]);
  });

  it('fills the tenant variable from a real label and filters every tenant-labelled query by it', () => {
    const tenant = dashboard.templating.list.find((v) => v.name === 'tenant');
    const query = /^label_values\((\w+),\s*(\w+)\)$/.exec(tenant?.type === 'query' ? tenant.query.query : '');
    expect(query).not.toBeNull();
    expect(expo.labels.get(query![1]!)?.has(query![2]!)).toBe(true);
    const unfiltered = queries(dashboard).flatMap(({ panel, expr }) =>
      [...expr.matchAll(GATEWAY_SELECTOR)]
        .filter((m) => expo.labels.get(m[1]!)?.has('tenant') && !(m[3] ?? '').includes('tenant=~"$tenant"'))
        .map((m) => `${panel.title}: ${m[1]}`),
    );
    expect(unfiltered).toEqual([]);
  });

  it('charts every gateway metric family except the ones listed with a reason', () => {
    const charted = new Set(queries(dashboard).flatMap(({ expr }) => [...expr.matchAll(GATEWAY_SELECTOR)].map((m) => familyOf(expo, m[1]!))));
    const own = [...expo.types.keys()].filter((name) => !/^fal_gateway_(process|nodejs)_/.test(name));
    expect(own.filter((name) => !charted.has(name) && !(name in NOT_CHARTED))).toEqual([]);
    for (const name of Object.keys(NOT_CHARTED)) {
      expect(own, name).toContain(name);
      expect(charted.has(name), name).toBe(false);
    }
  });

  it('catches queries on missing metrics or labels, gauges under rate() and quantiles without le', async () => {
    // A gateway that has admitted no capped job yet declares the in-flight gauge without any series.
    const fresh = parseExposition(await new GatewayMetrics({ defaultMetrics: false }).metricsText());
    expect(fresh.types.get('fal_gateway_concurrent_jobs')).toBe('gauge');
    expect(checkExpression('max by (tenant) (fal_gateway_concurrent_jobs)', fresh)).toEqual(['fal_gateway_concurrent_jobs: declared but has no series in /metrics']);
    expect(checkExpression('max by (tenant) (fal_gateway_concurrent_jobs)', expo)).toEqual([]);

    const cases: Array<[string, string]> = [
      ['sum(rate(fal_gateway_http_request_total[5m]))', 'fal_gateway_http_request_total: no such series'],
      ['sum(rate(fal_gateway_upstream_calls_total{tenant=~"$tenant"}[5m]))', 'matcher on missing label tenant'],
      ['sum by (tenant) (rate(fal_gateway_upstream_calls_total[5m]))', 'grouped by missing label tenant'],
      ['sum(rate(fal_gateway_upstream_calls_total[5m])) by (route)', 'grouped by missing label route'],
      ['rate(fal_gateway_circuit_state[5m])', 'rate() over a gauge'],
      ['sum(fal_gateway_jobs_submitted_total)', 'counter read without rate()'],
      ['histogram_quantile(0.9, sum by (route) (rate(fal_gateway_http_request_duration_seconds_bucket[5m])))', 'drops le'],
      ['sum(rate(process_cpu_seconds_total[5m]))', 'process_cpu_seconds_total: not a gateway metric'],
      ['label_replace(fal_gateway_circuit_state, "x", "$1", "nope", "(.*)")', 'label_replace reads missing label nope'],
    ];
    for (const [expr, problem] of cases) {
      expect(checkExpression(expr, expo).join('\n'), expr).toContain(problem);
    }
    expect(checkLegend('{{route}}', 'sum by (operation) (rate(fal_gateway_upstream_calls_total[5m]))', expo)).toHaveLength(1);
    // And a sound query passes.
    expect(checkExpression('sum by (route) (rate(fal_gateway_http_requests_total{status=~"5.."}[5m]))', expo)).toEqual([]);
  });
});
