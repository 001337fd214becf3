import type { FastifyInstance, FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { utcDay, type AccountingStore, type QuotaState, type UsageCounters, type UsageRow } from '../accounting/accounting-store.js';
import { errors, RequestValidationError } from '../errors.js';
import { bearerMatches, digestSecret } from '../http/bearer.js';
import { ErrorEnvelope } from '../schemas/error.js';
import { UsageQuery, UsageReport, type TenantUsage } from '../schemas/usage.js';
import { decorateAuth, tenantAuthentication, tenantOf, type AuthOptions } from '../tenants/auth.js';
import type { Tenant } from '../tenants/tenants-file.js';

export interface UsageRouteDeps {
  accounting: AccountingStore;
  auth: AuthOptions;
  readLimit: onRequestHookHandler;
  adminToken: string | undefined;
  security: Array<Record<string, string[]>>;
}

/** Longest range one request may ask for (days). */
export const MAX_USAGE_DAYS = 366;

const ZERO: UsageCounters = { submitted: 0, images: 0, completed: 0, failed: 0, cancelled: 0, inferenceSeconds: 0 };
const round3 = (n: number) => Math.round(n * 1000) / 1000;

function wire(c: UsageCounters) {
  return {
    submitted: c.submitted,
    images: c.images,
    completed: c.completed,
    failed: c.failed,
    cancelled: c.cancelled,
    inference_seconds: round3(c.inferenceSeconds),
  };
}

function tenantReport(tenantId: string, rows: UsageRow[]): TenantUsage {
  const totals = { ...ZERO };
  for (const row of rows) {
    for (const key of Object.keys(ZERO) as Array<keyof UsageCounters>) totals[key] += row[key];
  }
  return { tenant_id: tenantId, days: rows.map((row) => ({ day: row.day, ...wire(row) })), totals: wire(totals) };
}

const storeDown = (err: unknown): never => {
  throw new errors.StoreUnavailable({ cause: err });
};

const quotaWire = (q: QuotaState) => ({ limit: q.limit, used: q.used, remaining: Math.max(0, q.limit - q.used), resets_at: new Date(q.resetsAt).toISOString() });

/**
 * GET /v1/usage: what a tenant used per UTC day (jobs, images, outcomes, inference seconds) and
 * where it stands against its quota and concurrency limit. The operators' ADMIN_TOKEN sees every
 * tenant. Counted in the shared store, so every replica answers the same.
 */
export async function usageRoutes(app: FastifyInstance, deps: UsageRouteDeps): Promise<void> {
  await app.register(async (scope) => {
    decorateAuth(scope);
    const admin = deps.adminToken === undefined ? undefined : digestSecret(deps.adminToken);
    const authenticate = tenantAuthentication(deps.auth);
    const isAdmin = (request: FastifyRequest) => admin !== undefined && bearerMatches(request.headers.authorization, admin);
    scope.withTypeProvider<ZodTypeProvider>().get(
      '/v1/usage',
      {
        onRequest: async function (this: FastifyInstance, request: FastifyRequest, reply: FastifyReply) {
          if (isAdmin(request)) return;
          await authenticate(request, reply);
          await deps.readLimit.call(this, request, reply, () => undefined);
        },
        schema: {
          operationId: 'getUsage',
          tags: ['Operations'],
          summary: 'Usage per tenant and UTC day',
          description:
            'Jobs submitted, images requested, jobs completed, failed and cancelled, and inference seconds, per UTC day, counted by the gateway. A tenant key sees its own usage, quota and concurrency; the operators\' `ADMIN_TOKEN` (as `Authorization: Bearer`) sees every tenant, or one with `?tenant=`. At most 366 days per request. Counts against the `read` limit (not for the admin token).',
          // The admin token is a bearer token too: Swagger UI's bearerAuth carries either.
          security: deps.security,
          querystring: UsageQuery,
          response: {
            200: UsageReport,
            401: ErrorEnvelope.describe('Missing or unknown API key'),
            422: ErrorEnvelope.describe('Invalid range or tenant'),
            429: ErrorEnvelope.describe('Rate limit exceeded (see Retry-After)'),
            503: ErrorEnvelope.describe('The usage store is unavailable'),
          },
        },
      },
      async (request) => {
        const now = Date.now();
        const today = utcDay(now);
        const to = request.query.to ?? today;
        const from = request.query.from ?? `${today.slice(0, 8)}01`;
        const days = (Date.parse(`${to}T00:00:00Z`) - Date.parse(`${from}T00:00:00Z`)) / 86_400_000 + 1;
        if (days < 1) throw new RequestValidationError([{ loc: ['query', 'from'], msg: 'from must not be after to', type: 'value_error' }]);
        if (days > MAX_USAGE_DAYS) {
          throw new RequestValidationError([{ loc: ['query', 'to'], msg: `at most ${MAX_USAGE_DAYS} days per request`, type: 'value_error' }]);
        }
        if (request.tenant === null) {
          const rows = await deps.accounting.usage(request.query.tenant, from, to).catch(storeDown);
          const byTenant = new Map<string, UsageRow[]>();
          for (const row of rows) byTenant.set(row.tenantId, [...(byTenant.get(row.tenantId) ?? []), row]);
          // Every tenant in the tenants file is listed (with zeros when it used nothing), and so is
          // any tenant the store has counts for (one removed since, say).
          const ids = request.query.tenant !== undefined ? [request.query.tenant] : deps.auth.registry().tenants.map((t) => t.id);
          for (const id of ids) if (!byTenant.has(id)) byTenant.set(id, []);
          const tenants = [...byTenant].sort(([a], [b]) => (a < b ? -1 : 1)).map(([id, list]) => tenantReport(id, list));
          return { from, to, tenants };
        }
        const tenant: Tenant = tenantOf(request);
        if (request.query.tenant !== undefined && request.query.tenant !== tenant.id) {
          throw new RequestValidationError([{ loc: ['query', 'tenant'], msg: 'only the operators\' admin token can read another tenant\'s usage', type: 'value_error' }]);
        }
        const report = tenantReport(tenant.id, await deps.accounting.usage(tenant.id, from, to).catch(storeDown));
        const { quota, maxConcurrentJobs } = tenant.limits;
        if (quota) {
          const windows = await deps.accounting.quotaState(tenant.id, quota, now).catch(storeDown);
          report.quota = Object.fromEntries(windows.map((w) => [w.window, quotaWire(w)]));
        }
        if (maxConcurrentJobs !== undefined) {
          report.concurrency = { limit: maxConcurrentJobs, in_use: await deps.accounting.slotsInUse(tenant.id).catch(storeDown) };
        }
        return { from, to, tenants: [report] };
      },
    );
  });
}
