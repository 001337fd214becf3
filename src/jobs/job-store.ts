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
