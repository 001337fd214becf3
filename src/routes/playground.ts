import { createHash } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { css } from '../playground/css.js';
import { html } from '../playground/html.js';
import { js } from '../playground/script.js';

/**
 * The playground's own policy: its script and stylesheet from the gateway, result images from
 * fal's file host (any http(s) origin: the host is fal's to choose), API calls to the gateway
 * only. No inline script or style, no plugins, no framing, no form posts elsewhere.
 */
export const PLAYGROUND_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data: http: https:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

interface Asset {
  url: string;
  type: string;
  body: string;
  etag: string;
}

const asset = (url: string, type: string, body: string): Asset => ({
  url,
  type,
  body,
  etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`,
});

const ASSETS: Asset[] = [
  asset('/playground', 'text/html; charset=utf-8', html),
  asset('/playground/app.js', 'text/javascript; charset=utf-8', js),
  asset('/playground/app.css', 'text/css; charset=utf-8', css),
];

/**
 * GET /playground: a small page to try the whole flow in a browser (key, image, prompt,
 * parameters, live progress, results, cancel), plus its script and stylesheet. Registered as
 * its own plugin, so its onSend hook (which replaces the API's `default-src 'none'` policy with
 * the page's) applies to these routes only.
 */
export async function playgroundRoutes(app: FastifyInstance): Promise<void> {
  app.addHook('onSend', async (_request, reply) => {
    reply.header('content-security-policy', PLAYGROUND_CSP);
  });
  for (const { url, type, body, etag } of ASSETS) {
    app.get(url, { schema: { hide: true } }, async (request, reply) => {
      reply.header('cache-control', 'no-cache').header('etag', etag);
      if (request.headers['if-none-match'] === etag) return reply.code(304).send();
      return reply.type(type).send(body);
    });
  }
}
