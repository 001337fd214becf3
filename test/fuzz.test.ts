import { Readable } from 'node:stream';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_ENTRIES } from '../src/http/validation.js';
import { parseConfig } from '../src/config.js';
import type { RecordedRequest } from '../src/simulator/index.js';
import {
  anyValue,
  applyOps,
  DEEP_SHAPES,
  deepBody,
  defineOwn,
  edgesOf,
  encode,
  encoding,
  GLOBAL_EDGES,
  jsonValue,
  NUMERIC_FIELDS,
  op,
  pollutant,
  rawBytes,
  rawCase,
  seedBody,
  seedWithPath,
  serialise,
  style,
  validInput,
  wideBody,
  type Body,
  type DeepShape,
  type WideShape,
} from './support/fuzz-arbitraries.js';
import { judge, pathKey, withoutNegativeZero, type Verdict } from './support/fuzz-oracle.js';
import { SEED_REQUEST, startStack, upstreamCalls, type Stack } from './helpers.js';

/**
 * Property-based tests of the submit body (fast-check). For every generated body the expected
 * answer is decided independently of the gateway, by the model's zod schema on the parsed bytes
 * (test/support/fuzz-oracle.ts), and the gateway must agree:
 *
 * - valid: 200 IN_QUEUE, exactly one upstream POST, whose body deep-equals what was sent
 *   (numbers compared by value: JSON.stringify writes -0 as 0);
 * - JSON the schema rejects: 422 validation_error, one well-formed entry per problem (each about
 *   a problem the schema found), nothing upstream; `__proto__` / `constructor.prototype` keys
 *   and empty bodies may be 400 instead;
 * - not JSON: 400 invalid_json; over the body limit: 413 payload_too_large; nothing upstream;
 * - never a 5xx, never a body that is not JSON, never a polluted prototype, never a crash.
 *
 * Seeds are random per run and printed on failure (fast-check) and in the summary line;
 * FUZZ_SEED=<n> replays a run, FUZZ_SCALE=<k> multiplies every numRuns.
 */

const SUBMIT = '/v1/image-to-image';
const UPSTREAM_SUBMIT = '/fal-ai/flux-lora/image-to-image';
const TENANT = 'fuzz';

function envNumber(name: string): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return undefined;
  const value = Number(raw);
  if (!Number.isFinite(value)) throw new Error(`${name} must be a number, got ${JSON.stringify(raw)}`);
  return value;
}

const SEED = Math.trunc(envNumber('FUZZ_SEED') ?? Math.random() * 2 ** 31);
const SCALE = envNumber('FUZZ_SCALE') ?? 1;
const runs = (n: number) => Math.max(1, Math.round(n * SCALE));

/** The gateway's body limit (startStack keeps the default). */
const BODY_LIMIT = parseConfig({ UPSTREAM_TOKEN: 'x', UPSTREAM_BASE_URL: 'http://127.0.0.1:1', TENANTS_FILE: 'x' }).BODY_LIMIT_BYTES;

const PLAN = {
  anyJson: runs(300),
  mutations: runs(500),
  valid: runs(450),
  numbers: runs(300),
  raw: runs(350),
  pollution: runs(200),
  deep: runs(25),
  wide: runs(8),
  huge: runs(10),
  limit: runs(4),
};
const PLANNED = Object.values(PLAN).reduce((a, b) => a + b, 0);

const stats = { bodies: 0, valid: 0, rejected: 0, serverErrors: 0, byStatus: {} as Record<number, number> };

let stack: Stack;
let prototypesBefore: string;

/** Own property names of the built-in prototypes an exploit would write to. */
const prototypeSnapshot = () =>
  JSON.stringify([Object.prototype, Array.prototype, Function.prototype, String.prototype].map((p) => Object.getOwnPropertyNames(p).sort()));

beforeAll(async () => {
  prototypesBefore = prototypeSnapshot();
  stack = await startStack({
    listen: false,
    tenants: [{ id: TENANT, submit: { max: 1_000_000, timeWindowMs: 60_000 }, read: { max: 1_000_000, timeWindowMs: 60_000 } }],
    sim: { maxRecordedRequests: 1_000_000 },
  });
});

