import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FalValidationEntry } from '../src/errors.js';
import type { RecordedRequest } from '../src/simulator/index.js';
import { json, SEED_REQUEST, startStack, upstreamCalls, type Stack } from './helpers.js';

/**
 * Input validation at the gateway, end to end over real HTTP: every field of the model input
 * (fal-queue-api.md §6) at each boundary, just inside (forwarded upstream exactly as sent) and
 * just outside (422 in fal's dialect, and nothing reaches the upstream).
 */

const SUBMIT = '/v1/image-to-image';
const FAL_SUBMIT = '/fal-ai/flux-lora/image-to-image';
const UPSTREAM_SUBMIT = '/fal-ai/flux-lora/image-to-image';

type Body = Record<string, unknown>;

type Entry = FalValidationEntry;

interface Answer {
  status: number;
  body: { status?: string; request_id?: string; detail?: unknown; error_type?: string };
  /** What the simulated upstream received while this request was handled. */
  upstream: RecordedRequest[];
}

let stack: Stack;

beforeAll(async () => {
  stack = await startStack();
});

afterAll(async () => {
  await stack?.close();
});

interface SendOptions {
  path?: string;
  query?: string;
  headers?: Record<string, string>;
  /** Send this text as the body instead of JSON-encoding `body`. */
  raw?: string;
  /** Send no body at all (and no content-type unless given in headers). */
  noBody?: boolean;
}

async function send(body: unknown, options: SendOptions = {}): Promise<Answer> {
  const before = upstreamCalls(stack).length;
  const headers: Record<string, string> = {
    ...stack.bearer('team-a'),
    ...(options.noBody ? {} : json),
    ...options.headers,
  };
  const init: RequestInit = { method: 'POST', headers };
  if (!options.noBody) init.body = options.raw ?? JSON.stringify(body);
  const res = await fetch(`${stack.url}${options.path ?? SUBMIT}${options.query ?? ''}`, init);
  const text = await res.text();
  let parsed: Answer['body'];
  try {
    parsed = JSON.parse(text) as Answer['body'];
  } catch {
    throw new Error(`gateway answered ${res.status} with a body that is not JSON: ${text.slice(0, 200)}`);
  }
  return { status: res.status, body: parsed, upstream: upstreamCalls(stack).slice(before) };
}

/** 200 IN_QUEUE, and the upstream received exactly one submit whose body deep-equals what was sent. */
function expectAccepted(answer: Answer, sent: unknown): RecordedRequest {
  expect(answer.status, JSON.stringify(answer.body)).toBe(200);
  expect(answer.body.status).toBe('IN_QUEUE');
  expect(answer.body.request_id).toEqual(expect.any(String));
  expect(answer.upstream).toHaveLength(1);
  const call = answer.upstream[0]!;
  expect(call.method).toBe('POST');
  expect(call.path).toBe(UPSTREAM_SUBMIT);
  // toStrictEqual: no default filled in, no field dropped, nothing coerced.
  expect(call.body).toStrictEqual(sent);
  return call;
}

interface Expected {
  loc: Array<string | number>;
  type: string;
  /** Substrings the message must contain: the field's name and the allowed range or values. */
  msg?: string[];
}

/** 422 validation_error with exactly the expected entries (in any order), and nothing sent upstream. */
function expectRejected(answer: Answer, ...expected: Expected[]): Entry[] {
  expect(answer.status, JSON.stringify(answer.body)).toBe(422);
  expect(answer.body.error_type).toBe('validation_error');
  expect(Array.isArray(answer.body.detail), JSON.stringify(answer.body)).toBe(true);
  const detail = answer.body.detail as Entry[];
  for (const entry of detail) {
    expect(Object.keys(entry).sort()).toEqual(['loc', 'msg', 'type']);
    expect(typeof entry.msg).toBe('string');
    expect(entry.msg.length).toBeGreaterThan(0);
  }
  expect(detail.map(({ loc, type }) => ({ loc, type }))).toEqual(
    expect.arrayContaining(expected.map(({ loc, type }) => ({ loc, type }))),
  );
  expect(detail, JSON.stringify(detail)).toHaveLength(expected.length);
  for (const want of expected) {
    const entry = detail.find((d) => JSON.stringify(d.loc) === JSON.stringify(want.loc) && d.type === want.type)!;
    for (const part of want.msg ?? []) expect(entry.msg, `msg of ${JSON.stringify(want.loc)}`).toContain(part);
  }
  expect(answer.upstream, 'a rejected request must not reach the upstream').toEqual([]);
  return detail;
}

