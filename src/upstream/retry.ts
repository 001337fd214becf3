/**
 * Read retries: status and result are safe to ask again, a submit or a cancel is not.
 * Capped exponential backoff with full jitter; an upstream Retry-After wins when it fits.
 */
export const RETRYABLE_STATUS = new Set([429, 502, 503, 504]);
const RETRYABLE_ERRORS = new Set(['FGW_UPSTREAM_TIMEOUT', 'FGW_UPSTREAM_UNAVAILABLE', 'FGW_UPSTREAM_CONNECTION_ERROR']);

export interface RetryPolicy {
  retries: number;
  deadlineMs: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export function isRetryableError(err: unknown): boolean {
  return RETRYABLE_ERRORS.has((err as { code?: string })?.code ?? '');
}

/** Seconds (or an HTTP date) from a Retry-After header, as milliseconds. */
export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | undefined {
  if (typeof value !== 'string') return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

export function backoffDelay(attempt: number, policy: RetryPolicy, random = Math.random): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** attempt);
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}