afterAll(async () => {
  await stack?.close();
});

interface Answer {
  status: number;
  body: unknown;
  text: string;
  contentType: string | undefined;
  upstream: RecordedRequest[];
}

async function submit(payload: Buffer | (() => Readable)): Promise<Answer> {
  const before = upstreamCalls(stack).length;
  const res = await stack.app.inject({
    method: 'POST',
    url: SUBMIT,
    headers: { ...stack.bearer(TENANT), 'content-type': 'application/json' },
    payload: Buffer.isBuffer(payload) ? payload : payload(),
  });
  let body: unknown;
  try {
    body = JSON.parse(res.body);
  } catch {
    body = undefined;
  }
  const contentType = res.headers['content-type'];
  return { status: res.statusCode, body, text: res.body, contentType: typeof contentType === 'string' ? contentType : undefined, upstream: upstreamCalls(stack).slice(before) };
}

const show = (bytes: Buffer) => {
  const text = bytes.toString('utf8');
  return text.length > 300 ? `${text.slice(0, 300)}… (${bytes.length} bytes)` : text;
};

/** Up to this many problems, each must have its own entry. */
const ALL_REPORTED = 20;

interface Entry {
  loc: unknown;
  msg: unknown;
  type: unknown;
}

/** The answer the oracle expects for these bytes, asserted; returns the verdict for extra checks. */
async function check(bytes: Buffer, options: { stream?: boolean } = {}): Promise<Verdict> {
  const verdict = judge(bytes, BODY_LIMIT);
  const answer = await submit(options.stream ? () => Readable.from([bytes.subarray(0, bytes.length >> 1), bytes.subarray(bytes.length >> 1)]) : bytes);
  stats.bodies += 1;
  stats.byStatus[answer.status] = (stats.byStatus[answer.status] ?? 0) + 1;
  if (answer.status >= 500) stats.serverErrors += 1;
  const where = `sent: ${show(bytes)}\nverdict: ${verdict.kind}\nanswer: ${answer.status} ${answer.text.slice(0, 500)}`;

  expect(answer.status, `no 5xx\n${where}`).toBeLessThan(500);
  expect(answer.body, `the answer is JSON\n${where}`).toBeDefined();
  expect(answer.contentType ?? '', where).toMatch(/^application\/json/);

  if (verdict.kind === 'valid') {
    stats.valid += 1;
    expect(answer.status, where).toBe(200);
    const body = answer.body as { status?: unknown; request_id?: unknown };
    expect(body.status, where).toBe('IN_QUEUE');
    expect(typeof body.request_id, where).toBe('string');
    expect(answer.upstream, `exactly one upstream call\n${where}`).toHaveLength(1);
    const call = answer.upstream[0]!;
    expect(call.method).toBe('POST');
    expect(call.path).toBe(UPSTREAM_SUBMIT);
    // Forwarded as sent: nothing dropped, defaulted or coerced (JSON has no -0, so 0 stands for it).
    expect(call.body, `forwarded unchanged\n${where}`).toStrictEqual(withoutNegativeZero(verdict.value));
    return verdict;
  }

  stats.rejected += 1;
  expect(answer.upstream, `a rejected body must not reach the upstream\n${where}`).toEqual([]);
  const envelope = answer.body as { detail?: unknown; error_type?: unknown };
  expect(typeof envelope.error_type, `error_type in the envelope\n${where}`).toBe('string');
  expect(envelope.detail, `detail in the envelope\n${where}`).toBeDefined();

  switch (verdict.kind) {
    case 'too_large':
      expect(answer.status, where).toBe(413);
      expect(envelope.error_type, where).toBe('payload_too_large');
      break;
    case 'not_json':
      expect(answer.status, where).toBe(400);
      expect(envelope.error_type, where).toBe('invalid_json');
      break;
    case 'empty':
    case 'forbidden_key':
      expect([400, 422], where).toContain(answer.status);
      break;
    case 'invalid':
      expect(answer.status, where).toBe(422);
      expect(envelope.error_type, where).toBe('validation_error');
      break;
  }
  if (answer.status === 422) expectEntries(envelope.detail, verdict, where);
  return verdict;
}

