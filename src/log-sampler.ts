/**
 * Log lines about a state that lasts (Redis down, the upstream's circuit open) come once per
 * interval for each kind, not once per request: during an outage every request would otherwise
 * add a line of its own, several times the log volume of normal traffic, all saying the same.
 * Each request still has its request line with its status code. A line that follows a quiet
 * interval says how many like it were left out (`suppressed`).
 */
/** How often a line about a lasting outage may repeat (ms). */
export const OUTAGE_LOG_INTERVAL_MS = 10_000;

/**
 * Whether a store error is its connection failing (Redis down, frozen, unreachable, a replica),
 * a state that lasts, rather than a fault of the command (a script error, a wrong key type).
 */
export function isConnectionFailure(err: unknown): boolean {
  const message = err instanceof Error ? err.message : String(err);
  return CONNECTION_FAILURE.test(message);
}

const CONNECTION_FAILURE =
  /Connection is closed|Command timed out|enableOfflineQueue|Stream isn't writeable|max retries|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN|EPIPE|^READONLY|^LOADING|^MASTERDOWN|^CLUSTERDOWN|^TRYAGAIN/i;

/** Kinds remembered at most; past it the memory starts afresh (kinds are few: this bounds odd causes). */
const MAX_KINDS = 256;

export class LogSampler {
  private readonly last = new Map<string, { at: number; suppressed: number }>();

  constructor(
    private readonly intervalMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Whether a line of this kind goes out now; when it does, `suppressed` is how many were left
   * out since the last one.
   */
  take(kind: string): { log: true; suppressed: number } | { log: false } {
    const now = this.now();
    const entry = this.last.get(kind);
    if (entry && now - entry.at < this.intervalMs) {
      entry.suppressed++;
      return { log: false };
    }
    const suppressed = entry?.suppressed ?? 0;
    if (!entry && this.last.size >= MAX_KINDS) this.last.clear();
    this.last.set(kind, { at: now, suppressed: 0 });
    return { log: true, suppressed };
  }
}
