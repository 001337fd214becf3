import { createHash, timingSafeEqual } from 'node:crypto';

const BEARER = /^Bearer[ \t]+([^\s]+)[ \t]*$/i;

/** SHA-256 of a secret: what operator tokens are compared as. */
export const digestSecret = (value: string): Buffer => createHash('sha256').update(value, 'utf8').digest();

/**
 * Checks `Authorization: Bearer <token>` against an operator secret's digest in constant time:
 * both sides are hashed first, so neither the comparison nor its length check reveals how much
 * of the token was right.
 */
export function bearerMatches(header: string | undefined, expected: Buffer): boolean {
  const presented = typeof header === 'string' ? BEARER.exec(header)?.[1] : undefined;
  // A missing token is compared too, so every refusal does the same work.
  const matches = timingSafeEqual(digestSecret(presented ?? ''), expected);
  return presented !== undefined && matches;
}
