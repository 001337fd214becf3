import type { FalValidationEntry } from '../errors.js';
import { parseHttpUrl, type ModelInput } from '../schemas/model-input.js';
import type { Tenant } from './tenants-file.js';

/**
 * Rules on the input beyond the model's schema, set by the operator: how large an inline image
 * may be, and (per tenant) which hosts the model may be asked to fetch from.
 */
export interface InputPolicy {
  maxDataUriBytes: number;
}

/** `*.example.com` matches subdomains of example.com; anything else matches exactly. */
export function hostAllowed(host: string, patterns: readonly string[]): boolean {
  const name = host.toLowerCase();
  return patterns.some((pattern) => {
    const p = pattern.toLowerCase();
    return p.startsWith('*.') ? name.endsWith(p.slice(1)) && name.length > p.length - 1 : name === p;
  });
}


export function checkInputPolicy(input: ModelInput, tenant: Tenant, policy: InputPolicy): FalValidationEntry[] {
  const problems: FalValidationEntry[] = [];
  // The scheme in any case, as the schema takes it (`DATA:image/png;...` is a data URI too).
  if (input.image_url.length > policy.maxDataUriBytes && /^data:/i.test(input.image_url)) {
    problems.push({
      loc: ['body', 'image_url'],
      msg: `image_url data URI is ${input.image_url.length} bytes; the limit is ${policy.maxDataUriBytes}: send an http(s) URL for large images`,
      type: 'string_too_long',
    });
  }
  const allowed = tenant.imageHosts;
  if (allowed) {
    const check = (value: string, loc: Array<string | number>, field: string) => {
      const host = parseHttpUrl(value)?.hostname;
      if (host !== undefined && !hostAllowed(host, allowed)) {
        problems.push({ loc, msg: `${field} host "${host}" is not allowed for this tenant (allowed: ${allowed.join(', ')})`, type: 'value_error' });
      }
    };
    check(input.image_url, ['body', 'image_url'], 'image_url');
    input.loras?.forEach((lora, i) => check(lora.path, ['body', 'loras', i, 'path'], 'loras[].path'));
  }
  return problems;
}
