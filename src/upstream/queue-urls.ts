/**
 * Replaces fal's queue URL fields with the gateway's own routes. Only these three top-level
 * fields are touched; everything else in an upstream body passes untouched.
 */
/** Characters encodeURIComponent leaves as they are (fal's request ids are made of these). */
const UNRESERVED = /^[A-Za-z0-9._~-]*$/;

/** `requestsBase`: where the gateway serves jobs, e.g. `https://gw.example/v1/requests` (see queueUrlBase). */
export function gatewayQueueUrls(requestsBase: string, requestId: string) {
  const base = `${requestsBase}/${UNRESERVED.test(requestId) ? requestId : encodeURIComponent(requestId)}`;
  return { status_url: `${base}/status`, response_url: base, cancel_url: `${base}/cancel` };
}

export function rewriteQueueUrls(
  body: Record<string, unknown>,
  requestsBase: string,
  requestId: string,
  { always = false } = {},
): void {
  const urls = gatewayQueueUrls(requestsBase, requestId);
  for (const field of ['status_url', 'response_url', 'cancel_url'] as const) {
    if (always || field in body) body[field] = urls[field];
  }
}
