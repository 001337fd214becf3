import { createHash, timingSafeEqual } from 'node:crypto';
import type { Tenant } from './tenants-file.js';

/** SHA-256 hex digest of a key: the only form in which keys are stored. */
export function digestKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

/**
 * Finds the tenant a key belongs to. The lookup is by digest, so the time it takes does not
 * depend on how much of a presented key matches a real one; the final comparison is
 * constant-time all the same.
 */
export class TenantRegistry {
  private readonly byDigest = new Map<string, { tenant: Tenant; digest: Buffer }>();

  constructor(readonly tenants: readonly Tenant[]) {
    for (const tenant of tenants) {
      for (const digest of tenant.keyDigests) {
        this.byDigest.set(digest, { tenant, digest: Buffer.from(digest, 'hex') });
      }
    }
  }

  findByKey(key: string): Tenant | undefined {
    const digest = digestKey(key);
    const entry = this.byDigest.get(digest);
    if (!entry) return undefined;
    return timingSafeEqual(entry.digest, Buffer.from(digest, 'hex')) ? entry.tenant : undefined;
  }

  get size(): number {
    return this.tenants.length;
  }
}
