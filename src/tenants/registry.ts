import { hash } from 'node:crypto';
import type { Tenant } from './tenants-file.js';

/** SHA-256 hex digest of a key: the only form in which keys are stored. */
export function digestKey(key: string): string {
  // One-shot crypto.hash: no Hash object per call (keys are hashed on every request).
  return hash('sha256', key, 'hex');
}

/**
 * Finds the tenant a key belongs to. Keys are never compared as strings: the presented key is
 * hashed and the digest looked up, so how long a lookup takes says nothing about how much of a
 * presented key matches a real one (an attacker cannot steer the digest's bytes).
 */
export class TenantRegistry {
  private readonly byDigest = new Map<string, Tenant>();
  private readonly byId = new Map<string, Tenant>();
  private readonly origins = new Set<string>();

  constructor(readonly tenants: readonly Tenant[]) {
    for (const tenant of tenants) {
      this.byId.set(tenant.id, tenant);
      for (const digest of tenant.keyDigests) this.byDigest.set(digest, tenant);
      for (const origin of tenant.allowedOrigins ?? []) this.origins.add(origin);
    }
  }

  findByKey(key: string): Tenant | undefined {
    return this.byDigest.get(digestKey(key));
  }

  findById(id: string): Tenant | undefined {
    return this.byId.get(id);
  }

  /** Whether any tenant allows this browser origin (for preflights, which carry no credentials). */
  allowsOrigin(origin: string): boolean {
    return this.origins.has(origin);
  }
}
