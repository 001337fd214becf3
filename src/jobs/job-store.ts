import { DAY_MS } from '../accounting/accounting-store.js';

/** What an Idempotency-Key stands for: a submit in flight, or its answer. */
export type IdempotencyRecord =
  | {
      state: 'pending';
      fingerprint: string;
      /** Which submit holds the claim: only that one may release it. */
      attempt?: string;
    }
  | { state: 'done'; fingerprint: string; statusCode: number; body: Record<string, unknown> };

/** What the gateway remembers of a job it queued. */
export interface JobRecord {
  tenantId: string;
  /** Epoch ms of the submit: the UTC day and month its images were charged to. */
  submittedAt: number;
  /** num_images requested. */
  images: number;
  /** The quota windows those images were charged to at submit (none when the tenant had no quota). */
  charged: ChargedWindow[];
  /**
   * Epoch ms at which the images were charged, when that was on another UTC day than
   * `submittedAt` (a submit admitted just before midnight UTC that fal answered after it): the day
   * and month a refund goes back to. Absent: those of `submittedAt`.
   */
  chargedAt?: number;
  /** A cancel of this job was accepted upstream. */
  cancelled: boolean;
  /** Its end was observed and accounted (usage, concurrency slot). */
  settled: boolean;
}

export type ChargedWindow = 'day' | 'month';

/** Marks that are set at most once per job, across replicas: the first caller wins. */
export type JobMark = 'cancelled' | 'settled';

/**
 * Which tenant owns which upstream request id. The gateway answers a request-id route only for
 * the tenant recorded here; everything else is a 404 without an upstream call.
 * Implementations: memory (default, one process) and, with REDIS_URL, Redis (shared by replicas).
 */
/** record() of a request id that is another tenant's: the upstream gave out one id twice. */
export class OwnedByAnotherTenant extends Error {
  readonly code = 'FGW_OWNED_BY_ANOTHER_TENANT';
  constructor(requestId: string) {
    super(`the upstream returned request id ${requestId}, which another tenant's job already holds`);
  }
}

export interface JobStore {
  readonly kind: 'memory' | 'redis';
  /** Cheap, local check (no round trip) that the store can be written now: checked before a paid submit. */
  available(): boolean;
  /**
   * Records that `tenantId` submitted `requestId` now, for `images` images charged to the
   * `charged` quota windows at `chargedAt` (default: now); kept for the store's TTL. Rejects with
   * OwnedByAnotherTenant when the id is recorded for another tenant (an upstream that handed out
   * an id twice): a job never changes hands.
   */
  record(requestId: string, tenantId: string, images?: number, charged?: readonly ChargedWindow[], chargedAt?: number): Promise<void>;
  /** The owning tenant id, or undefined when unknown or expired. Rejects when the store is down. */
  ownerOf(requestId: string): Promise<string | undefined>;
  /** Everything recorded about a job, or undefined when unknown or expired. */
  job(requestId: string): Promise<JobRecord | undefined>;
  /**
   * Sets a mark on a known job. True only for the first caller (atomic across replicas), so a
   * job's end is accounted once however many pollers see it; false when already set or unknown.
   */
  mark(requestId: string, mark: JobMark): Promise<boolean>;
  /**
   * Jobs whose end has not been seen and that nobody checked for `intervalMs`: at most `limit`,
   * longest unchecked first. Each is counted as checked `now` in the same atomic step, so replicas
   * checking at once take different ones. A job is due `intervalMs` after its submit at the
   * earliest; settled and expired jobs are dropped from the schedule.
   */
  dueForCheck(now: number, intervalMs: number, limit: number): Promise<string[]>;
  /**
   * Claims `key` for a submit in flight, the one named `attempt` (kept `ttlMs`), unless it is
   * already claimed or done: returns the existing record then, undefined when the claim is new.
   * Atomic across replicas.
   */
  claimIdempotencyKey(key: string, fingerprint: string, ttlMs: number, attempt: string): Promise<IdempotencyRecord | undefined>;
  /** What `key` holds now (a pending claim or an answer), without claiming it. */
  idempotencyRecord(key: string): Promise<IdempotencyRecord | undefined>;
  /** Stores the answer to replay for `key`. */
  completeIdempotencyKey(key: string, record: IdempotencyRecord & { state: 'done' }, ttlMs: number): Promise<void>;
  /**
   * Forgets `key` while it holds the pending claim of `attempt` (that submit definitely did not
   * queue a job, so it may be tried again). Anything else under the key (another submit's
   * claim, an answer) stays.
   */
  releaseIdempotencyKey(key: string, attempt: string): Promise<void>;
  /** True when the store can serve requests (readiness). */
  ready(): Promise<boolean>;
  close(): Promise<void>;
}

export interface JobStoreOptions {
  ttlMs: number;
  maxEntries: number;
  now?: () => number;
  onEvict?: (count: number) => void;
}

/**
 * `chargedAt` when a job record must keep it: when it falls on another UTC day than `recordedAt`
 * (epoch time has no leap seconds: every UTC day is 86,400,000 ms). Otherwise the record's own
 * time names the same day and month.
 */
export function chargedAtToKeep(chargedAt: number | undefined, recordedAt: number): number | undefined {
  return chargedAt !== undefined && Math.floor(chargedAt / DAY_MS) !== Math.floor(recordedAt / DAY_MS) ? chargedAt : undefined;
}
