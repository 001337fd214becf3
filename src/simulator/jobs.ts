import { randomUUID } from 'node:crypto';

/**
 * The simulated queue. Nothing runs in the background: a job's state is derived from its
 * timestamps and the clock whenever someone asks, so tests can move an injected clock and see
 * every transition deterministically, and an idle simulator costs nothing.
 */

export type JobState = 'IN_QUEUE' | 'IN_PROGRESS' | 'COMPLETED';

export interface Job<T> {
  readonly id: string;
  readonly submittedAt: number;
  /** Set by cancel; a cancelled job reads COMPLETED from that moment on. */
  cancelledAt?: number;
  /** X-Fal-Request-Timeout: how long the job may wait in the queue before it must have started. */
  readonly startTimeoutMs?: number;
  readonly payload: T;
}

export type CancelOutcome = 'CANCELLATION_REQUESTED' | 'ALREADY_COMPLETED' | 'NOT_FOUND';

export interface JobStoreOptions<T> {
  queueMs: number;
  runMs: number;
  now: () => number;
  maxJobs: number;
  /** How long a job is kept once COMPLETED (its result, its status), as fal's retention: then it is forgotten. */
  retentionMs: (job: Job<T>) => number;
}

export class JobStore<T> {
  // Insertion order is submit order: eviction drops the first entry, queue_position scans up to the job.
  private readonly jobs = new Map<string, Job<T>>();

  constructor(private readonly options: JobStoreOptions<T>) {}

  get now(): number {
    return this.options.now();
  }

  submit(payload: T, startTimeoutMs?: number): Job<T> {
    const job: Job<T> = { id: randomUUID(), submittedAt: this.now, payload, ...(startTimeoutMs !== undefined ? { startTimeoutMs } : {}) };
    this.jobs.set(job.id, job);
    while (this.jobs.size > Math.max(1, this.options.maxJobs)) {
      const oldest = this.jobs.keys().next().value;
      if (oldest === undefined) break;
      this.jobs.delete(oldest);
    }
    return job;
  }

  /** The job as the queue knows it: unknown once past its retention, as fal forgets it. */
  get(id: string): Job<T> | undefined {
    const job = this.jobs.get(id);
    return job && !this.expired(job) ? job : undefined;
  }

  /**
   * The job whatever its retention: its files stay where its result pointed (fal's media outlive
   * the queue's record of the job), until maxJobs newer jobs push it out.
   */
  kept(id: string): Job<T> | undefined {
    return this.jobs.get(id);
  }

  /** When a completed job is forgotten: its retention after COMPLETED. */
  forgottenAt(job: Job<T>): number {
    return this.completedAt(job) + this.options.retentionMs(job);
  }

  private expired(job: Job<T>): boolean {
    return this.now >= this.forgottenAt(job);
  }

  /** When the runner picks the job up (planned; a cancel in the queue means it never does). */
  startedAt(job: Job<T>): number {
    return job.submittedAt + this.options.queueMs;
  }

  /**
   * When a job whose start timeout runs out in the queue is given up (it never starts), as fal
   * does with X-Fal-Request-Timeout; undefined for a job that starts in time.
   */
  timedOutAt(job: Job<T>): number | undefined {
    if (job.startTimeoutMs === undefined) return undefined;
    const deadline = job.submittedAt + job.startTimeoutMs;
    return this.startedAt(job) > deadline ? deadline : undefined;
  }

  /** When the job ended without running to its end: cancelled, or given up in the queue. */
  private endedEarlyAt(job: Job<T>): number | undefined {
    const timedOut = this.timedOutAt(job);
    if (job.cancelledAt === undefined) return timedOut;
    return timedOut === undefined ? job.cancelledAt : Math.min(job.cancelledAt, timedOut);
  }

  /** Whether the job was given up in the queue (before any cancel). */
  timedOut(job: Job<T>, at = this.now): boolean {
    const timedOut = this.timedOutAt(job);
    return timedOut !== undefined && at >= timedOut && (job.cancelledAt === undefined || job.cancelledAt > timedOut);
  }

  /** When the job reached (or will reach) COMPLETED. */
  completedAt(job: Job<T>): number {
    return this.endedEarlyAt(job) ?? this.startedAt(job) + this.options.runMs;
  }

  state(job: Job<T>, at = this.now): JobState {
    const endedEarly = this.endedEarlyAt(job);
    if (endedEarly !== undefined && at >= endedEarly) return 'COMPLETED';
    if (at < this.startedAt(job)) return 'IN_QUEUE';
    if (at < this.completedAt(job)) return 'IN_PROGRESS';
    return 'COMPLETED';
  }

  /** Jobs submitted earlier that are still waiting (a cancelled job has left the queue). */
  queuePosition(job: Job<T>, at = this.now): number {
    let ahead = 0;
    for (const other of this.jobs.values()) {
      if (other === job) break;
      if (this.state(other, at) === 'IN_QUEUE') ahead++;
    }
    return ahead;
  }

  /** Seconds the runner spent on the job: 0 if it never left the queue. */
  inferenceSeconds(job: Job<T>): number {
    return Math.max(0, this.completedAt(job) - this.startedAt(job)) / 1000;
  }

  cancel(id: string): CancelOutcome {
    const job = this.get(id);
    if (!job) return 'NOT_FOUND';
    const at = this.now;
    if (this.state(job, at) === 'COMPLETED') return 'ALREADY_COMPLETED';
    job.cancelledAt = at;
    return 'CANCELLATION_REQUESTED';
  }

  /** Jobs queued or running now (scans every kept job: the simulator keeps few). */
  inFlight(at = this.now): number {
    let count = 0;
    for (const job of this.jobs.values()) if (this.state(job, at) !== 'COMPLETED') count++;
    return count;
  }

  get size(): number {
    return this.jobs.size;
  }
}