const seedWith = (patch: Body): Body => ({ ...SEED_REQUEST, ...patch });
const seedWithout = (field: string): Body => {
  const body: Body = { ...SEED_REQUEST };
  delete body[field];
  return body;
};

/** A row of the boundary tables: one field set to one value on top of the seed request. */
interface Case {
  field: string;
  value: unknown;
}

interface BadCase extends Case {
  type: string;
  /** Defaults to ['body', field]. */
  loc?: Array<string | number>;
  msg: string[];
}

const show = (v: unknown) => JSON.stringify(v);

const accepted: Case[] = [
  { field: 'strength', value: 0.01 },
  { field: 'strength', value: 1 },
  { field: 'strength', value: 0.5 },
  { field: 'num_inference_steps', value: 1 },
  { field: 'num_inference_steps', value: 50 },
  { field: 'guidance_scale', value: 0 },
  { field: 'guidance_scale', value: 35 },
  { field: 'num_images', value: 1 },
  { field: 'num_images', value: 4 },
  { field: 'enable_safety_checker', value: true },
  { field: 'enable_safety_checker', value: false },
  { field: 'output_format', value: 'jpeg' },
  { field: 'output_format', value: 'png' },
  { field: 'seed', value: 0 },
  // Optional in the model with no default: null means left out (pydantic's model_dump() writes it).
  { field: 'seed', value: null },
  { field: 'image_size', value: null },
  { field: 'seed', value: 42 },
  { field: 'seed', value: 2 ** 31 },
  { field: 'image_size', value: 'square_hd' },
  { field: 'image_size', value: 'square' },
  { field: 'image_size', value: 'portrait_4_3' },
  { field: 'image_size', value: 'portrait_16_9' },
  { field: 'image_size', value: 'landscape_4_3' },
  { field: 'image_size', value: 'landscape_16_9' },
  { field: 'image_size', value: { width: 1024, height: 768 } },
  { field: 'image_size', value: { width: 1, height: 14142 } },
  // A side left out is fal's 512 (fal's client types both as optional).
  { field: 'image_size', value: { width: 1024 } },
  { field: 'image_size', value: { height: 300 } },
  { field: 'image_size', value: {} },
  { field: 'loras', value: [] },
  { field: 'loras', value: [{ path: 'https://x/y.safetensors', scale: 0.7 }] },
  { field: 'loras', value: [{ path: 'owner/repo' }] },
  { field: 'loras', value: [{ path: 'owner/repo', scale: 0.5, force: true }] },
  { field: 'sync_mode', value: true },
  { field: 'sync_mode', value: false },
  { field: 'acceleration', value: 'none' },
  { field: 'acceleration', value: 'regular' },
  { field: 'image_url', value: 'https://example.com/cat.png' },
  { field: 'image_url', value: 'http://example.com/cat.png' },
  { field: 'image_url', value: 'data:image/png;base64,iVBORw0KGgo=' },
  { field: 'image_url', value: 'data:image/jpeg;base64,/9j/4AAQSkZJRg==' },
  { field: 'image_url', value: 'data:image/webp;base64,UklGRgAAAABXRUJQ' },
  { field: 'image_url', value: 'data:image/gif;base64,R0lGODlh' },
  { field: 'image_url', value: 'data:image/avif;base64,AAAAIGZ0eXBhdmlm' },
  // Media types are case-insensitive, and image/jpg is a common label for JPEG.
  { field: 'image_url', value: 'data:image/jpg;base64,/9j/4AAQSkZJRg==' },
  { field: 'image_url', value: 'data:IMAGE/JPEG;base64,/9j/4AAQSkZJRg==' },
  // Labelled png, but a GIF: the model reads the bytes, as a browser labels a file by its name.
  { field: 'image_url', value: 'data:image/png;base64,R0lGODlh' },
];

const STRENGTH = ['strength', '0.01', '1'];
const STEPS = ['num_inference_steps', '1', '50'];
const GUIDANCE = ['guidance_scale', '0', '35'];
const IMAGES = ['num_images', '1', '4'];
const IMAGE_URL = ['image_url', 'http', 'data:image/', 'png', 'jpeg', 'webp', 'gif', 'avif'];
const WIDTH = ['width', '1', '14142'];

