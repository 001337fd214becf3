import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

/**
 * The IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers-10): `RateLimit-Policy`
 * names each policy that applies to a request with its quota (`q`), window (`w`, seconds) and
 * unit (`qu`); `RateLimit` gives what is left of each (`r`) and when it resets (`t`, seconds).
 * Sent next to the `x-ratelimit-*` headers, which only describe the request-rate policy.
 */
export interface PolicyField {
  /** Policy name: submit, read, images-day, images-month, concurrency. */
  name: string;
  quota: number;
  remaining: number;
  /** Seconds until the window resets; absent for concurrency (it frees as jobs end). */
  resetSeconds?: number;
  windowSeconds?: number;
  unit?: 'requests' | 'images' | 'concurrent-requests';
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The policies reported for this request's answer (see reportPolicy). */
    rateLimitFields: PolicyField[] | null;
  }
}

/** Declares the request field the policies are kept in (on the root instance, before any route). */
export function decorateRateLimitFields(app: FastifyInstance): void {
  if (!app.hasRequestDecorator('rateLimitFields')) app.decorateRequest('rateLimitFields', null);
}

/** Adds (or replaces, by name) a policy's state for this request's answer. */
export function reportPolicy(request: FastifyRequest, field: PolicyField): void {
  const list = (request.rateLimitFields ??= []);
  const at = list.findIndex((f) => f.name === field.name);
  if (at >= 0) list[at] = field;
  else list.push(field);
}

/** Writes the two fields onto the reply (an onSend step); nothing when no policy was reported. */
export function writeRateLimitFields(request: FastifyRequest, reply: FastifyReply): void {
  const list = request.rateLimitFields;
  if (!list || list.length === 0) return;
  reply.header(
    'ratelimit-policy',
    list
      .map((f) => `"${f.name}";q=${f.quota}${f.windowSeconds !== undefined ? `;w=${f.windowSeconds}` : ''}${f.unit && f.unit !== 'requests' ? `;qu="${f.unit}"` : ''}`)
      .join(', '),
  );
  reply.header(
    'ratelimit',
    list.map((f) => `"${f.name}";r=${Math.max(0, f.remaining)}${f.resetSeconds !== undefined ? `;t=${Math.max(0, f.resetSeconds)}` : ''}`).join(', '),
  );
}
