import type { FastifyInstance, onRequestHookHandler } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { errors } from '../errors.js';
import { addToRequestLine } from '../http/request-record.js';
import { ErrorEnvelope } from '../schemas/error.js';
import { presentedKey, tenantOf } from '../tenants/auth.js';
import { digestKey } from '../tenants/registry.js';
import { DEFAULT_TOKEN_TTL_SECONDS, MAX_TOKEN_TTL_SECONDS, MIN_TOKEN_TTL_SECONDS, type TokenIssuer } from '../tenants/tokens.js';

const TokenRequest = z
  .strictObject({
    ttl_seconds: z
      .int({ error: `ttl_seconds must be an integer between ${MIN_TOKEN_TTL_SECONDS} and ${MAX_TOKEN_TTL_SECONDS}` })
      .min(MIN_TOKEN_TTL_SECONDS, { error: `ttl_seconds must be an integer between ${MIN_TOKEN_TTL_SECONDS} and ${MAX_TOKEN_TTL_SECONDS}` })
      .max(MAX_TOKEN_TTL_SECONDS, { error: `ttl_seconds must be an integer between ${MIN_TOKEN_TTL_SECONDS} and ${MAX_TOKEN_TTL_SECONDS}` })
      .optional()
      .meta({ description: 'Lifetime of the token in seconds.', default: DEFAULT_TOKEN_TTL_SECONDS }),
  })
  // No body at all reaches validation as null.
  .nullish();

const TokenResponse = z
  .object({
    token: z.string().meta({ description: 'Send it as "Authorization: Bearer <token>".' }),
    token_type: z.literal('Bearer'),
    expires_in: z.int().meta({ description: 'Seconds until it expires.' }),
    expires_at: z.string().meta({ description: 'ISO 8601 expiry time.' }),
  })
  .meta({ id: 'BrowserToken', description: 'A short-lived token for a browser, bound to the calling tenant and to the key that minted it (revoking the key ends it).' });

/**
 * POST /v1/tokens: a backend holding a tenant key gets a short-lived token to hand to a browser.
 * The token acts as the tenant (its limits, its jobs) until it expires, and cannot mint more.
 */
export function tokenRoutes(app: FastifyInstance, deps: { tokens: TokenIssuer | undefined; limit: onRequestHookHandler; security: Array<Record<string, string[]>> }): void {
  app.withTypeProvider<ZodTypeProvider>().post(
    '/v1/tokens',
    {
      onRequest: deps.limit,
      schema: {
        operationId: 'createBrowserToken',
        tags: ['Browser access'],
        summary: 'Create a short-lived browser token',
        description: `For frontends that must not hold a key: the backend calls this with the tenant key and hands the token to the browser. Default lifetime ${DEFAULT_TOKEN_TTL_SECONDS} s, at most ${MAX_TOKEN_TTL_SECONDS} s. Counts against the \`read\` limit.`,
        security: deps.security,
        body: TokenRequest,
        response: {
          200: TokenResponse,
          401: ErrorEnvelope.describe('Missing or unknown API key'),
          403: ErrorEnvelope.describe('Called with a browser token: tokens cannot mint tokens'),
          422: ErrorEnvelope.describe('Invalid ttl_seconds'),
          429: ErrorEnvelope.describe('Rate limit exceeded (see Retry-After)'),
          501: ErrorEnvelope.describe('Tokens are not enabled (TOKEN_SECRET unset)'),
        },
      },
    },
    async (request) => {
      if (!deps.tokens) throw new errors.TokensDisabled();
      if (request.credential !== 'key') throw new errors.TokenCannotMint();
      const ttl = request.body?.ttl_seconds ?? DEFAULT_TOKEN_TTL_SECONDS;
      // Minted with a key (checked above): the token names it, so revoking the key ends the token.
      const { token, expiresAt } = await deps.tokens.issue(tenantOf(request).id, digestKey(presentedKey(request.headers)!), ttl);
      addToRequestLine(request, { tokenTtlSeconds: ttl });
      return { token, token_type: 'Bearer' as const, expires_in: ttl, expires_at: expiresAt.toISOString() };
    },
  );
}