const rejected: BadCase[] = [
  { field: 'strength', value: 0.009, type: 'greater_than_equal', msg: STRENGTH },
  { field: 'strength', value: 0, type: 'greater_than_equal', msg: STRENGTH },
  { field: 'strength', value: -1, type: 'greater_than_equal', msg: STRENGTH },
  { field: 'strength', value: 1.0001, type: 'less_than_equal', msg: STRENGTH },
  { field: 'strength', value: '0.5', type: 'float_type', msg: STRENGTH },
  { field: 'num_inference_steps', value: 0, type: 'greater_than_equal', msg: STEPS },
  { field: 'num_inference_steps', value: 51, type: 'less_than_equal', msg: STEPS },
  { field: 'num_inference_steps', value: 28.5, type: 'int_from_float', msg: STEPS },
  { field: 'guidance_scale', value: -0.1, type: 'greater_than_equal', msg: GUIDANCE },
  { field: 'guidance_scale', value: 35.1, type: 'less_than_equal', msg: GUIDANCE },
  { field: 'num_images', value: 0, type: 'greater_than_equal', msg: IMAGES },
  { field: 'num_images', value: 5, type: 'less_than_equal', msg: IMAGES },
  { field: 'num_images', value: 2.5, type: 'int_from_float', msg: IMAGES },
  // Fields with a default take no null, as in the model.
  { field: 'num_images', value: null, type: 'int_type', msg: IMAGES },
  { field: 'enable_safety_checker', value: 'true', type: 'bool_type', msg: ['enable_safety_checker', 'true', 'false'] },
  { field: 'enable_safety_checker', value: 1, type: 'bool_type', msg: ['enable_safety_checker', 'true', 'false'] },
  { field: 'output_format', value: 'webp', type: 'literal_error', msg: ['output_format', 'jpeg', 'png'] },
  { field: 'output_format', value: 'JPEG', type: 'literal_error', msg: ['output_format', 'jpeg', 'png'] },
  { field: 'seed', value: 1.5, type: 'int_from_float', msg: ['seed', 'integer'] },
  { field: 'seed', value: '42', type: 'int_type', msg: ['seed', 'integer'] },
  // Past 2^53 a JSON number has lost its last digits already: said so, not "must be an integer".
  { field: 'seed', value: 2 ** 60, type: 'less_than_equal', msg: ['seed', '2^53 - 1'] },
  {
    field: 'image_size',
    value: 'huge',
    type: 'literal_error',
    msg: ['image_size', 'square_hd', 'square', 'portrait_4_3', 'portrait_16_9', 'landscape_4_3', 'landscape_16_9', 'width', 'height'],
  },
  { field: 'image_size', value: { width: 0, height: 10 }, type: 'greater_than_equal', loc: ['body', 'image_size', 'width'], msg: WIDTH },
  { field: 'image_size', value: { width: 14143, height: 10 }, type: 'less_than_equal', loc: ['body', 'image_size', 'width'], msg: WIDTH },
  { field: 'image_size', value: { width: 10, height: '10' }, type: 'int_type', loc: ['body', 'image_size', 'height'], msg: ['height', 'integer'] },
  {
    field: 'image_size',
    value: { width: 10, height: 10, depth: 1 },
    type: 'extra_forbidden',
    loc: ['body', 'image_size', 'depth'],
    msg: ['depth'],
  },
  { field: 'loras', value: [{ scale: 1 }], type: 'missing', loc: ['body', 'loras', 0, 'path'], msg: ['path'] },
  { field: 'loras', value: [{ path: '' }], type: 'string_too_short', loc: ['body', 'loras', 0, 'path'], msg: ['path', 'empty'] },
  { field: 'loras', value: [{ path: 'owner/a', extra: 1 }], type: 'extra_forbidden', loc: ['body', 'loras', 0, 'extra'], msg: ['extra'] },
  { field: 'loras', value: [{ path: 'owner/a', force: 'yes' }], type: 'bool_type', loc: ['body', 'loras', 0, 'force'], msg: ['force', 'boolean'] },
  {
    field: 'loras',
    value: [{ path: 'owner/a' }, { path: 'owner/b', scale: 'x' }],
    type: 'float_type',
    loc: ['body', 'loras', 1, 'scale'],
    msg: ['scale', 'number'],
  },
  { field: 'loras', value: 'notarray', type: 'list_type', msg: ['loras', 'array'] },
  // A bare name instead of {path, scale}: a likely client mistake, so the message must say what is expected.
  { field: 'loras', value: ['owner/repo'], type: 'model_type', loc: ['body', 'loras', 0], msg: ['loras', 'path'] },
  { field: 'sync_mode', value: 'yes', type: 'bool_type', msg: ['sync_mode', 'true', 'false'] },
  { field: 'acceleration', value: 'fast', type: 'literal_error', msg: ['acceleration', 'none', 'regular'] },
  { field: 'prompt', value: '', type: 'string_too_short', msg: ['prompt', 'empty'] },
  { field: 'prompt', value: 123, type: 'string_type', msg: ['prompt', 'string'] },
  { field: 'image_url', value: 'ftp://x/y.png', type: 'value_error', msg: IMAGE_URL },
  { field: 'image_url', value: 'file:///etc/passwd', type: 'value_error', msg: IMAGE_URL },
  { field: 'image_url', value: 'javascript:alert(1)', type: 'value_error', msg: IMAGE_URL },
  { field: 'image_url', value: 'data:text/plain;base64,aGk=', type: 'value_error', msg: IMAGE_URL },
  { field: 'image_url', value: 'data:image/png,notbase64', type: 'value_error', msg: IMAGE_URL },
  { field: 'image_url', value: 'data:image/svg+xml;base64,PHN2Zz4=', type: 'value_error', msg: IMAGE_URL },
  // The accepted form, but data no decoder takes: a paid job would fail on it.
  { field: 'image_url', value: 'data:image/png;base64,A', type: 'value_error', msg: ['image_url', 'base64', 'multiple of 4'] },
  { field: 'image_url', value: 'data:image/png;base64,iVBORw0KGgoAAAANA', type: 'value_error', msg: ['image_url', 'base64', 'multiple of 4'] },
  { field: 'image_url', value: 'data:image/png;base64,PGh0bWw+bm90IGFuIGltYWdlPC9odG1sPg==', type: 'value_error', msg: ['image_url', 'not a png, jpeg, webp, gif or avif image'] },
  { field: 'image_url', value: 'data:image/gif;base64,AAAAAAAAAAAAAAAA', type: 'value_error', msg: ['image_url', 'not a png, jpeg, webp, gif or avif image'] },
  { field: 'image_url', value: 'not a url', type: 'value_error', msg: IMAGE_URL },
  { field: 'image_url', value: 'https://', type: 'value_error', msg: IMAGE_URL },
  { field: 'image_url', value: 42, type: 'string_type', msg: ['image_url', 'string'] },
];

