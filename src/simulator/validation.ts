import { expectedType } from '../http/validation.js';
import { ModelInput } from '../schemas/model-input.js';

/**
 * The model's own input check. fal's runners are FastAPI apps with pydantic v2 models, so a
 * rejected input surfaces as a 422 whose `detail` entries use pydantic's wording and `type`
 * codes. The rules themselves come from the shared zod schema, so the simulator rejects exactly
 * what the gateway's docs say the model rejects; only the error vocabulary is translated here.
 */

export type Loc = (string | number)[];

export interface ValidationDetail {
  loc: Loc;
  msg: string;
  type: string;
  input?: unknown;
  ctx?: Record<string, unknown>;
}

export type ValidationResult =
  | { ok: true; value: ModelInput }
  | { ok: false; detail: ValidationDetail[] };

type Issue = NonNullable<ReturnType<typeof ModelInput.safeParse>['error']>['issues'][number];

export function validateModelInput(input: unknown): ValidationResult {
  const parsed = ModelInput.safeParse(input);
  if (parsed.success) return { ok: true, value: parsed.data };
  return { ok: false, detail: parsed.error.issues.flatMap((issue) => translate(issue, [], input)) };
}

/** The entry FastAPI gives when the body is valid JSON but not an object. */
export function notAnObjectDetail(input: unknown): ValidationDetail[] {
  return [
    {
      loc: ['body'],
      msg: 'Input should be a valid dictionary or object to extract fields from',
      type: 'model_attributes_type',
      input,
    },
  ];
}

function valueAt(root: unknown, path: Loc): { found: boolean; value: unknown; parent: unknown } {
  let parent: unknown = undefined;
  let value: unknown = root;
  for (const key of path) {
    parent = value;
    if (value === null || typeof value !== 'object' || !Object.hasOwn(value, key)) {
      return { found: false, value: undefined, parent };
    }
    value = (value as Record<string | number, unknown>)[key];
  }
  return { found: true, value, parent };
}

const quoted = (values: readonly unknown[]) => {
  const parts = values.map((v) => (typeof v === 'string' ? `'${v}'` : String(v)));
  return parts.length <= 1 ? parts.join('') : `${parts.slice(0, -1).join(', ')} or ${parts.at(-1)}`;
};

const TYPE_ERRORS: Record<string, [type: string, msg: string]> = {
  string: ['string_type', 'Input should be a valid string'],
  number: ['float_type', 'Input should be a valid number'],
  int: ['int_type', 'Input should be a valid integer'],
  boolean: ['bool_type', 'Input should be a valid boolean'],
  array: ['list_type', 'Input should be a valid list'],
  object: ['model_type', 'Input should be a valid dictionary or instance of a model'],
};

// `prefix` is the path of an enclosing union: zod reports union members' issues relative to it.
function translate(issue: Issue, prefix: Loc, root: unknown): ValidationDetail[] {
  const path: Loc = [...prefix, ...(issue.path as Loc)];
  const loc: Loc = ['body', ...path];
  const { found, value, parent } = valueAt(root, path);
  const input = found ? value : undefined;

  switch (issue.code) {
    case 'invalid_type': {
      // pydantic reports an absent field as `missing`, with the enclosing object as input.
      if (!found) return [{ loc, msg: 'Field required', type: 'missing', input: parent }];
      const expected = expectedType(ModelInput, issue.expected, path);
      if (expected === 'int' && typeof value === 'number' && Number.isFinite(value)) {
        return [
          {
            loc,
            msg: 'Input should be a valid integer, got a number with a fractional part',
            type: 'int_from_float',
            input,
          },
        ];
      }
      const [type, msg] = TYPE_ERRORS[expected] ?? ['value_error', `Value error, ${issue.message}`];
      return [{ loc, msg, type, input }];
    }
    case 'too_big':
    case 'too_small': {
      const big = issue.code === 'too_big';
      const limit = big ? (issue as { maximum: unknown }).maximum : (issue as { minimum: unknown }).minimum;
      const bound = Number(limit);
      if (issue.origin === 'string' || issue.origin === 'array') {
        const what = issue.origin === 'string' ? 'String' : 'List';
        const unit = issue.origin === 'string' ? 'character' : 'item';
        const type = `${issue.origin === 'string' ? 'string_' : ''}too_${big ? 'long' : 'short'}`;
        const msg = `${what} should have ${big ? 'at most' : 'at least'} ${bound} ${unit}${bound === 1 ? '' : 's'}`;
        return [{ loc, msg, type, input, ctx: { [big ? 'max_length' : 'min_length']: bound } }];
      }
      const inclusive = issue.inclusive !== false;
      const [key, words] = big
        ? inclusive
          ? ['le', 'less than or equal to']
          : ['lt', 'less than']
        : inclusive
          ? ['ge', 'greater than or equal to']
          : ['gt', 'greater than'];
      const type = `${big ? 'less' : 'greater'}_than${inclusive ? '_equal' : ''}`;
      return [{ loc, msg: `Input should be ${words} ${bound}`, type, input, ctx: { [key]: bound } }];
    }
    case 'invalid_value': {
      const expected = quoted(issue.values);
      return [{ loc, msg: `Input should be ${expected}`, type: 'literal_error', input, ctx: { expected } }];
    }
    case 'unrecognized_keys':
      return issue.keys.map((key) => ({
        loc: [...loc, key],
        msg: 'Extra inputs are not permitted',
        type: 'extra_forbidden',
        input: valueAt(root, [...path, key]).value,
      }));
    case 'invalid_union': {
      // Report the member the input was aiming at: the one that failed below its root (e.g.
      // an object with a bad width), else the first member (e.g. the enum of preset names).
      const branches = issue.errors;
      const deep = branches.find((b) => b.length > 0 && b.every((i) => i.path.length > 0));
      const chosen = deep ?? branches[0] ?? [];
      if (chosen.length === 0) return [{ loc, msg: `Value error, ${issue.message}`, type: 'value_error', input }];
      return chosen.flatMap((i) => translate(i as Issue, path, root));
    }
    default:
      return [{ loc, msg: `Value error, ${issue.message}`, type: 'value_error', input }];
  }
}
