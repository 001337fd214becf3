import { ModelInput } from '../../src/schemas/model-input.js';

/**
 * The fuzz tests' oracle: what the gateway must answer to a submit body, decided from the bytes
 * alone with the model's zod schema (the specification, fal-queue-api.md §6), never by asking the
 * gateway's own code path.
 */

export type Verdict =
  /** More bytes than the body limit: 413. */
  | { kind: 'too_large' }
  /** Empty or only whitespace: no body, 400 invalid_json or 422 at loc [body]. */
  | { kind: 'empty' }
  /** Not JSON text (after UTF-8 decoding, leading BOM ignored): 400 invalid_json. */
  | { kind: 'not_json' }
  /** JSON with an own `__proto__` key, or `constructor: {prototype: …}`, anywhere: rejected (400 or 422). */
  | { kind: 'forbidden_key'; value: unknown }
  /** JSON the model schema rejects: 422 validation_error with these problems. */
  | { kind: 'invalid'; value: unknown; paths: ProblemPaths }
  /** JSON the model schema accepts: 200, forwarded upstream unchanged. */
  | { kind: 'valid'; value: unknown };

/** Where the schema found problems: `exact` must each be reported, any entry must lie in `allowed`. */
export interface ProblemPaths {
  /** Each problem's path (a union's own path, or an unknown key's full path). */
  required: string[];
  /** Every path an entry may point at: problems and the problems inside each union branch. */
  allowed: Set<string>;
}

type Issue = { code: string; path: PropertyKey[]; keys?: string[]; errors?: Issue[][] };

const key = (path: readonly PropertyKey[]) => JSON.stringify(path.map((p) => (typeof p === 'symbol' ? String(p) : p)));

function problemPaths(issues: readonly Issue[]): ProblemPaths {
  const required: string[] = [];
  const allowed = new Set<string>();
  const walk = (list: readonly Issue[], prefix: PropertyKey[], top: boolean) => {
    for (const issue of list) {
      const path = [...prefix, ...issue.path];
      const own = issue.code === 'unrecognized_keys' ? (issue.keys ?? []).map((k) => key([...path, k])) : [key(path)];
      for (const p of own) allowed.add(p);
      if (top) required.push(...own);
      for (const branch of issue.errors ?? []) walk(branch, path, false);
    }
  };
  walk(issues, [], true);
  return { required, allowed };
}

/** Own `__proto__`, or `constructor` holding an object with own `prototype`, at any depth (iterative: bodies may be deep). */
export function hasForbiddenKey(root: unknown): boolean {
  const stack: unknown[] = [root];
  while (stack.length > 0) {
    const node = stack.pop();
    if (node === null || typeof node !== 'object') continue;
    if (Object.hasOwn(node, '__proto__')) return true;
    const ctor = Object.hasOwn(node, 'constructor') ? (node as { constructor: unknown }).constructor : undefined;
    if (ctor !== null && typeof ctor === 'object' && Object.hasOwn(ctor, 'prototype')) return true;
    for (const k of Object.keys(node)) stack.push((node as Record<string, unknown>)[k]);
  }
  return false;
}

export function judge(bytes: Buffer, bodyLimit: number): Verdict {
  if (bytes.length > bodyLimit) return { kind: 'too_large' };
  let text = bytes.toString('utf8');
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  if (text.trim() === '') return { kind: 'empty' };
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { kind: 'not_json' };
  }
  if (hasForbiddenKey(value)) return { kind: 'forbidden_key', value };
  const result = ModelInput.safeParse(value);
  if (result.success) return { kind: 'valid', value };
  return { kind: 'invalid', value, paths: problemPaths(result.error.issues as unknown as Issue[]) };
}

/** JSON cannot carry -0 (JSON.stringify(-0) is "0"): compare numbers by value. */
export function withoutNegativeZero(value: unknown): unknown {
  if (Object.is(value, -0)) return 0;
  if (Array.isArray(value)) return value.map(withoutNegativeZero);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, withoutNegativeZero(v)]));
  }
  return value;
}

export const pathKey = key;
