import { randomUUID } from 'node:crypto';
import { errors as joseErrors, jwtVerify, SignJWT } from 'jose';

export const MIN_TOKEN_TTL_SECONDS = 60;
export const MAX_TOKEN_TTL_SECONDS = 3_600;
export const DEFAULT_TOKEN_TTL_SECONDS = 900;

/** A JWT's shape: three base64url parts, the header starting with `{"`. */
export const looksLikeToken = (value: string) => /^eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(value);

/**
 * Short-lived browser tokens: a JWT (HS256 with TOKEN_SECRET) naming a tenant, so a frontend
 * never holds a long-lived key. Verified from the secret alone, without any store lookup; a
 * token carries the tenant's limits and ownership because it resolves to the tenant itself.
 */
export class TokenIssuer {
  private readonly key: Uint8Array;

  /**
   * @param audience names this deployment (PUBLIC_BASE_URL), so a deployment sharing the secret
   * by mistake does not accept another's tokens.
   */
  constructor(
    secret: string,
    private readonly now: () => number = Date.now,
    private readonly audience = 'fal-gateway',
  ) {
    this.key = new TextEncoder().encode(secret);
  }

  async issue(tenantId: string, ttlSeconds: number): Promise<{ token: string; expiresAt: Date }> {
    const issuedAt = Math.floor(this.now() / 1000);
    const expiresAt = issuedAt + ttlSeconds;
    const token = await new SignJWT({ scope: 'browser' })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setSubject(tenantId)
      .setIssuedAt(issuedAt)
      .setExpirationTime(expiresAt)
      .setJti(randomUUID())
      .setAudience(this.audience)
      .sign(this.key);
    return { token, expiresAt: new Date(expiresAt * 1000) };
  }

  /**
   * The tenant id a valid, unexpired token names, or `expired` for a token of this deployment
   * (signature and audience checked) whose time is up, so a page can be told to get a new one;
   * undefined for anything else.
   */
  async verify(token: string): Promise<{ tenantId: string } | 'expired' | undefined> {
    try {
      const { payload } = await jwtVerify(token, this.key, {
        algorithms: ['HS256'],
        currentDate: new Date(this.now()),
        requiredClaims: ['sub', 'exp'],
        audience: this.audience,
      });
      return payload.scope === 'browser' && payload.sub !== undefined ? { tenantId: payload.sub } : undefined;
    } catch (err) {
      // jose checks the signature and the audience before the expiry: only our own tokens get here.
      return err instanceof joseErrors.JWTExpired && err.payload.scope === 'browser' ? 'expired' : undefined;
    }
  }
}
