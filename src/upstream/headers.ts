import type { IncomingHttpHeaders } from 'node:http';

/**
 * The only caller headers that may travel upstream: fal's queue controls. Never the caller's
 * Authorization, cookies, forwarding or hop-by-hop headers.
 */
export const FORWARDED_REQUEST_HEADERS = [
  'x-fal-queue-priority',
  'x-fal-runner-hint',
  'x-fal-request-timeout',
  'x-fal-object-lifecycle-preference',
  'x-fal-store-io',
  'x-fal-no-retry',
] as const;

/** Upstream response headers a caller may see. */
export const RELAYED_RESPONSE_HEADERS = [
  'retry-after',
  'x-fal-request-id',
  'x-fal-error-type',
  'x-fal-request-timeout-type',
] as const;

export function pickForwardedHeaders(headers: IncomingHttpHeaders): Record<string, string> {
  const picked: Record<string, string> = {};
  for (const name of FORWARDED_REQUEST_HEADERS) {
    const value = headers[name];
    if (typeof value === 'string') picked[name] = value;
  }
  return picked;
}

export function pickRelayedHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string> {
  const picked: Record<string, string> = {};
  for (const name of RELAYED_RESPONSE_HEADERS) {
    const value = headers[name];
    if (typeof value === 'string') picked[name] = value;
  }
  return picked;
}
