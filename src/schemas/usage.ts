import { z } from 'zod';

/** GET /v1/usage: query and answer. */

const day = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}$/, { error: 'must be a UTC day as YYYY-MM-DD', abort: true })
  .refine((value) => !Number.isNaN(Date.parse(`${value}T00:00:00Z`)) && new Date(`${value}T00:00:00Z`).toISOString().startsWith(value), {
    error: 'must be a real calendar day (YYYY-MM-DD)',
  });

export const UsageQuery = z.object({
  from: day.optional().meta({ description: 'First UTC day, inclusive. Default: the first day of the current UTC month.', examples: ['2026-11-01'] }),
  to: day.optional().meta({ description: 'Last UTC day, inclusive. Default: today (UTC).', examples: ['2026-11-24'] }),
  tenant: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, { error: 'must be a tenant id' })
    .optional()
    .meta({ description: 'With ADMIN_TOKEN only: one tenant instead of all.' }),
});

const counters = {
  submitted: z.int().meta({ description: 'Jobs queued upstream.' }),
  images: z.int().meta({ description: 'Images requested (num_images) by those jobs.' }),
  completed: z.int().meta({ description: 'Jobs seen finishing with output.' }),
  failed: z.int().meta({ description: 'Jobs seen finishing with an error (e.g. the model rejected the input).' }),
  cancelled: z.int().meta({ description: 'Jobs cancelled through the gateway.' }),
  inference_seconds: z.number().meta({ description: 'Sum of metrics.inference_time of the finished jobs.' }),
};

export const UsageCounters = z.object(counters);
export const UsageDay = z.object({ day: z.string().meta({ description: 'UTC day (YYYY-MM-DD).' }), ...counters });

const QuotaWindowState = z.object({
  limit: z.int(),
  used: z.int(),
  remaining: z.int(),
  resets_at: z.string().meta({ description: 'ISO 8601 time the window resets (UTC).' }),
});

export const TenantUsage = z.object({
  tenant_id: z.string(),
  days: z.array(UsageDay).meta({ description: 'One entry per UTC day with any activity, oldest first.' }),
  totals: UsageCounters,
  quota: z
    .object({ day: QuotaWindowState.optional(), month: QuotaWindowState.optional() })
    .optional()
    .meta({ description: 'Where the tenant stands against its image quota now (tenant view, when a quota is set).' }),
  concurrency: z
    .object({ limit: z.int(), in_use: z.int() })
    .optional()
    .meta({ description: 'Jobs queued or running now against maxConcurrentJobs (tenant view, when set).' }),
});

export const UsageReport = z
  .object({
    from: z.string(),
    to: z.string(),
    tenants: z.array(TenantUsage).meta({ description: 'The calling tenant, or with ADMIN_TOKEN every tenant with activity (or the one asked for).' }),
  })
  .meta({ id: 'UsageReport', description: 'Per-tenant usage by UTC day, counted by the gateway across replicas.' });

export type UsageReport = z.infer<typeof UsageReport>;
export type TenantUsage = z.infer<typeof TenantUsage>;
