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

/** The longest prefix a data URI of an image gets here (`data:image/jpeg;base64,`). */
const DATA_URI_PREFIX_BYTES = 'data:image/jpeg;base64,'.length;

/** The data URI of a file of `fileBytes`: base64 makes it 4/3 of the file, plus its prefix. */
export const dataUriBytes = (fileBytes: number) => DATA_URI_PREFIX_BYTES + Math.ceil(fileBytes / 3) * 4;

/** The largest file whose data URI fits in `uriBytes` (the inverse of dataUriBytes). */
export const largestFileFor = (uriBytes: number) => Math.floor((uriBytes - DATA_URI_PREFIX_BYTES) / 4) * 3;

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
