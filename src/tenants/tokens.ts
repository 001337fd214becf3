import { createHmac, randomUUID } from 'node:crypto';
import { errors as joseErrors, jwtVerify, SignJWT } from 'jose';

export const MIN_TOKEN_TTL_SECONDS = 60;
export const MAX_TOKEN_TTL_SECONDS = 3_600;
export const DEFAULT_TOKEN_TTL_SECONDS = 900;

/** A JWT's shape: three base64url parts, the header starting with `{"`. */
export const looksLikeToken = (value: string) => /^eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(value);

/** What a verified token says: its tenant, and which of the tenant's keys minted it. */
export interface VerifiedToken {
  tenantId: string;
  /**
   * The minting key's binding (see TokenIssuer.bindingOf); undefined for a token minted before
   * tokens named their key (at most an hour before the upgrade), which is taken until it expires.
   */
  keyBinding: string | undefined;
}

/**
 * Short-lived browser tokens: a JWT (HS256 with TOKEN_SECRET) naming a tenant, so a frontend
 * never holds a long-lived key. Verified from the secret alone, without any store lookup; a
 * token carries the tenant's limits and ownership because it resolves to the tenant itself.
 *
 * A token also names the key that minted it, as an HMAC of the key's digest under the secret
 * (claim `kb`): taking a key out of the tenants file (a leaked key, say) ends the tokens it
 * minted at once, not only when they expire. The claim says nothing of the key to whoever
 * reads the token: without the secret, it cannot be checked against a guess.
 */
export class TokenIssuer {
  private readonly key: Uint8Array;
  private readonly bindings = new Map<string, string>();

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

  /**
   * The binding of a key digest (SHA-256 hex, as the tenants file lists it): what a token minted
   * with that key carries. Memoised: the digests are the tenants file's, a bounded set.
   */
  bindingOf(keyDigest: string): string {
    let binding = this.bindings.get(keyDigest);
    if (binding === undefined) {
      binding = createHmac('sha256', this.key).update(`browser-token-key\u0000${keyDigest}`).digest('base64url').slice(0, 22);
      this.bindings.set(keyDigest, binding);
    }
    return binding;
  }

  /** A token for `tenantId`, minted with the key whose digest is `keyDigest`. */
  async issue(tenantId: string, keyDigest: string, ttlSeconds: number): Promise<{ token: string; expiresAt: Date }> {
    const issuedAt = Math.floor(this.now() / 1000);
    const expiresAt = issuedAt + ttlSeconds;
    const token = await new SignJWT({ scope: 'browser', kb: this.bindingOf(keyDigest) })
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
   * The tenant id (and minting key's binding) a valid, unexpired token names, or `expired` for a
   * token of this deployment (signature and audience checked) whose time is up, so a page can be
   * told to get a new one; undefined for anything else.
   */
  async verify(token: string): Promise<VerifiedToken | 'expired' | undefined> {
    try {
      const { payload } = await jwtVerify(token, this.key, {
        algorithms: ['HS256'],
        currentDate: new Date(this.now()),
        requiredClaims: ['sub', 'exp'],
        audience: this.audience,
      });
      if (payload.scope !== 'browser' || payload.sub === undefined || (payload.kb !== undefined && typeof payload.kb !== 'string')) return undefined;
      return { tenantId: payload.sub, keyBinding: payload.kb };
    } catch (err) {
      // jose checks the signature and the audience before the expiry: only our own tokens get here.
      return err instanceof joseErrors.JWTExpired && err.payload.scope === 'browser' ? 'expired' : undefined;
    }
  }
}
