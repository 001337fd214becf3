import { readFile } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import { parse as parseDuration } from '@lukeed/ms';
import { z } from 'zod';

/**
 * The tenants file: who may call the gateway, with which keys (SHA-256 digests only, so the file
 * is not a secret) and which limits. A bad file stops start-up with one line per problem.
 */

const timeWindow = z
  .union([z.int().positive(), z.string()])
  .transform((value, ctx) => {
    // The parser reads units in any case, so "1M" would be a minute, to someone who meant a month.
    if (typeof value === 'string' && /^[\d.\s]+M$/.test(value.trim())) {
      ctx.addIssue({ code: 'custom', message: `"${value}" is ambiguous (a minute? a month?): write e.g. "1 minute" or "30 days"` });
      return z.NEVER;
    }
    const ms = typeof value === 'number' ? value : parseDuration(value.trim());
    // Under a millisecond would truncate to a window of 0.
    if (ms === undefined || !Number.isFinite(ms) || ms < 1) {
      ctx.addIssue({ code: 'custom', message: `"${value}" is not a duration: use milliseconds or e.g. "1 minute", "30s"` });
      return z.NEVER;
    }
    return Math.trunc(ms);
  })
  .describe('Milliseconds, or a duration such as "1 minute", "30s", "1 hour".');

function isOrigin(value: string): boolean {
  try {
    const url = new URL(value);
    return (url.protocol === 'https:' || url.protocol === 'http:') && url.origin === value;
  } catch {
    return false;
  }
}

const policy = z.strictObject({
  max: z.int().min(0).describe('Requests allowed per window.'),
  timeWindow,
});

const quota = z
  .strictObject({
    imagesPerDay: z.int().min(0).optional().describe('Images (num_images) a tenant may request per UTC day.'),
    imagesPerMonth: z.int().min(0).optional().describe('Images (num_images) a tenant may request per UTC calendar month.'),
  })
  .describe('Spending caps; a submit reserves its num_images, a cancel or an upstream 5xx gives them back.');

const limits = z.strictObject({
  submit: policy.optional(),
  read: policy.optional(),
  quota: quota.optional(),
  maxConcurrentJobs: z
    .int()
    .min(1)
    .optional()
    .describe('Jobs a tenant may have queued or running at once; a slot is freed when the gateway sees the job end.'),
});

export const DEFAULT_LIMITS = {
  submit: { max: 60, timeWindowMs: 60_000 },
  read: { max: 1_200, timeWindowMs: 60_000 },
} as const;

const tenantEntry = z.strictObject({
  id: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'must be 1-64 characters of letters, digits, ".", "_" or "-", starting with a letter or digit'),
  name: z.string().optional(),
  keys: z
    .array(z.string().regex(/^[0-9a-fA-F]{64}$/, 'must be the SHA-256 hex digest of a key (npm run key)'))
    .describe('SHA-256 hex digests of the keys; an empty list disables the tenant.'),
  limits: limits.optional(),
  allowedOrigins: z
    .array(z.string().refine(isOrigin, 'must be an origin such as https://app.example.com (scheme, host and port only)'))
    .optional()
    .describe('Browser origins allowed to call the gateway for this tenant (CORS). Unset: none.'),
  imageHosts: z
    .array(z.string().regex(/^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/, 'must be a host name, or *.domain for its subdomains'))
    .optional()
    .describe('Hosts image_url and loras[].path URLs may point at; data URIs and Hugging Face names are unaffected. Unset: any host.'),
});

export const TenantsFileSchema = z
  .strictObject({
    defaults: z.strictObject({ limits: limits.optional() }).optional(),
    tenants: z.array(tenantEntry),
  })
  .superRefine((file, ctx) => {
    const ids = new Set<string>();
    const owners = new Map<string, string>();
    file.tenants.forEach((tenant, i) => {
      if (ids.has(tenant.id)) ctx.addIssue({ code: 'custom', path: ['tenants', i, 'id'], message: `duplicate tenant id "${tenant.id}"` });
      ids.add(tenant.id);
      tenant.keys.forEach((digest, k) => {
        const owner = owners.get(digest.toLowerCase());
        if (owner !== undefined) {
          ctx.addIssue({ code: 'custom', path: ['tenants', i, 'keys', k], message: `the same key digest is already listed for tenant "${owner}"` });
        }
        owners.set(digest.toLowerCase(), tenant.id);
      });
    });
  });

export interface RateLimitPolicy {
  max: number;
  timeWindowMs: number;
}

export interface Quota {
  imagesPerDay?: number;
  imagesPerMonth?: number;
}

export interface Tenant {
  id: string;
  name?: string;
  keyDigests: string[];
  limits: {
    submit: RateLimitPolicy;
    read: RateLimitPolicy;
    /** Images per UTC day / month; undefined: no cap. */
    quota?: Quota;
    /** Jobs queued or running at once; undefined: no cap. */
    maxConcurrentJobs?: number;
  };
  /** Hosts the model may fetch inputs from; undefined: any. */
  imageHosts?: string[];
  /** Browser origins allowed to call for this tenant (CORS); undefined: none. */
  allowedOrigins?: string[];
}

