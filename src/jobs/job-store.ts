/** What an Idempotency-Key stands for: a submit in flight, or its answer. */
export type IdempotencyRecord =
  | { state: 'pending'; fingerprint: string }
  | { state: 'done'; fingerprint: string; statusCode: number; body: Record<string, unknown> };

/**
 * Which tenant owns which upstream request id. The gateway answers a request-id route only for
 * the tenant recorded here; everything else is a 404 without an upstream call.
 * Implementations: memory (default, one process) and, with REDIS_URL, Redis (shared by replicas).
 */
export interface JobStore {
  readonly kind: 'memory' | 'redis';
  /** Cheap, local check (no round trip) that the store can be written now: checked before a paid submit. */
  available(): boolean;
  /** Records that `tenantId` submitted `requestId`; kept for the store's TTL. */
  record(requestId: string, tenantId: string): Promise<void>;
  /** The owning tenant id, or undefined when unknown or expired. Rejects when the store is down. */
  ownerOf(requestId: string): Promise<string | undefined>;
  /**
   * Claims `key` for a submit in flight (kept `ttlMs`) unless it is already claimed or done:
   * returns the existing record then, undefined when the claim is new. Atomic across replicas.
   */
  claimIdempotencyKey(key: string, fingerprint: string, ttlMs: number): Promise<IdempotencyRecord | undefined>;
  /** Stores the answer to replay for `key`. */
  completeIdempotencyKey(key: string, record: IdempotencyRecord & { state: 'done' }, ttlMs: number): Promise<void>;
  /** Forgets `key` (the submit definitely did not queue a job, so it may be tried again). */
  releaseIdempotencyKey(key: string): Promise<void>;
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
