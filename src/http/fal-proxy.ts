import type { IncomingMessage } from 'node:http';
import { APP_ID, MODEL_ID } from '../model.js';
import { REQUEST_ID_PATTERN } from '../schemas/requests.js';

/**
 * fal's browser proxy protocol (`@fal-ai/client` with `proxyUrl`): every call goes to one URL
 * with the fal URL it stands for in `x-fal-target-url`. The gateway maps an allowed target onto
 * its own fal-compatible route before routing, so a proxied call takes exactly the same path as
 * a direct one: authentication, the tenant's limits, validation, ownership. Any other target is
 * left on the proxy route, which answers 400 (after authentication).
 */
export const TARGET_HEADER = 'x-fal-target-url';
const QUEUE_HOST = 'queue.fal.run';
const REQUEST_PATH = new RegExp(`^/${APP_ID}/requests/([^/]+)(/status|/status/stream|/cancel)?$`);

/** The gateway path for an allowed proxy target, or undefined when the target is not allowed. */
export function gatewayPathFor(method: string | undefined, target: string): string | undefined {
  let url: URL;
  try {
    url = new URL(target);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'https:' || url.hostname !== QUEUE_HOST || url.port !== '' || url.username || url.password) return undefined;
  const path = url.pathname;
  if (path === `/${MODEL_ID}`) return method === 'POST' ? path + url.search : undefined;
  const match = REQUEST_PATH.exec(path);
  // The id must already be plain: no escapes to decode (a bad escape must not even be tried).
  if (!match || !REQUEST_ID_PATTERN.test(match[1]!)) return undefined;
  const allowed = match[2] === '/cancel' ? method === 'PUT' : method === 'GET';
  return allowed ? path + url.search : undefined;
}

/**
 * Fastify's rewriteUrl: proxied calls become calls of the gateway's own routes. It runs before
 * routing and error handling, so it must never throw: anything unexpected stays on the proxy
 * route (400 after authentication).
 */
export function proxyRewrite(proxyPath: string | undefined) {
  return (req: IncomingMessage): string => {
    const url = req.url ?? '/';
    if (!proxyPath) return url;
    const path = url.split('?')[0]!;
    // With or without a trailing slash, as the router takes every route (ignoreTrailingSlash).
    if (path !== proxyPath && path !== `${proxyPath}/`) return url;
    try {
      const target = req.headers[TARGET_HEADER];
      return (typeof target === 'string' && gatewayPathFor(req.method, target)) || url;
    } catch {
      return url;
    }
  };
}
