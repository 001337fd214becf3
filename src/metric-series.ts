/**
 * Counters and histograms for the request path, served by a prom-client `Registry`.
 *
 * prom-client's own metrics check, sort and hash the label values on every `inc` and `observe`,
 * children included, and a histogram looks its bucket up by the bound turned into a string. On a
 * path that records several samples per request that is a measurable share of the gateway's CPU
 * (see README "Performance"). Here the caller binds a series once per label set and records
 * into it with plain arithmetic; the registry reads the totals when it is scraped and writes them
 * in the text format exactly as it writes prom-client's own counters and histograms.
 */
import type { Metric, Registry } from 'prom-client';

type Labels<L extends string> = Readonly<Record<L, string>>;

/** A sample as prom-client's registry reads it (`metricName` defaults to the metric's name). */
interface SampleValue {
  value: number;
  labels: Record<string, string | number>;
  /** Written after `labels` (a histogram's series labels after its `le`, as prom-client writes them). */
  sharedLabels?: Labels<string>;
  metricName?: string;
}

interface FamilyOptions<L extends string> {
  name: string;
  help: string;
  labelNames: readonly L[];
  registers: readonly Registry[];
}

/** What prom-client's registry calls on a metric: its name and help, `get()` and `reset()`. */
abstract class Family<L extends string, S extends { readonly labels: Labels<L>; zero(): void }> {
  readonly name: string;
  readonly help: string;
  abstract readonly type: 'counter' | 'histogram';
  readonly aggregator = 'sum' as const;
  protected readonly series = new Map<string, S>();
  private readonly labelNames: readonly L[];

  constructor(options: FamilyOptions<L>) {
    this.name = options.name;
    this.help = options.help;
    this.labelNames = options.labelNames;
    // The registry reads metrics through name, help, type, aggregator, get() and reset(), which
    // this class provides; its TypeScript type lists prom-client's own classes only.
    for (const registry of options.registers) registry.registerMetric(this as unknown as Metric);
  }

  /** The series of these label values, made on first use; keep it and record into it. */
  with(labels: Labels<L>): S {
    const copy = {} as Record<L, string>;
    for (const name of this.labelNames) {
      const value = labels[name];
      if (typeof value !== 'string') throw new Error(`${this.name}: label "${name}" is missing`);
      copy[name] = value;
    }
    if (Object.keys(labels).length !== this.labelNames.length) throw new Error(`${this.name}: labels must be exactly ${this.labelNames.join(', ')}`);
    const key = JSON.stringify(this.labelNames.map((name) => copy[name]));
    let series = this.series.get(key);
    if (!series) {
      series = this.create(Object.freeze(copy));
      this.series.set(key, series);
    }
    return series;
  }

  /** Sets every series back to zero (the registry's resetMetrics). Bound series stay bound. */
  reset(): void {
    for (const series of this.series.values()) series.zero();
  }

  protected abstract create(labels: Labels<L>): S;
  protected abstract samples(series: S): SampleValue[];

  /** What the registry writes as text (shared labels apart, as prom-client's own histograms give them). */
  async getForPromString(): Promise<{ name: string; help: string; type: string; aggregator: 'sum'; values: SampleValue[] }> {
    const values: SampleValue[] = [];
    for (const series of this.series.values()) values.push(...this.samples(series));
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  /** The same samples with each one's labels in one object (the registry's JSON form). */
  async get(): Promise<{ name: string; help: string; type: string; aggregator: 'sum'; values: SampleValue[] }> {
    const metric = await this.getForPromString();
    return { ...metric, values: metric.values.map(({ sharedLabels, ...sample }) => ({ ...sample, labels: { ...sample.labels, ...sharedLabels } })) };
  }
}

export class CounterSeries<L extends string> {
  value = 0;
  constructor(readonly labels: Labels<L>) {}

  inc(): void {
    this.value++;
  }

  zero(): void {
    this.value = 0;
  }
}

/** A labelled counter whose series are bound once (see the module comment). */
export class CounterFamily<L extends string> extends Family<L, CounterSeries<L>> {
  readonly type = 'counter' as const;

  protected create(labels: Labels<L>): CounterSeries<L> {
    return new CounterSeries(labels);
  }

  protected samples(series: CounterSeries<L>): SampleValue[] {
    return [{ value: series.value, labels: { ...series.labels } }];
  }
}

export class HistogramSeries<L extends string> {
  /** Observations per bucket (not cumulative): counts[i] holds values in (bounds[i-1], bounds[i]]. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(
    readonly labels: Labels<L>,
    private readonly bounds: readonly number[],
  ) {
    this.counts = new Float64Array(bounds.length);
  }

  observe(value: number): void {
    if (!Number.isFinite(value)) throw new TypeError(`not a finite number: ${value}`);
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    if (i < bounds.length) this.counts[i]!++;
    this.sum += value;
    this.count++;
  }

  zero(): void {
    this.counts.fill(0);
    this.sum = 0;
    this.count = 0;
  }
}

function withIncreasingBuckets<O extends { name: string; buckets: readonly number[] }>(options: O): O {
  if (options.buckets.some((bound, i) => !Number.isFinite(bound) || (i > 0 && bound <= options.buckets[i - 1]!))) {
    throw new Error(`${options.name}: buckets must be finite and increasing`);
  }
  return options;
}

/** A labelled histogram whose series are bound once (see the module comment). */
export class HistogramFamily<L extends string> extends Family<L, HistogramSeries<L>> {
  readonly type = 'histogram' as const;
  private readonly bounds: readonly number[];

  constructor(options: FamilyOptions<L> & { buckets: readonly number[] }) {
    // Checked before the registry sees the metric.
    super(withIncreasingBuckets(options));
    this.bounds = [...options.buckets];
  }

  protected create(labels: Labels<L>): HistogramSeries<L> {
    return new HistogramSeries(labels, this.bounds);
  }

  protected samples(series: HistogramSeries<L>): SampleValue[] {
    const bucket = `${this.name}_bucket`;
    const values: SampleValue[] = [];
    let cumulative = 0;
    this.bounds.forEach((bound, i) => {
      cumulative += series.counts[i]!;
      values.push({ value: cumulative, labels: { le: bound }, sharedLabels: series.labels, metricName: bucket });
    });
    values.push(
      { value: series.count, labels: { le: '+Inf' }, sharedLabels: series.labels, metricName: bucket },
      { value: series.sum, labels: {}, sharedLabels: series.labels, metricName: `${this.name}_sum` },
      { value: series.count, labels: {}, sharedLabels: series.labels, metricName: `${this.name}_count` },
    );
    return values;
  }
}