/** 422 detail: fal's shape, and every entry about a real problem, every problem reported. */
function expectEntries(detail: unknown, verdict: Verdict, where: string): void {
  expect(Array.isArray(detail), `detail is an array\n${where}`).toBe(true);
  const all = detail as Entry[];
  expect(all.length, `at least one entry\n${where}`).toBeGreaterThan(0);
  // A capped list ends with one summary entry counting the problems left out.
  const last = all.at(-1)!;
  const capped = last.type === 'too_many_errors';
  if (capped) {
    expect(all.length, `a capped list holds MAX_ENTRIES entries and the summary\n${where}`).toBe(MAX_ENTRIES + 1);
    expect(last.msg, where).toMatch(/^\d+ more problems not shown$/);
  }
  const entries = capped ? all.slice(0, -1) : all;
  // Collected, then asserted once: wide bodies have tens of thousands of entries.
  const wrong: string[] = [];
  const reportedPrefixes = new Set<string>();
  for (const entry of entries) {
    const shown = JSON.stringify(entry);
    if (Object.keys(entry).sort().join() !== 'loc,msg,type') wrong.push(`keys other than loc, msg, type: ${shown}`);
    if (!Array.isArray(entry.loc) || entry.loc[0] !== 'body') {
      wrong.push(`loc does not start with body: ${shown}`);
      continue;
    }
    if (typeof entry.msg !== 'string' || entry.msg.length === 0) wrong.push(`msg not a non-empty string: ${shown}`);
    if (typeof entry.type !== 'string' || !/^[a-z_]+$/.test(entry.type)) wrong.push(`type not a snake_case string: ${shown}`);
    const path = (entry.loc as Array<string | number>).slice(1);
    if (verdict.kind === 'invalid' && !verdict.paths.allowed.has(pathKey(path))) wrong.push(`entry about no problem the schema found: ${shown}`);
    for (let i = 0; i <= path.length; i++) reportedPrefixes.add(pathKey(path.slice(0, i)));
    // Array indexes stay numbers, object keys stay strings.
    let node: unknown = verdict.kind === 'invalid' || verdict.kind === 'forbidden_key' ? verdict.value : undefined;
    for (const segment of path) {
      if (Array.isArray(node)) {
        if (typeof segment !== 'number') wrong.push(`array index given as ${typeof segment}: ${shown}`);
      } else if (node !== null && typeof node === 'object') {
        if (typeof segment !== 'string') wrong.push(`object key given as ${typeof segment}: ${shown}`);
      } else break;
      node = (node as Record<string | number, unknown>)[segment];
    }
  }
  if (verdict.kind === 'invalid') {
    // Every problem is reported; a body with very many may have its list capped, but not below ALL_REPORTED.
    const missing = verdict.paths.required.filter((problem) => !reportedPrefixes.has(problem));
    if (verdict.paths.required.length <= ALL_REPORTED) wrong.push(...missing.map((problem) => `problem at ${problem} not reported`));
    else if (entries.length < ALL_REPORTED) wrong.push(`${verdict.paths.required.length} problems but only ${entries.length} entries`);
  }
  expect(wrong.slice(0, 20), `422 entries\n${where}`).toEqual([]);
}

const utf8 = (text: string) => Buffer.from(text, 'utf8');
const params = (numRuns: number) => ({ numRuns, seed: SEED, endOnFailure: false });
const LONG = 60_000;

