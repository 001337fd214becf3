import type { FastifyBaseLogger } from 'fastify';
import { utcDay, utcMonth, type AccountingStore, type UsageCounters } from '../accounting/accounting-store.js';
import type { GatewayMetrics, JobOutcome } from '../metrics.js';
import type { JobReads } from './job-reads.js';
import type { JobStore } from './job-store.js';
import { isConnectionFailure } from '../log-sampler.js';

export interface JobLifecycleOptions {
  jobs: JobStore;
  accounting: AccountingStore;
  reads: JobReads;
  log: FastifyBaseLogger;
  metrics?: GatewayMetrics;
  /** Whether final results are fetched into the cache as soon as a job is seen COMPLETED. */
  warmResults: boolean;
  /** How long a job whose end was not seen goes unchecked before the gateway asks upstream itself (ms); 0: never. */
  staleCheckMs: number;
  /** Placeholder slots (taken before a submit got its request id) older than this are abandoned (ms). */
  pendingSlotMaxMs: number;
  now?: () => number;
}

/** Bounds the jobs this process remembers seeing start (only those it saw running and not yet ending). */
const MAX_SEEN = 100_000;
/** Results fetched ahead of their clients at once, and the most waiting their turn. */
const PREFETCH_CONCURRENCY = 4;
const MAX_PREFETCH_BACKLOG = 10_000;
/** Jobs and slots checked upstream per background sweep, at most (each is one status call). */
const SWEEP_LIMIT = 100;
export const PENDING_SLOT = 'pending:';
/** Longest a cancel's answer waits for the job it removed to be accounted. */
const CANCEL_SETTLE_WAIT_MS = 2_000;

