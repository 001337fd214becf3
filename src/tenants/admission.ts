import { randomUUID } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import type { AccountingStore, QuotaState, QuotaTicket, QuotaWindow } from '../accounting/accounting-store.js';
import { errors } from '../errors.js';
import { PENDING_SLOT } from '../jobs/lifecycle.js';
import type { GatewayMetrics } from '../metrics.js';
import { reportPolicy } from './ratelimit-fields.js';
import type { Tenant } from './tenants-file.js';

/** Retry-After of a concurrency refusal: about how often a running job's end is noticed. */
const CONCURRENCY_RETRY_SECONDS = 5;

/**
 * What a submit holds before it is sent upstream: its images charged to the tenant's quota and
 * a concurrency slot. Exactly one of `queued`, `notQueued` or `unknown` is called afterwards.
 */
export interface Admission {
  /** The quota windows the images were charged to (empty without a quota). */
  readonly charged: readonly QuotaWindow[];
  /** When they were charged (epoch ms; absent when nothing was): their UTC day and month are the ones a refund goes back to. */
  readonly chargedAt?: number;
  /** The job exists upstream as `requestId`: the slot now follows it until it ends. */
  queued(requestId: string): Promise<void>;
  /** Nothing was queued (refused upstream, or never sent): everything is given back. */
  notQueued(): Promise<void>;
  /** The job may exist but cannot be tracked: the slot is freed, the images stay charged. */
  unknown(): Promise<void>;
}

/** A tenant without a quota or a concurrency limit holds nothing: one shared admission, no store call. */
const NOTHING_HELD: Admission = Object.freeze({
  charged: Object.freeze([]),
  queued: async () => undefined,
  notQueued: async () => undefined,
  unknown: async () => undefined,
});

const storeDown = (metrics: GatewayMetrics | undefined, operation: string) => (err: unknown) => {
  metrics?.storeError('accounting', operation);
  throw new errors.StoreUnavailable({ cause: err });
};

/** Length of the window that ends at `resetsAt` (a UTC day, or the UTC calendar month before it), in seconds. */
function windowSeconds(window: QuotaState): number {
  if (window.window === 'day') return 86_400;
  const end = new Date(window.resetsAt);
  return Math.round((window.resetsAt - Date.UTC(end.getUTCFullYear(), end.getUTCMonth() - 1, 1)) / 1000);
}

function quotaField(window: QuotaState, now: number) {
  return {
    name: `images-${window.window}`,
    quota: window.limit,
    remaining: window.limit - window.used,
    resetSeconds: Math.ceil((window.resetsAt - now) / 1000),
    windowSeconds: windowSeconds(window),
    unit: 'images' as const,
  };
}

/**
 * Admits a submit of `images` images for the tenant: takes one of its concurrency slots and
 * reserves the images against its quota (both atomic across replicas), or refuses with 429 quota_exceeded /
 * concurrency_exceeded and the time to retry. A store that cannot answer refuses the submit
 * (503): a paid job is never queued uncounted.
 */
export async function admit(
  request: FastifyRequest,
  tenant: Tenant,
  images: number,
  accounting: AccountingStore,
  metrics: GatewayMetrics | undefined,
  now = Date.now(),
): Promise<Admission> {
  const caps = tenant.limits.quota;
  const max = tenant.limits.maxConcurrentJobs;
  if (!caps && max === undefined) return NOTHING_HELD;
  const log = (what: string) => (err: unknown) => request.log.error({ err: (err as Error).message, tenant: tenant.id }, what);

  // The concurrency slot first: a submit refused for concurrency must never hold images, even
  // for a moment. Reserved first, they made others' submits of the same instant (on any replica)
  // meet a spent quota, told to come back at midnight UTC instead of in a few seconds.
  let slot: string | undefined;
  const freeSlot = async () => {
    if (!slot) return;
    await accounting.releaseSlot(tenant.id, slot).catch(log('could not free a concurrency slot'));
  };
  if (max !== undefined) {
    const placeholder = `${PENDING_SLOT}${now}:${randomUUID()}`;
    const taken = await accounting.acquireSlot(tenant.id, placeholder, max, now).catch((err: unknown) => {
      // An acquire that timed out may still be carried out once a stalled Redis resumes, holding a
      // slot for a submit that was refused. The release goes out after it on the same connection,
      // so it runs after it too (freeing a slot never taken does nothing). Not awaited.
      accounting.releaseSlot(tenant.id, placeholder).catch(() => undefined);
      return storeDown(metrics, 'acquire_slot')(err);
    });
    reportPolicy(request, { name: 'concurrency', quota: max, remaining: max - taken.state.inUse, unit: 'concurrent-requests' });
    if (!taken.ok) {
      metrics?.rejected(tenant.id, 'concurrency');
      throw Object.assign(new errors.ConcurrencyExceeded(taken.state.inUse, max), {
        headers: { 'retry-after': String(CONCURRENCY_RETRY_SECONDS) },
      });
    }
    slot = placeholder;
  }

  let ticket: QuotaTicket | undefined;
  let reserved: readonly QuotaState[] = [];
  if (caps) {
    const reservation = await accounting.reserveImages(tenant.id, images, caps, now).catch(async (err: unknown) => {
      await freeSlot();
      return storeDown(metrics, 'reserve_images')(err);
    });
    for (const window of reservation.windows) reportPolicy(request, quotaField(window, now));
    if (!reservation.ok) {
      await freeSlot();
      const { exceeded } = reservation;
      metrics?.rejected(tenant.id, `quota_${exceeded.window}`);
      reportPolicy(request, quotaField(exceeded, now));
      // What could pass now (the least any capped window has left), each window's count, and
      // when this very submit fits (the window it overruns resets).
      const leftOf = (w: (typeof reservation.windows)[number]) => Math.max(0, w.limit - w.used);
      const left = Math.min(...reservation.windows.map(leftOf));
      const counts = reservation.windows.map((w) => `${leftOf(w)} of ${w.limit} per UTC ${w.window}`).join(' and ');
      const asked = `${images} image${images === 1 ? '' : 's'}`;
      const why =
        left === 0
          ? `this submit asks for ${asked} and none can be had now (${counts} left). Submit again from`
          : `this submit asks for ${asked} and ${left} can be had now (${counts} left). Ask for ${left} or fewer, or submit again from`;
      throw Object.assign(
        new errors.QuotaExceeded(why, new Date(exceeded.resetsAt).toISOString()),
        { headers: { 'retry-after': String(Math.max(1, Math.ceil((exceeded.resetsAt - now) / 1000))) } },
      );
    }
    ticket = reservation.ticket;
    reserved = reservation.windows;
  }
  /** Gives the images back, and the answer's RateLimit fields say so. */
  const refund = async () => {
    if (!ticket) return;
    await accounting.refundImages(ticket).catch(storeDown(metrics, 'refund_images'));
    const charged = ticket.charged ?? ['day', 'month'];
    for (const window of reserved) {
      if (charged.includes(window.window)) reportPolicy(request, quotaField({ ...window, used: Math.max(0, window.used - images) }, now));
    }
  };

  return {
    charged: ticket ? (ticket.charged ?? ['day', 'month']) : [],
    ...(ticket ? { chargedAt: now } : {}),
    queued: async (requestId) => {
      if (slot) await accounting.renameSlot(tenant.id, slot, requestId, Date.now()).catch(log('could not move a concurrency slot to its job'));
    },
    notQueued: async () => {
      await Promise.all([refund().catch(log('could not give back a quota reservation')), freeSlot()]);
    },
    unknown: freeSlot,
  };
}