describe('POST /v1/image-to-image: property-based (fast-check)', { timeout: 120_000 }, () => {
  it('any JSON value or serialised JS value: the oracle and the gateway agree', async () => {
    const arbitrary = fc.oneof(
      { arbitrary: jsonValue.map((v) => JSON.stringify(v)), weight: 3 },
      { arbitrary: fc.anything().map((v) => JSON.stringify(v) ?? 'null'), weight: 2 },
      { arbitrary: fc.json(), weight: 1 },
      { arbitrary: fc.tuple(jsonValue, style).map(([v, s]) => serialise(v, s)), weight: 1 },
      { arbitrary: fc.dictionary(fc.constantFrom('prompt', 'image_url', 'strength', 'seed', 'loras'), anyValue).map((v) => JSON.stringify(v)), weight: 2 },
    );
    await fc.assert(fc.asyncProperty(arbitrary, async (text) => void (await check(utf8(text)))), params(PLAN.anyJson));
  }, LONG);

  it('mutations of a valid body (dropped fields, wrong types, unknown and look-alike keys, nested extras)', async () => {
    const arbitrary = fc.record({
      base: fc.oneof(fc.constant(seedBody()), validInput),
      ops: fc.array(op, { minLength: 1, maxLength: 3 }),
      encoding,
    });
    await fc.assert(
      fc.asyncProperty(arbitrary, async ({ base, ops, encoding: enc }) => void (await check(utf8(encode(applyOps(base, ops), enc))))),
      params(PLAN.mutations),
    );
  }, LONG);

  it('valid inputs drawn from the §6 ranges are forwarded unchanged', async () => {
    let valid = 0;
    await fc.assert(
      fc.asyncProperty(validInput, encoding, async (body, enc) => {
        const verdict = await check(utf8(encode(body, enc)));
        if (verdict.kind === 'valid') valid += 1;
      }),
      params(PLAN.valid),
    );
    // The generator aims at the valid branch: if the schema tightened, most would now be 422s.
    expect(valid, 'most generated inputs are valid').toBeGreaterThan(PLAN.valid * 0.9);
  }, LONG);

  it('numbers at the edges of every numeric field (limits, one ulp beyond, -0, 1e308, 5e-324, unsafe integers)', async () => {
    const arbitrary = fc.constantFrom(...Object.keys(NUMERIC_FIELDS)).chain((path) =>
      fc.record({
        path: fc.constant(path),
        value: fc.oneof(
          { arbitrary: fc.constantFrom(...edgesOf(NUMERIC_FIELDS[path]!)), weight: 3 },
          { arbitrary: fc.constantFrom(...GLOBAL_EDGES), weight: 2 },
          { arbitrary: fc.double({ noNaN: true, noDefaultInfinity: true }), weight: 1 },
          {
            arbitrary: fc.integer({
              min: Math.max(Math.ceil(NUMERIC_FIELDS[path]![0]) - 3, Number.MIN_SAFE_INTEGER),
              max: Math.min(Math.floor(NUMERIC_FIELDS[path]![1]) + 3, Number.MAX_SAFE_INTEGER),
            }),
            weight: 1,
          },
        ),
        spelling: fc.constantFrom('json', 'exponent', 'fixed'),
      }),
    );
    const spell = (v: number, how: string) => {
      if (how === 'exponent') return v.toExponential();
      if (how === 'fixed' && Math.abs(v) < 1e21) return v.toFixed(Number.isInteger(v) ? 1 : 20);
      return Object.is(v, -0) ? '-0' : JSON.stringify(v);
    };
    await fc.assert(
      fc.asyncProperty(arbitrary, async ({ path, value, spelling }) => {
        const mark = '"@@N@@"';
        const text = JSON.stringify(seedWithPath(path, '@@N@@')).replace(mark, spell(value, spelling));
        await check(utf8(text));
      }),
      params(PLAN.numbers),
    );
  }, LONG);

  it('raw bodies: NaN/Infinity/1e999 tokens, broken syntax, duplicate keys, BOM, bytes that are not UTF-8', async () => {
    await fc.assert(fc.asyncProperty(rawCase, async (c) => void (await check(rawBytes(c)))), params(PLAN.raw));
  }, LONG);

  it('__proto__ / constructor.prototype payloads are rejected and pollute nothing', async () => {
    const where = fc.constantFrom('top', 'image_size', 'lora', 'nested_unknown', 'array_item');
    const arbitrary = fc.record({
      key: fc.constantFrom('__proto__', 'constructor', 'prototype', '__proto__', 'constructor'),
      value: fc.oneof(pollutant, anyValue),
      where,
      base: fc.oneof(fc.constant(seedBody()), validInput),
      style: fc.oneof(fc.constant(undefined), style),
    });
    await fc.assert(
      fc.asyncProperty(arbitrary, async ({ key, value, where: at, base, style: s }) => {
        const body: Body = structuredClone(base);
        const target: object =
          at === 'top'
            ? body
            : at === 'image_size'
              ? (body.image_size = { width: 64, height: 64 })
              : at === 'lora'
                ? ((body.loras = [{ path: 'owner/repo' }]) as Body[])[0]!
                : at === 'nested_unknown'
                  ? (body.extra = { deeper: {} } as { deeper: object }).deeper
                  : ((body.loras = [[{}]]) as object[][])[0]![0]!;
        defineOwn(target, key, key === 'constructor' && value !== null && typeof value === 'object' && !Array.isArray(value) ? { prototype: value } : value);
        await check(utf8(s === undefined ? JSON.stringify(body) : serialise(body, s)));
        expect(({} as Record<string, unknown>).polluted, 'Object.prototype.polluted').toBeUndefined();
        expect(([] as unknown as Record<string, unknown>).polluted).toBeUndefined();
        expect(prototypeSnapshot(), 'built-in prototypes unchanged').toBe(prototypesBefore);
      }),
      params(PLAN.pollution),
    );
  }, LONG);

  it('deep nesting (up to 100k levels) is a 4xx, never a crash, and the gateway stays alive', async () => {
    const arbitrary = fc.record({
      shape: fc.constantFrom<DeepShape>(...DEEP_SHAPES),
      depth: fc.oneof(fc.constant(10_000), fc.integer({ min: 1_000, max: 100_000 })),
    });
    await fc.assert(
      fc.asyncProperty(arbitrary, async ({ shape, depth }) => {
        const verdict = await check(utf8(deepBody(shape, depth)));
        expect(verdict.kind).not.toBe('valid');
        const health = await stack.app.inject({ method: 'GET', url: '/healthz' });
        expect(health.statusCode).toBe(200);
        expect(health.json()).toEqual({ status: 'ok' });
      }),
      { ...params(PLAN.deep), examples: [[{ shape: 'array', depth: 10_000 }]] },
    );
  }, LONG);

  it('wide bodies (thousands of items or keys) get the same envelope, valid ones forwarded whole', async () => {
    const arbitrary = fc.record({
      shape: fc.constantFrom<WideShape>('loras_invalid', 'loras_valid', 'unknown_keys', 'image_size_keys'),
      width: fc.integer({ min: 100, max: 20_000 }),
    });
    await fc.assert(fc.asyncProperty(arbitrary, async ({ shape, width }) => void (await check(utf8(wideBody(shape, width))))), params(PLAN.wide));
  }, LONG);

  it('huge strings (0.25–3 MiB, multi-byte) in every string position', async () => {
    const arbitrary = fc.record({
      where: fc.constantFrom('prompt', 'image_url', 'lora_path', 'unknown_key', 'output_format', 'unknown_value'),
      bytes: fc.integer({ min: 256 * 1024, max: 3 * 1024 * 1024 }),
      unit: fc.constantFrom('x', '\u00e9', '\u4e2d', '\ud83e\udd81', '\u200b', '\u202e'),
    });
    await fc.assert(
      fc.asyncProperty(arbitrary, async ({ where: at, bytes, unit }) => {
        const long = unit.repeat(Math.ceil(bytes / Buffer.byteLength(unit)));
        const body = seedBody();
        if (at === 'prompt') body.prompt = long;
        else if (at === 'image_url') body.image_url = `data:image/png;base64,iVBORw0KGgoAAAAN${'A'.repeat(bytes - (bytes % 4))}`;
        else if (at === 'lora_path') body.loras = [{ path: long, scale: 1 }];
        else if (at === 'unknown_key') defineOwn(body, long, 1);
        else if (at === 'output_format') body.output_format = long;
        else body.extra = long;
        await check(utf8(JSON.stringify(body)));
      }),
      {
        ...params(PLAN.huge),
        examples: [
          [{ where: 'prompt', bytes: 1024 * 1024, unit: 'x' }],
          [{ where: 'image_url', bytes: 3 * 1024 * 1024, unit: 'x' }],
          [{ where: 'unknown_key', bytes: 1024 * 1024, unit: '\u202e' }],
        ],
      },
    );
  }, LONG);

  it('bodies of exactly the limit and one byte beyond (content-length and streamed)', async () => {
    const arbitrary = fc.record({
      offset: fc.integer({ min: -2, max: 2 }),
      unit: fc.constantFrom('a', '\u00e9', '\u4e2d', '\ud83e\udd81'),
      stream: fc.boolean(),
    });
    const base = Buffer.byteLength(JSON.stringify({ ...SEED_REQUEST, prompt: '' }));
    await fc.assert(
      fc.asyncProperty(arbitrary, async ({ offset, unit, stream }) => {
        const promptBytes = BODY_LIMIT + offset - base;
        const unitBytes = Buffer.byteLength(unit);
        const prompt = unit.repeat(Math.floor(promptBytes / unitBytes)) + 'a'.repeat(promptBytes % unitBytes);
        const bytes = utf8(JSON.stringify({ ...SEED_REQUEST, prompt }));
        expect(bytes.length).toBe(BODY_LIMIT + offset);
        const verdict = await check(bytes, { stream });
        expect(verdict.kind).toBe(offset > 0 ? 'too_large' : 'valid');
      }),
      {
        ...params(PLAN.limit),
        examples: [[{ offset: 0, unit: '\u4e2d', stream: false }], [{ offset: 1, unit: 'a', stream: true }]],
      },
    );
  }, LONG);

  it('counts: every planned case ran, none answered 5xx', () => {
    const statuses = Object.entries(stats.byStatus)
      .map(([status, n]) => `${status}×${n}`)
      .join(' ');
    // eslint-disable-next-line no-console
    console.log(
      `fuzz: ${stats.bodies} bodies (planned ≥ ${PLANNED}), ${stats.valid} valid, ${stats.rejected} rejected, ${stats.serverErrors} 5xx [${statuses}] seed=${SEED}`,
    );
    expect(stats.bodies).toBeGreaterThanOrEqual(PLANNED);
    expect(stats.serverErrors).toBe(0);
    expect(stats.valid + stats.rejected).toBe(stats.bodies);
  });
});