function parseStatus(body: Buffer): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(body.toString('utf8'));
    return value && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Turns what the gateway observes of a job (its submit, each status fetched upstream by a poll,
 * a stream or the stale-job check, an accepted cancel) into accounting: the tenant's daily usage,
 * the concurrency slot it holds, quota given back on cancel, and the job metrics. A job's end is
 * accounted exactly once across replicas (the store's `settled` mark decides who does it).
 */
export class JobLifecycle {
  /** When this process first saw each running job IN_PROGRESS, for the queued/running time metrics. */
  private readonly started = new Map<string, number>();
  private readonly now: () => number;
  private timer: NodeJS.Timeout | undefined;
  /** Background work in progress (accounting a job's end, fetching its result), for idle(). */
  private readonly pending = new Set<Promise<unknown>>();
  /** Each job's end being accounted right now, so a cancel can wait for its own. */
  private readonly settling = new Map<string, Promise<void>>();
  private readonly prefetchQueue: string[] = [];
  private prefetching = 0;
  private sweeping = false;

  constructor(private readonly options: JobLifecycleOptions) {
    this.now = options.now ?? Date.now;
  }

  /** Starts the background check of stale jobs (an unref'd timer). */
  start(): void {
    if (this.options.staleCheckMs <= 0 || this.timer) return;
    this.timer = setInterval(() => this.track(this.sweep()), this.options.staleCheckMs);
    this.timer.unref();
  }

  /** Stops the background check and drops results waiting to be prefetched (shutdown). */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.prefetchQueue.length = 0;
  }

  /** A job was queued upstream and recorded for `tenantId`. */
  async submitted(tenantId: string, requestId: string, images: number): Promise<void> {
    this.options.metrics?.jobSubmitted(tenantId);
    this.options.metrics?.jobState(tenantId, 'IN_QUEUE');
    await this.addUsage(tenantId, { submitted: 1, images });
  }

  /** A status object fetched from upstream for `requestId`. Never throws; work runs in the background. */
  observe(requestId: string, status: Record<string, unknown>): void {
    const state = status.status;
    if (state === 'IN_PROGRESS') {
      if (this.started.has(requestId)) return;
      this.started.set(requestId, this.now());
      if (this.started.size > MAX_SEEN) this.started.delete(this.started.keys().next().value!);
      if (this.options.metrics) {
        const metrics = this.options.metrics;
        this.options.jobs.ownerOf(requestId).then(
          (tenantId) => tenantId && metrics.jobState(tenantId, 'IN_PROGRESS'),
          () => metrics.storeError('jobs', 'owner_of'),
        );
      }
    } else if (state === 'COMPLETED') {
      const settling = this.settle(requestId, status)
        .catch((err: unknown) =>
          this.options.log.warn({ err: (err as Error).message, requestId }, 'could not account for a finished job; the stale-job check will retry'),
        )
        .finally(() => {
          if (this.settling.get(requestId) === settling) this.settling.delete(requestId);
        });
      this.settling.set(requestId, settling);
      this.track(settling);
    }
  }

  /**
   * A final result was read upstream, so the job has ended; a client may fetch it without ever
   * asking for the status. Unless the job is accounted already, its status (which says how it
   * ended and how long it ran) is read once, and observe() settles it. Never throws.
   */
  resultSeen(requestId: string): void {
    this.track(
      this.options.jobs
        .job(requestId)
        .then((job) => (job && !job.settled ? this.options.reads.status(requestId, false) : undefined))
        .catch((err: unknown) =>
          this.options.log.warn({ err: (err as Error).message, requestId }, 'could not read the status of a job whose result was read; a later read settles it'),
        ),
    );
  }

  /**
   * A cancel was accepted upstream. The job is marked (once, however many cancels arrive) and its
   * status is read again at once, so a job removed from the queue is settled, its slot freed and
   * its images given back promptly. A running job may still finish: it is settled when it does.
   */
  async cancelled(requestId: string): Promise<void> {
    this.options.reads.forget(requestId);
    await this.options.jobs.mark(requestId, 'cancelled');
    const accounted = this.options.reads
      .status(requestId, false)
      .then(() => this.settling.get(requestId))
      .catch(() => {
        // The stale-job check will look again.
      });
    this.track(accounted);
    // The cancel is answered once a job it removed from the queue is accounted (its images given
    // back, its slot freed), so the caller's next submit finds them: answered at once, it met a
    // quota still spent (told to retry at midnight UTC) or a slot still taken. Bounded: a slow
    // upstream delays the answer by CANCEL_SETTLE_WAIT_MS at most; the rest goes on behind it.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([accounted, new Promise<void>((resolve) => (timer = setTimeout(resolve, CANCEL_SETTLE_WAIT_MS)))]);
    clearTimeout(timer);
  }

  /** Accounts for a finished job once: usage, slot, metrics, and the result fetched for keeping. */
  private async settle(requestId: string, status: Record<string, unknown>): Promise<void> {
    const started = this.started.get(requestId);
    this.started.delete(requestId);
    const job = await this.options.jobs.job(requestId);
    if (!job || job.settled) return;
    if (!(await this.options.jobs.mark(requestId, 'settled'))) return;
    // A cancel only counts when it took effect: a job that finished with its images anyway is completed (and paid for).
    const failed = status.error !== undefined && status.error !== null;
    const outcome: JobOutcome = failed && (job.cancelled || status.error_type === 'request_cancelled') ? 'cancelled' : failed ? 'failed' : 'completed';
    const metrics = status.metrics as { inference_time?: unknown } | undefined;
    const inference = typeof metrics?.inference_time === 'number' && metrics.inference_time >= 0 ? metrics.inference_time : 0;
    const now = this.now();
    // The images go back to the day and month they were charged to, not those of the record.
    const chargedAt = job.chargedAt ?? job.submittedAt;
    await Promise.all([
      outcome === 'cancelled' && job.images > 0 && job.charged.length > 0
        ? this.options.accounting
            .refundImages({ tenantId: job.tenantId, images: job.images, day: utcDay(chargedAt), month: utcMonth(chargedAt), charged: job.charged })
            .catch((err: unknown) => {
              this.options.metrics?.storeError('accounting', 'refund_images');
              this.options.log.error({ err: (err as Error).message, requestId, images: job.images }, 'a cancelled job\'s images could not be given back');
            })
        : undefined,
      this.addUsage(job.tenantId, { [outcome]: 1, ...(inference > 0 ? { inferenceSeconds: inference } : {}) }),
      this.options.accounting.releaseSlot(job.tenantId, requestId).catch((err: unknown) => {
        this.options.metrics?.storeError('accounting', 'release_slot');
        throw err;
      }),
    ]);
    if (this.options.metrics) {
      this.options.metrics.jobState(job.tenantId, 'COMPLETED');
      // Running: fal's own measure when it gives one, whoever saw the job end and however seldom
      // it was polled; else the time since this process saw it start. Queued: only known when
      // this process saw it start (a job read only once it had ended has no queued time).
      this.options.metrics.jobFinished(
        job.tenantId,
        outcome,
        started !== undefined ? (started - job.submittedAt) / 1000 : undefined,
        inference > 0 ? inference : started !== undefined ? (now - started) / 1000 : undefined,
      );
    }
    if (this.options.warmResults && outcome !== 'cancelled') this.prefetch(requestId);
  }

  /**
   * Kept now, the result outlives fal's retention even if the client comes for it later. A few
   * at a time, so prefetching never competes with clients for the upstream; past the backlog
   * bound a job is left to its client's own read.
   */
  private prefetch(requestId: string): void {
    if (this.prefetchQueue.length >= MAX_PREFETCH_BACKLOG) return;
    this.prefetchQueue.push(requestId);
    this.pumpPrefetch();
  }

  private pumpPrefetch(): void {
    while (this.prefetching < PREFETCH_CONCURRENCY && this.prefetchQueue.length > 0) {
      const next = this.prefetchQueue.shift()!;
      this.prefetching++;
      this.track(
        this.options.reads
          .result(next)
          .catch(() => {
            // Only a miss later: the client's own read asks upstream again.
          })
          .finally(() => {
            this.prefetching--;
            this.pumpPrefetch();
          }),
      );
    }
  }

  /** Resolves once the background work started so far (and any it starts) has finished. */
  async idle(): Promise<void> {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
  }

  private track(work: Promise<unknown>): void {
    this.pending.add(work);
    void work.finally(() => this.pending.delete(work));
  }

  /**
   * A background check that could not read the store. With the store's connection down (its
   * state is logged when it changes: "redis unavailable"), say that, not the client library's
   * wording; anything else is logged as it came.
   */
  private checkFailed(check: string, err: unknown): void {
    const message = (err as Error).message;
    if (isConnectionFailure(err)) {
      this.options.log.warn({ err: message }, `${check} skipped: the store (Redis) is not connected; it runs again at the next check`);
    } else {
      this.options.log.warn({ err: message }, `${check} failed`);
    }
  }

  /**
   * The background check: jobs whose end the gateway has not seen, unchecked for `staleCheckMs`
   * (a client may never read its job: usage must still count its end), then concurrency slots
   * held that long (their job may be gone, or never recorded). Finished jobs are settled.
   */
  async sweep(): Promise<void> {
    if (this.sweeping) return;
    this.sweeping = true;
    const now = this.now();
    try {
      for (const requestId of await this.options.jobs.dueForCheck(now, this.options.staleCheckMs, SWEEP_LIMIT)) {
        if ((await this.settleIfFinished(requestId)) !== 'gone') continue;
        // Upstream no longer knows the job: there is nothing left to learn, so it is not asked again.
        await this.options.jobs.mark(requestId, 'settled');
        this.options.log.info({ requestId }, 'a job whose end was not seen is unknown upstream; no longer checked');
      }
    } catch (err) {
      this.options.metrics?.storeError('jobs', 'due_for_check');
      this.checkFailed('unseen-job check', err);
    }
    try {
      const stale = await this.options.accounting.staleSlots(this.options.staleCheckMs, now, SWEEP_LIMIT);
      for (const { tenantId, slotId } of stale) {
        if (slotId.startsWith(PENDING_SLOT)) {
          // A submit that never finished recording (the process died mid-way): nothing to poll.
          if (now - Number(slotId.slice(PENDING_SLOT.length).split(':')[0]) > this.options.pendingSlotMaxMs) {
            await this.options.accounting.releaseSlot(tenantId, slotId);
          }
          continue;
        }
        // An unsettled job is asked about by the pass above (every job is in that schedule);
        // here only slots with nothing left to wait for are freed: forgotten (TTL) or accounted.
        const job = await this.options.jobs.job(slotId);
        if (!job || job.settled) await this.options.accounting.releaseSlot(tenantId, slotId);
      }
    } catch (err) {
      this.options.metrics?.storeError('accounting', 'stale_slots');
      this.checkFailed('stale-job check', err);
    } finally {
      this.sweeping = false;
    }
  }

  /** Reads a job's status and settles it when it has finished; 'gone' when upstream no longer knows it. */
  private async settleIfFinished(requestId: string): Promise<'gone' | undefined> {
    const response = await this.options.reads.status(requestId, false).catch(() => undefined);
    if (response?.statusCode === 404) return 'gone';
    // A COMPLETED answer may come from the cache (its first settle failed): settle from it.
    const status = response?.statusCode === 200 ? parseStatus(response.body) : undefined;
    if (status?.status === 'COMPLETED') await this.settle(requestId, status);
    return undefined;
  }

  private async addUsage(tenantId: string, delta: Partial<UsageCounters>): Promise<void> {
    try {
      await this.options.accounting.addUsage(tenantId, this.now(), delta);
    } catch (err) {
      this.options.metrics?.storeError('accounting', 'add_usage');
      this.options.log.error({ err: (err as Error).message, tenantId, delta }, 'usage could not be recorded');
    }
  }
}