export class TenantsFileError extends Error {
  constructor(readonly file: string, readonly problems: string[]) {
    super(`Invalid tenants file ${file}:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'TenantsFileError';
  }
}

type Policy = z.infer<typeof policy>;
const toPolicy = (p: Policy | undefined, fallback: RateLimitPolicy): RateLimitPolicy =>
  p ? { max: p.max, timeWindowMs: p.timeWindow } : fallback;

/** Validates parsed JSON and applies defaults. */
export function parseTenants(json: unknown, file = '(inline)'): Tenant[] {
  const result = TenantsFileSchema.safeParse(json);
  if (!result.success) {
    throw new TenantsFileError(file, result.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`));
  }
  const defaults = {
    submit: toPolicy(result.data.defaults?.limits?.submit, DEFAULT_LIMITS.submit),
    read: toPolicy(result.data.defaults?.limits?.read, DEFAULT_LIMITS.read),
  };
  const defaultQuota = result.data.defaults?.limits?.quota;
  const defaultConcurrency = result.data.defaults?.limits?.maxConcurrentJobs;
  return result.data.tenants.map((t) => {
    const quota = pickQuota(t.limits?.quota ?? defaultQuota);
    const maxConcurrentJobs = t.limits?.maxConcurrentJobs ?? defaultConcurrency;
    return {
      id: t.id,
      ...(t.name !== undefined ? { name: t.name } : {}),
      keyDigests: t.keys.map((k) => k.toLowerCase()),
      ...(t.imageHosts ? { imageHosts: t.imageHosts.map((h) => h.toLowerCase()) } : {}),
      ...(t.allowedOrigins ? { allowedOrigins: t.allowedOrigins } : {}),
      limits: {
        submit: toPolicy(t.limits?.submit, defaults.submit),
        read: toPolicy(t.limits?.read, defaults.read),
        ...(quota ? { quota } : {}),
        ...(maxConcurrentJobs !== undefined ? { maxConcurrentJobs } : {}),
      },
    };
  });
}

/** A quota with at least one cap, without undefined members; undefined when it caps nothing. */
function pickQuota(q: z.infer<typeof quota> | undefined): Quota | undefined {
  if (!q || (q.imagesPerDay === undefined && q.imagesPerMonth === undefined)) return undefined;
  return {
    ...(q.imagesPerDay !== undefined ? { imagesPerDay: q.imagesPerDay } : {}),
    ...(q.imagesPerMonth !== undefined ? { imagesPerMonth: q.imagesPerMonth } : {}),
  };
}

/** Why the file cannot be read, with the path it was looked for at (TENANTS_FILE may be relative). */
export function unreadable(file: string, err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  const where = resolve(file);
  const from = isAbsolute(file) ? '' : ` (${file} from the working directory ${process.cwd()})`;
  if (code === 'ENOENT') return `cannot be read: ENOENT, there is no file at ${where}${from}`;
  if (code === 'EACCES' || code === 'EPERM') return `cannot be read: ${code}, this process may not read ${where}${from}`;
  if (code === 'EISDIR') return `cannot be read: EISDIR, ${where} is a directory; name the file in it`;
  return `cannot be read: ${code ?? String(err)} (${where})`;
}

export async function loadTenantsFile(file: string): Promise<Tenant[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new TenantsFileError(file, [unreadable(file, err)]);
  }
  return parseTenantsText(text, file);
}

/** Parses the file's text (JSON), validates it and applies defaults. */
export function parseTenantsText(text: string, file: string): Tenant[] {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new TenantsFileError(file, [`is not valid JSON: ${jsonErrorAt(text)}`]);
  }
  return parseTenants(json, file);
}

/** Characters of a word a JSON parser may have taken for the start of a literal. */
const WORD = /[\w$-]/;

/**
 * Why a text is not JSON and where, as "line L, column C", in words that never quote it. V8's
 * message for an unexpected token quotes the text around it, and a tenants file may hold a key
 * pasted by mistake: that must not reach the logs. Such a message gives no position, so the
 * token is found by bisection: a prefix that holds it fails the same way, a shorter one only
 * for being cut short.
 */
export function jsonErrorAt(text: string): string {
  const messageOf = (candidate: string): string | undefined => {
    try {
      JSON.parse(candidate);
      return undefined;
    } catch (err) {
      return (err as Error).message;
    }
  };
  const message = messageOf(text) ?? '';
  const position = /^(.*?)(?: in JSON)? at position (\d+)/.exec(message);
  if (position) return `${position[1]} (line ${lineColumn(text, Number(position[2]))})`;
  if (!message.startsWith('Unexpected token')) return 'the text ends too early';
  let low = 1;
  let high = text.length;
  while (low < high) {
    const mid = (low + high) >> 1;
    if (messageOf(text.slice(0, mid))?.startsWith('Unexpected token')) high = mid;
    else low = mid + 1;
  }
  // V8 stops inside a word it took for a literal (`fgw_…` looks like `false` up to its "g"):
  // point at the word's start.
  let at = low - 1;
  while (at > 0 && WORD.test(text[at - 1]!) && WORD.test(text[at]!)) at--;
  return `unexpected character (line ${lineColumn(text, at)})`;
}

function lineColumn(text: string, index: number): string {
  const before = text.slice(0, index);
  const line = before.split('\n').length;
  return `${line}, column ${index - before.lastIndexOf('\n')}`;
}
