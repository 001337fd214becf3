import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';

/**
 * fal's credential check: `Authorization: Key <token>` (or `Bearer <token>` for a reseller).
 * Only one scheme is accepted so a gateway configured with the wrong scheme fails loudly here
 * instead of only against production.
 */
export function authHook(token: string, scheme: 'Key' | 'Bearer') {
  // Compare digests so the comparison time says nothing about the token's length or prefix.
  const digest = (value: string) => createHash('sha256').update(value).digest();
  const expected = digest(token);

  return async (request: FastifyRequest, reply: FastifyReply) => {
    // Generated files are public, as fal's CDN URLs are: browsers load them without credentials.
    if (request.url.startsWith('/files/')) return;
    const header = request.headers.authorization;
    if (header === undefined || header.trim() === '') {
      return reply.code(401).send({ detail: 'Missing authorization header' });
    }
    const match = /^(\S+)\s+(\S+)\s*$/.exec(header.trim());
    // Auth schemes are case-insensitive (RFC 9110); the token is not.
    const valid =
      match !== null &&
      match[1]!.toLowerCase() === scheme.toLowerCase() &&
      timingSafeEqual(digest(match[2]!), expected);
    if (!valid) return reply.code(401).send({ detail: 'Invalid authentication credentials' });
  };
}