describe('POST /v1/image-to-image: values in range are forwarded exactly as sent', () => {
  it('accepts the seed request verbatim and forwards it unchanged, with no defaults added', async () => {
    const sent = JSON.parse(JSON.stringify(SEED_REQUEST)) as Body;
    const call = expectAccepted(await send(sent), sent);
    expect(Object.keys(call.body as Body).sort()).toEqual(Object.keys(SEED_REQUEST).sort());
  });

  it('accepts the two required fields alone and adds nothing to them', async () => {
    const sent = { prompt: SEED_REQUEST.prompt, image_url: SEED_REQUEST.image_url };
    expectAccepted(await send(sent), sent);
  });

  it.each(accepted)('$field = $value', async ({ field, value }) => {
    const sent = seedWith({ [field]: value });
    expectAccepted(await send(sent), sent);
  });

  it('accepts every optional field at once', async () => {
    const sent = seedWith({
      seed: 7,
      image_size: { width: 512, height: 512 },
      loras: [{ path: 'owner/repo', scale: 0.5 }, { path: 'https://x/z.safetensors' }],
      sync_mode: false,
      acceleration: 'regular',
    });
    expectAccepted(await send(sent), sent);
  });
});

describe('POST /v1/image-to-image: values out of range are rejected before the upstream', () => {
  it.each(rejected.map((c) => ({ ...c, shown: show(c.value) })))(
    '$field = $shown → $type',
    async ({ field, value, type, loc, msg }) => {
      expectRejected(await send(seedWith({ [field]: value })), { loc: loc ?? ['body', field], type, msg });
    },
  );

  it.each(['prompt', 'image_url'])('missing %s → missing', async (field) => {
    expectRejected(await send(seedWithout(field)), { loc: ['body', field], type: 'missing', msg: [field] });
  });

  it('says "required" only when the prompt is missing, "must be a string" when it is something else', async () => {
    const missing = await send(seedWithout('prompt'));
    const wrong = await send(seedWith({ prompt: 5 }));
    expect((missing.body.detail as Entry[])[0]!.msg).toBe('prompt is required');
    expect((wrong.body.detail as Entry[])[0]!.msg).toBe('prompt must be a string');
  });

  it('both required fields missing → one entry each', async () => {
    expectRejected(
      await send({ strength: 0.5 }),
      { loc: ['body', 'prompt'], type: 'missing', msg: ['prompt'] },
      { loc: ['body', 'image_url'], type: 'missing', msg: ['image_url'] },
    );
  });

  it('an unknown top-level field → extra_forbidden at its own loc', async () => {
    expectRejected(await send(seedWith({ negative_prompt: 'blurry' })), {
      loc: ['body', 'negative_prompt'],
      type: 'extra_forbidden',
      msg: ['negative_prompt'],
    });
  });

  it('several problems at once → one entry per problem', async () => {
    expectRejected(
      await send(seedWith({ strength: 2, num_images: 9, foo: 1 })),
      { loc: ['body', 'strength'], type: 'less_than_equal', msg: STRENGTH },
      { loc: ['body', 'num_images'], type: 'less_than_equal', msg: IMAGES },
      { loc: ['body', 'foo'], type: 'extra_forbidden', msg: ['foo'] },
    );
  });

  it('problems in nested values and at the top level are all reported', async () => {
    expectRejected(
      await send(
        seedWith({
          output_format: 'gif',
          image_size: { width: 10, height: 0 },
          loras: [{ path: 'owner/ok' }, { scale: 2 }],
        }),
      ),
      { loc: ['body', 'output_format'], type: 'literal_error', msg: ['output_format'] },
      { loc: ['body', 'image_size', 'height'], type: 'greater_than_equal', msg: ['height', '1', '14142'] },
      { loc: ['body', 'loras', 1, 'path'], type: 'missing', msg: ['path'] },
    );
  });

  it('array indexes in loc are numbers, not strings', async () => {
    const detail = expectRejected(await send(seedWith({ loras: [{ scale: 1 }] })), {
      loc: ['body', 'loras', 0, 'path'],
      type: 'missing',
    });
    expect(typeof detail[0]!.loc[2]).toBe('number');
  });
});

