import type { FastifySchemaCompiler } from 'fastify';
import type { z } from 'zod';
import { RequestValidationError, type FalValidationEntry } from '../errors.js';

/**
 * Validator compiler for zod route schemas that answers in fal's 422 dialect directly:
 * `loc` keeps typed path segments (array indexes stay numbers) and `type` follows the codes
 * FastAPI/pydantic use, so clients written for fal handle the gateway's errors unchanged.
 */

const LOCATION: Record<string, string> = {
  body: 'body',
  querystring: 'query',
  params: 'path',
  headers: 'header',
};

const TYPE_BY_EXPECTED: Record<string, string> = {
  string: 'string_type',
  number: 'float_type',
  int: 'int_type',
  boolean: 'bool_type',
  array: 'list_type',
  object: 'model_type',
};

interface SchemaNode {
  def: { type: string; shape?: Record<string, SchemaNode>; element?: SchemaNode; options?: SchemaNode[]; innerType?: SchemaNode };
  format?: string | null;
}

function unwrap(node: SchemaNode | undefined): SchemaNode | undefined {
  let current = node;
  while (current?.def.innerType && ['optional', 'nullable', 'default'].includes(current.def.type)) current = current.def.innerType;
  return current;
}

/** The schema that validated `path`, so an issue can be described by what was expected there. */
function schemaAt(root: SchemaNode, path: readonly PropertyKey[]): SchemaNode | undefined {
  let current: SchemaNode | undefined = root;
  for (const key of path) {
    const node = unwrap(current);
    if (!node) return undefined;
    if (node.def.type === 'object') current = node.def.shape?.[key as string];
    else if (node.def.type === 'array') current = node.def.element;
    else if (node.def.type === 'union') {
      current = node.def.options?.map(unwrap).find((o) => o?.def.type === 'object' && o.def.shape && key in o.def.shape)?.def.shape?.[key as string];
    } else return undefined;
  }
  return unwrap(current);
}

/**
 * What an invalid_type issue expected, with integers told apart: zod reports an integer field
 * given a non-number as expecting a "number" (pydantic says int_type there, not float_type).
 */
export function expectedType(root: z.ZodType, expected: string, path: readonly PropertyKey[]): string {
  return expected === 'number' && schemaAt(root as unknown as SchemaNode, path)?.format?.includes('int') ? 'int' : expected;
}

function typeOf(issue: z.core.$ZodIssue, root: z.ZodType): string {
  switch (issue.code) {
    case 'invalid_type': {
      if (issue.input === undefined) return 'missing';
      const expected = expectedType(root, issue.expected, issue.path);
      // pydantic's code for a number with a fractional part where an integer goes.
      if (expected === 'int' && typeof issue.input === 'number' && Number.isFinite(issue.input)) return 'int_from_float';
      return TYPE_BY_EXPECTED[expected] ?? `${expected}_type`;
    }
    case 'too_big':
      return issue.origin === 'string' ? 'string_too_long' : issue.origin === 'array' ? 'too_long' : 'less_than_equal';
    case 'too_small':
      return issue.origin === 'string' ? 'string_too_short' : issue.origin === 'array' ? 'too_short' : 'greater_than_equal';
    case 'invalid_value':
      // fal's models declare these fields as Literal[...]: pydantic says literal_error.
      return 'literal_error';
    case 'not_multiple_of':
      return 'multiple_of';
    default:
      return 'value_error';
  }
}

export function toFalEntries(issues: readonly z.core.$ZodIssue[], location: string, root: z.ZodType): FalValidationEntry[] {
  const entries: FalValidationEntry[] = [];
  for (const issue of issues) {
    const path = issue.path.map((p) => (typeof p === 'symbol' ? String(p) : p));
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) {
        const field = [...path, key].join('.');
        entries.push({ loc: [location, ...path, key], msg: `Unknown field "${field}" is not allowed`, type: 'extra_forbidden' });
      }
      continue;
    }
    if (issue.code === 'invalid_union') {
      // A union fails as a whole; report the branch that matched the value's shape (its problems
      // are nested), else the first branch, whose message lists the accepted forms.
      const branch = issue.errors.find((b) => b.length > 0 && b.every((i) => i.path.length > 0)) ?? issue.errors[0];
      if (branch?.length) {
        entries.push(...toFalEntries(branch.map((i) => ({ ...i, path: [...issue.path, ...i.path] })), location, root));
        continue;
      }
    }
    const type = typeOf(issue, root);
    const field = path.join('.') || location;
    // A query parameter given twice (`?logs=1&logs=0`) arrives as a list.
    const repeated = location === 'query' && issue.code === 'invalid_type' && issue.expected !== 'array' && Array.isArray(issue.input);
    const msg = type === 'missing' ? `${field} is required` : repeated ? `${field} was given ${(issue.input as unknown[]).length} times; give it once` : issue.message;
    entries.push({ loc: [location, ...path], msg, type });
  }
  return entries;
}

/** Enough to fix a request; a body with thousands of problems must not produce a huge answer. */
export const MAX_ENTRIES = 50;

export function capEntries(entries: FalValidationEntry[], location: string): FalValidationEntry[] {
  if (entries.length <= MAX_ENTRIES) return entries;
  return [
    ...entries.slice(0, MAX_ENTRIES),
    { loc: [location], msg: `${entries.length - MAX_ENTRIES} more problems not shown`, type: 'too_many_errors' },
  ];
}

/** The fields an object schema declares, to check headers by (every other header is not the schema's business). */
function declaredKeys(schema: z.ZodType): string[] | undefined {
  const shape = (schema as unknown as SchemaNode).def.shape;
  return shape ? Object.keys(shape) : undefined;
}

/**
 * Validates with zod and answers in fal's dialect. The common, valid case parses once without
 * `reportInput` (zod's compiled fast path); only a failure is parsed again with the inputs kept,
 * to tell a missing field from a wrong one.
 *
 * Headers are checked, never replaced: only the headers the schema declares are parsed, and the
 * request keeps its own. (A replaced `request.headers` would make Fastify merge a copy of every
 * header on each later read.) Header schemas therefore must not transform or default values.
 */
export const validatorCompiler: FastifySchemaCompiler<z.ZodType> = ({ schema, httpPart }) => {
  const location = LOCATION[httpPart ?? 'body'] ?? httpPart ?? 'body';
  const fail = (data: unknown) => {
    const detailed = schema.safeParse(data, { reportInput: true });
    const issues = detailed.success ? [] : detailed.error.issues;
    return { error: new RequestValidationError(capEntries(toFalEntries(issues, location, schema), location)) };
  };
  const keys = httpPart === 'headers' ? declaredKeys(schema) : undefined;
  if (keys) {
    return (data: unknown) => {
      const all = (data ?? {}) as Record<string, unknown>;
      const declared: Record<string, unknown> = {};
      for (const key of keys) if (all[key] !== undefined) declared[key] = all[key];
      // Valid: no `value`, so Fastify leaves request.headers as they came.
      return schema.safeParse(declared).success ? {} : fail(declared);
    };
  }
  return (data: unknown) => {
    const result = schema.safeParse(data);
    return result.success ? { value: result.data } : fail(data);
  };
};