/**
 * The widest body under the limit, 5 million invalid `loras` items in 10 MB. It once made one
 * 422 entry per item (a 4 GB, 90 s stall ending in `422 {}`); it must get a small envelope, fast.
 */
describe('POST /v1/image-to-image: widest body', { timeout: 120_000 }, () => {
  it('a 10 MB body of 5 million invalid loras items gets a small error envelope, fast', async () => {
    const width = Math.floor((BODY_LIMIT - Buffer.byteLength(JSON.stringify(SEED_REQUEST)) - 16) / 2);
    const bytes = utf8(wideBody('loras_invalid', width));
    expect(bytes.length).toBeLessThanOrEqual(BODY_LIMIT);
    const started = Date.now();
    const answer = await submit(bytes);
    const ms = Date.now() - started;
    const where = `${width} items, ${bytes.length} bytes: ${answer.status} ${answer.text.slice(0, 200)} (${answer.text.length} bytes) after ${ms} ms`;
    expect(answer.status, where).toBeGreaterThanOrEqual(400);
    expect(answer.status, where).toBeLessThan(500);
    const envelope = answer.body as { detail?: unknown; error_type?: unknown } | undefined;
    expect(typeof envelope?.error_type, where).toBe('string');
    expect(envelope?.detail, where).toBeDefined();
    expect(answer.upstream).toEqual([]);
    expect(answer.text.length, where).toBeLessThan(64 * 1024);
    expect(ms, where).toBeLessThan(20_000);
  }, 60_000);
});