describe('POST /v1/image-to-image: bodies that are not a JSON object', () => {
  it.each([
    { name: 'a JSON array', raw: JSON.stringify([SEED_REQUEST]) },
    { name: 'a JSON string', raw: JSON.stringify('hello') },
    { name: 'null', raw: 'null' },
    { name: 'a number', raw: '42' },
  ])('$name → 422 at loc [body]', async ({ raw }) => {
    const answer = await send(undefined, { raw });
    expect(answer.status, JSON.stringify(answer.body)).toBe(422);
    expect(answer.body.error_type).toBe('validation_error');
    const detail = answer.body.detail as Entry[];
    expect(detail).toHaveLength(1);
    expect(detail[0]!.loc).toEqual(['body']);
    expect(answer.upstream).toEqual([]);
  });

  it('malformed JSON → 400 invalid_json, saying where the syntax breaks', async () => {
    const answer = await send(undefined, { raw: '{"prompt": "a lion",' });
    expect(answer.status).toBe(400);
    expect(answer.body.error_type).toBe('invalid_json');
    expect(answer.body.detail).toMatch(/^The request body is not valid JSON: .*position \d+/);
    expect(answer.upstream).toEqual([]);
  });

  it('valid JSON with a prototype-polluting key → 400 bad_request naming it, not "not valid JSON"', async () => {
    const answer = await send(undefined, { raw: `{"__proto__":{"polluted":true},${JSON.stringify(SEED_REQUEST).slice(1)}` });
    expect(answer.status).toBe(400);
    expect(answer.body).toEqual({ detail: 'The request body may not hold "__proto__" or "constructor" keys', error_type: 'bad_request' });
    expect(answer.upstream).toEqual([]);
  });

  it('a prototype-polluting key spelled with \\u escapes is refused the same way', async () => {
    for (const key of ['\\u005f_proto__', '__\\u0070roto__', 'constructo\\u0072']) {
      const value = key.startsWith('constructo') ? '{"prototype":{"polluted":true}}' : '{"polluted":true}';
      const answer = await send(undefined, { raw: `{"${key}":${value},${JSON.stringify(SEED_REQUEST).slice(1)}` });
      expect(answer.status, key).toBe(400);
      expect(answer.body.error_type).toBe('bad_request');
      expect(answer.upstream).toEqual([]);
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('a body that starts with a byte order mark is read as the JSON after it', async () => {
    expectAccepted(await send(undefined, { raw: `\ufeff${JSON.stringify(SEED_REQUEST)}` }), SEED_REQUEST);
  });

  it('a compressed body (Content-Encoding: gzip) → 415 saying to send it uncompressed, not a JSON error quoting bytes', async () => {
    const { gzipSync } = await import('node:zlib');
    for (const encoding of ['gzip', 'br']) {
      const res = await fetch(`${stack.url}${SUBMIT}`, {
        method: 'POST',
        headers: { ...json, ...stack.bearer('team-a'), 'content-encoding': encoding },
        body: gzipSync(JSON.stringify(SEED_REQUEST)),
      });
      expect(res.status).toBe(415);
      expect(await res.json()).toEqual({ detail: `Content-Encoding "${encoding}" is not supported; send the body uncompressed`, error_type: 'unsupported_media_type' });
    }
    // identity is no encoding at all.
    expectAccepted(await send(SEED_REQUEST, { headers: { 'content-encoding': 'identity' } }), SEED_REQUEST);
  });

  it('JSON declared in a charset other than UTF-8 → 415, not read as the wrong characters', async () => {
    for (const type of ['application/json; charset=utf-16le', 'application/json;charset="ISO-8859-1"']) {
      const answer = await send(undefined, { raw: JSON.stringify(SEED_REQUEST), headers: { 'content-type': type } });
      expect(answer.status).toBe(415);
      expect(answer.body).toMatchObject({ error_type: 'unsupported_media_type', detail: expect.stringContaining('send JSON as UTF-8') });
    }
    for (const type of [
      'application/json; charset=utf-8',
      'application/json; charset=UTF8',
      'application/json; charset="utf-8"',
      // A subset of UTF-8; and a charset= inside another parameter's quoted value is not one.
      'application/json; charset=us-ascii',
      'application/json; profile="x;charset=utf-16"',
    ]) {
      expectAccepted(await send(SEED_REQUEST, { headers: { 'content-type': type } }), SEED_REQUEST);
    }
  });

  it('content-type text/plain → 415 unsupported_media_type', async () => {
    const answer = await send(undefined, { raw: JSON.stringify(SEED_REQUEST), headers: { 'content-type': 'text/plain' } });
    expect(answer.status).toBe(415);
    expect(answer.body.error_type).toBe('unsupported_media_type');
    expect(answer.body.detail).toBe('Content-Type "text/plain" is not supported; send application/json, or multipart/form-data with an image file');
    expect(answer.upstream).toEqual([]);
    // Elsewhere (a cancel with a body) only JSON is taken, and the message says so.
    const cancel = await fetch(`${stack.url}/v1/requests/x/cancel`, { method: 'PUT', headers: { ...stack.bearer('team-a'), 'content-type': 'text/plain' }, body: 'cancel' });
    expect(cancel.status).toBe(415);
    expect(((await cancel.json()) as { detail: string }).detail).toBe('Content-Type "text/plain" is not supported; send application/json');
  });

  it("takes an empty body of any type as no body, so `curl -X PUT -d ''` (labelled as a form) cancels", async () => {
    const job = (await (
      await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-a') }, body: JSON.stringify(SEED_REQUEST) })
    ).json()) as { cancel_url: string };
    for (const type of ['application/x-www-form-urlencoded', 'text/plain']) {
      const cancel = await fetch(job.cancel_url, { method: 'PUT', headers: { ...stack.bearer('team-a'), 'content-type': type }, body: '' });
      expect([202, 400]).toContain(cancel.status);
      expect(((await cancel.json()) as { status: string }).status).toMatch(/^(CANCELLATION_REQUESTED|ALREADY_COMPLETED)$/);
    }
    // A form with something in it is still refused, on a submit too.
    const form = await fetch(`${stack.url}/v1/image-to-image`, {
      method: 'POST',
      headers: { ...stack.bearer('team-a'), 'content-type': 'application/x-www-form-urlencoded' },
      body: 'prompt=x',
    });
    expect(form.status).toBe(415);
    expect(((await form.json()) as { error_type: string }).error_type).toBe('unsupported_media_type');
  });

  it.each([
    { name: 'no body and no content-type', options: { noBody: true } },
    { name: 'an empty body labelled application/json', options: { raw: '' } },
  ])('$name → 400 or 422, in the error envelope', async ({ options }) => {
    const answer = await send(undefined, options);
    expect([400, 422]).toContain(answer.status);
    expect(answer.body.error_type).toEqual(answer.status === 422 ? 'validation_error' : 'invalid_json');
    expect(answer.body.detail).toBeDefined();
    expect(answer.upstream).toEqual([]);
  });
});

describe('POST /v1/image-to-image: query and headers', () => {
  it('?fal_webhook=... → 422 at loc [query, fal_webhook]', async () => {
    const answer = await send(SEED_REQUEST, { query: `?fal_webhook=${encodeURIComponent('https://example.com/hook')}` });
    expectRejected(answer, { loc: ['query', 'fal_webhook'], type: 'value_error', msg: ['ebhook'] });
  });

  it('x-fal-queue-priority: urgent → 422 at loc [header, x-fal-queue-priority]', async () => {
    const answer = await send(SEED_REQUEST, { headers: { 'x-fal-queue-priority': 'urgent' } });
    expectRejected(answer, {
      loc: ['header', 'x-fal-queue-priority'],
      type: 'literal_error',
      msg: ['normal', 'low'],
    });
  });

  it('x-fal-queue-priority: low is accepted and forwarded upstream', async () => {
    const sent = { ...SEED_REQUEST };
    const call = expectAccepted(await send(sent, { headers: { 'x-fal-queue-priority': 'low' } }), sent);
    expect(call.headers['x-fal-queue-priority']).toBe('low');
  });

  it.each(['1', 'true', 'yes', '0', 'no'])('x-fal-no-retry: %s (fal takes 1, true or yes) is accepted and forwarded upstream', async (value) => {
    const call = expectAccepted(await send(SEED_REQUEST, { headers: { 'x-fal-no-retry': value } }), SEED_REQUEST);
    expect(call.headers['x-fal-no-retry']).toBe(value);
  });

  it('x-fal-no-retry: maybe → 422 at loc [header, x-fal-no-retry]', async () => {
    const answer = await send(SEED_REQUEST, { headers: { 'x-fal-no-retry': 'maybe' } });
    expectRejected(answer, { loc: ['header', 'x-fal-no-retry'], type: 'literal_error', msg: ['yes'] });
  });

  it('without x-fal-queue-priority nothing is invented upstream', async () => {
    const call = expectAccepted(await send(SEED_REQUEST), SEED_REQUEST);
    expect(call.headers['x-fal-queue-priority']).toBeUndefined();
  });
});

describe(`POST ${FAL_SUBMIT}: the fal-compatible alias validates identically`, () => {
  it('accepts the seed request and forwards it unchanged', async () => {
    expectAccepted(await send(SEED_REQUEST, { path: FAL_SUBMIT }), SEED_REQUEST);
  });

  it.each([
    { name: 'strength 0.009', body: seedWith({ strength: 0.009 }) },
    { name: 'num_inference_steps 28.5', body: seedWith({ num_inference_steps: 28.5 }) },
    { name: 'image_size width 0', body: seedWith({ image_size: { width: 0, height: 10 } }) },
    { name: 'loras missing path', body: seedWith({ loras: [{ scale: 1 }] }) },
    { name: 'image_url javascript:', body: seedWith({ image_url: 'javascript:alert(1)' }) },
    { name: 'missing prompt', body: seedWithout('prompt') },
    { name: 'three problems', body: seedWith({ strength: 2, num_images: 9, foo: 1 }) },
  ])('$name: same 422 on both paths', async ({ body }) => {
    const native = await send(body);
    const fal = await send(body, { path: FAL_SUBMIT });
    expect(native.status).toBe(422);
    expect(fal.status).toBe(422);
    expect(fal.body).toEqual(native.body);
    expect(native.upstream).toEqual([]);
    expect(fal.upstream).toEqual([]);
  });

  it('accepts a boundary value on the alias too', async () => {
    const sent = seedWith({ strength: 0.01, num_inference_steps: 50, guidance_scale: 35, num_images: 4 });
    expectAccepted(await send(sent, { path: FAL_SUBMIT }), sent);
  });
});
