import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FalValidationEntry } from '../src/errors.js';
import { sniffImageType } from '../src/schemas/image-type.js';
import { renderImage } from '../src/simulator/images.js';
import type { RecordedRequest } from '../src/simulator/index.js';
import { SEED_REQUEST, startStack, upstreamCalls, type Stack } from './helpers.js';
import { authorizeSwaggerUi, chromiumSkipReason, hasChromium, launchChromium } from './support/browser.js';

/**
 * Uploads: POST /v1/image-to-image (and fal's path) as multipart/form-data, with the input image
 * as an `image` file part and every other field as a text part. The gateway reads the image type
 * from the file's bytes, sends it upstream as a data URI inside the same JSON body a JSON client
 * would send, and validates it by the same rules. Real HTTP: fetch with FormData and Blob.
 */

const SUBMIT = '/v1/image-to-image';
const FAL_SUBMIT = '/fal-ai/flux-lora/image-to-image';
const UPSTREAM_SUBMIT = '/fal-ai/flux-lora/image-to-image';

const PNG = renderImage({ width: 16, height: 12, format: 'png', seed: 7 });
const JPEG = renderImage({ width: 16, height: 12, format: 'jpeg', seed: 7 });
/** 1×1 GIF89a and 1×1 lossless WebP, as published. */
const GIF = Buffer.from('R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7', 'base64');
const WEBP = Buffer.from('UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==', 'base64');
/** The start of an AVIF file: its ftyp box (major brand avif), then a few bytes of the next box. */
const AVIF = Buffer.concat([
  Buffer.from([0x00, 0x00, 0x00, 0x1c]),
  Buffer.from('ftypavif\0\0\0\0avifmif1miaf', 'latin1'),
  Buffer.from([0x00, 0x00, 0x00, 0x08, 0x6d, 0x65, 0x74, 0x61]),
]);
const AVIS = Buffer.from(AVIF.toString('latin1').replace('ftypavif', 'ftypavis'), 'latin1');
const SVG = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"><rect width="1" height="1"/></svg>');

/** The seed request's fields as a form sends them: all text. */
const { image_url: _seedImageUrl, ...SEED_FIELDS } = SEED_REQUEST;
const SEED_PARTS: Record<string, string> = Object.fromEntries(Object.entries(SEED_FIELDS).map(([k, v]) => [k, String(v)]));

const dataUri = (type: string, bytes: Buffer) => `data:image/${type};base64,${bytes.toString('base64')}`;

type Entry = FalValidationEntry;

interface Answer {
  status: number;
  headers: Headers;
  body: { status?: string; request_id?: string; detail?: unknown; error_type?: string };
  upstream: RecordedRequest[];
}

interface FileSpec {
  bytes: Buffer;
  /** The client's declared type and name: never trusted. */
  type?: string;
  name?: string;
  field?: string;
}

function form(fields: Record<string, string>, ...files: FileSpec[]): FormData {
  const data = new FormData();
  for (const [name, value] of Object.entries(fields)) data.append(name, value);
  for (const file of files) {
    data.append(file.field ?? 'image', new Blob([new Uint8Array(file.bytes)], { type: file.type ?? 'image/png' }), file.name ?? 'input.png');
  }
  return data;
}

async function post(stack: Stack, body: FormData | string, options: { path?: string; headers?: Record<string, string> } = {}): Promise<Answer> {
  await stack.app.whenIdle();
  const before = upstreamCalls(stack).length;
  const res = await fetch(`${stack.url}${options.path ?? SUBMIT}`, {
    method: 'POST',
    headers: options.headers ?? stack.bearer('team-a'),
    body,
  });
  const text = await res.text();
  let parsed: Answer['body'];
  try {
    parsed = JSON.parse(text) as Answer['body'];
  } catch {
    throw new Error(`gateway answered ${res.status} with a body that is not JSON: ${text.slice(0, 200)}`);
  }
  return { status: res.status, headers: res.headers, body: parsed, upstream: upstreamCalls(stack).slice(before) };
}

/** 200 IN_QUEUE, and the upstream received one submit whose JSON body deep-equals `sent`. */
function expectAccepted(answer: Answer, sent: Record<string, unknown>): void {
  expect(answer.status, JSON.stringify(answer.body)).toBe(200);
  expect(answer.body.status).toBe('IN_QUEUE');
  expect(answer.body.request_id).toEqual(expect.any(String));
  expect(answer.upstream).toHaveLength(1);
  const call = answer.upstream[0]!;
  expect(call.method).toBe('POST');
  expect(call.path).toBe(UPSTREAM_SUBMIT);
  expect(call.headers['content-type']).toMatch(/^application\/json/);
  expect(call.body).toStrictEqual(sent);
}

/** 422 in fal's shape with exactly these (loc, type) entries, and nothing sent upstream. */
function expectRejected(answer: Answer, ...expected: Array<{ loc: Array<string | number>; type: string; msg?: string[] }>): Entry[] {
  expect(answer.status, JSON.stringify(answer.body)).toBe(422);
  expect(answer.body.error_type).toBe('validation_error');
  const detail = answer.body.detail as Entry[];
  expect(detail.map(({ loc, type }) => ({ loc, type })), JSON.stringify(detail)).toEqual(
    expect.arrayContaining(expected.map(({ loc, type }) => ({ loc, type }))),
  );
  expect(detail, JSON.stringify(detail)).toHaveLength(expected.length);
  for (const want of expected) {
    const entry = detail.find((d) => JSON.stringify(d.loc) === JSON.stringify(want.loc) && d.type === want.type)!;
    for (const part of want.msg ?? []) expect(entry.msg).toContain(part);
  }
  expect(answer.upstream, 'a rejected request must not reach the upstream').toEqual([]);
  return detail;
}

let stack: Stack;

beforeAll(async () => {
  stack = await startStack();
});

afterAll(async () => {
  await stack?.close();
});

describe('image types, by their magic bytes', () => {
  it.each([
    ['png', PNG],
    ['jpeg', JPEG],
    ['gif', GIF],
    ['webp', WEBP],
    ['avif', AVIF],
    ['avif', AVIS],
  ] as const)('sniffs %s', (type, bytes) => {
    expect(sniffImageType(bytes)).toBe(type);
  });

  it.each([
    ['text', Buffer.from('hello, this is not an image\n')],
    ['svg', SVG],
    ['empty', Buffer.alloc(0)],
    ['png signature cut short', PNG.subarray(0, 7)],
    ['RIFF but not WEBP', Buffer.from('RIFF\x10\0\0\0WAVEfmt ', 'latin1')],
    ['ftyp but not avif', Buffer.from('\0\0\0\x18ftypmp42\0\0\0\0', 'latin1')],
    ['BMP', Buffer.from('BM\x3a\0\0\0\0\0\0\0', 'latin1')],
  ])('rejects %s', (_name, bytes) => {
    expect(sniffImageType(bytes)).toBeUndefined();
  });
});

describe('multipart submit', () => {
  it('a real PNG with the seed fields as parts: queued, and upstream gets the JSON body with a PNG data URI', async () => {
    const answer = await post(stack, form(SEED_PARTS, { bytes: PNG, type: 'image/png', name: 'dog.png' }));
    expectAccepted(answer, { ...SEED_FIELDS, image_url: dataUri('png', PNG) });
  });

  it('a real JPEG: sent as image/jpeg', async () => {
    const answer = await post(stack, form(SEED_PARTS, { bytes: JPEG, type: 'image/jpeg', name: 'dog.jpg' }));
    expectAccepted(answer, { ...SEED_FIELDS, image_url: dataUri('jpeg', JPEG) });
  });

  it('the bytes decide the type, not the declared type or the file name: JPEG bytes declared image/png', async () => {
    const answer = await post(stack, form(SEED_PARTS, { bytes: JPEG, type: 'image/png', name: 'dog.png' }));
    expectAccepted(answer, { ...SEED_FIELDS, image_url: dataUri('jpeg', JPEG) });
  });

  it.each([
    ['gif', GIF],
    ['webp', WEBP],
    ['avif', AVIF],
  ] as const)('%s is accepted', async (type, bytes) => {
    const answer = await post(stack, form(SEED_PARTS, { bytes, type: 'application/octet-stream', name: 'upload.bin' }));
    expectAccepted(answer, { ...SEED_FIELDS, image_url: dataUri(type, bytes) });
  });

  it('a compressed form (Content-Encoding: gzip) → 415, nothing queued', async () => {
    const { gzipSync } = await import('node:zlib');
    const encoded = new Response(form(SEED_PARTS, { bytes: PNG }));
    const res = await fetch(`${stack.url}${SUBMIT}`, {
      method: 'POST',
      headers: { ...stack.bearer('team-a'), 'content-type': encoded.headers.get('content-type')!, 'content-encoding': 'gzip' },
      body: gzipSync(Buffer.from(await encoded.arrayBuffer())),
    });
    expect(res.status).toBe(415);
    expect(((await res.json()) as { error_type: string }).error_type).toBe('unsupported_media_type');
  });

  it('the fal-compatible path accepts the same multipart body', async () => {
    const answer = await post(stack, form(SEED_PARTS, { bytes: PNG }), { path: FAL_SUBMIT });
    expectAccepted(answer, { ...SEED_FIELDS, image_url: dataUri('png', PNG) });
  });

  it('text parts become the types the model expects: numbers, integers, booleans, JSON objects and arrays', async () => {
    const answer = await post(
      stack,
      form(
        {
          prompt: 'a lion',
          strength: '0.5',
          guidance_scale: '7',
          num_inference_steps: '12',
          num_images: '2',
          seed: '123456',
          // Python's str() of a boolean, as requests sends it.
          enable_safety_checker: 'False',
          sync_mode: 'true',
          output_format: 'png',
          acceleration: 'regular',
          image_size: '{"width": 640, "height": 480}',
          loras: '[{"path": "owner/repo", "scale": 0.7}]',
        },
        { bytes: PNG },
      ),
    );
    expectAccepted(answer, {
      prompt: 'a lion',
      image_url: dataUri('png', PNG),
      strength: 0.5,
      guidance_scale: 7,
      num_inference_steps: 12,
      num_images: 2,
      seed: 123456,
      enable_safety_checker: false,
      sync_mode: true,
      output_format: 'png',
      acceleration: 'regular',
      image_size: { width: 640, height: 480 },
      loras: [{ path: 'owner/repo', scale: 0.7 }],
    });
  });

  it('an image_size preset stays text; loras may come as comma-separated items (as Swagger UI sends them); empty parts are left out', async () => {
    const answer = await post(
      stack,
      form(
        {
          prompt: 'a lion',
          image_size: 'landscape_4_3',
          loras: '{"path":"owner/a","scale":0.5},{"path":"https://example.com/b.safetensors"}',
          seed: '',
          strength: '',
        },
        { bytes: PNG },
      ),
    );
    expectAccepted(answer, {
      prompt: 'a lion',
      image_url: dataUri('png', PNG),
      image_size: 'landscape_4_3',
      loras: [{ path: 'owner/a', scale: 0.5 }, { path: 'https://example.com/b.safetensors' }],
    });
  });

  it('a form without a file may still send image_url as a field', async () => {
    const answer = await post(stack, form({ ...SEED_PARTS, image_url: SEED_REQUEST.image_url }));
    expectAccepted(answer, { ...SEED_REQUEST });
  });
});

describe('uploads that wait for 100 Continue (as curl does for large files)', () => {
  /** Sends a form with `Expect: 100-continue`, writing the body only if the gateway says continue. */
  const waitingUpload = (headers: Record<string, string>) =>
    new Promise<{ continued: boolean; status: number }>((resolve, reject) => {
      const body = new Response(form(SEED_PARTS, { bytes: PNG }));
      void (async () => {
        const bytes = Buffer.from(await body.arrayBuffer());
        let continued = false;
        const req = httpRequest(`${stack.url}${SUBMIT}`, {
          method: 'POST',
          headers: { ...headers, expect: '100-continue', 'content-type': body.headers.get('content-type')!, 'content-length': String(bytes.length) },
        });
        req.on('continue', () => {
          continued = true;
          req.end(bytes);
        });
        req.on('response', (res) => {
          res.resume();
          res.on('end', () => resolve({ continued, status: res.statusCode ?? 0 }));
          if (!continued) req.destroy();
        });
        req.on('error', (err) => (continued ? reject(err) : undefined));
        req.flushHeaders();
      })().catch(reject);
    });

  it('invites a tenant to send its body, and answers an unknown caller 401 without taking it', async () => {
    expect(await waitingUpload(stack.bearer('team-a'))).toEqual({ continued: true, status: 200 });
    const before = upstreamCalls(stack).length;
    expect(await waitingUpload({ authorization: 'Bearer not-a-key' })).toEqual({ continued: false, status: 401 });
    expect(await waitingUpload({})).toEqual({ continued: false, status: 401 });
    expect(upstreamCalls(stack).length).toBe(before);
  });
});

describe('multipart submit: rejected, nothing sent upstream', () => {
  it('a text file named .png and declared image/png: 422 naming the accepted types', async () => {
    const answer = await post(stack, form(SEED_PARTS, { bytes: Buffer.from('definitely not a picture\n'), type: 'image/png', name: 'photo.png' }));
    expectRejected(answer, { loc: ['body', 'image'], type: 'value_error', msg: ['png', 'jpeg', 'webp', 'gif', 'avif'] });
  });

  it('an SVG: 422', async () => {
    const answer = await post(stack, form(SEED_PARTS, { bytes: SVG, type: 'image/svg+xml', name: 'vector.svg' }));
    expectRejected(answer, { loc: ['body', 'image'], type: 'value_error', msg: ['png', 'jpeg', 'webp', 'gif', 'avif'] });
  });

  it('both an image part and an image_url field: 422', async () => {
    const answer = await post(stack, form({ ...SEED_PARTS, image_url: SEED_REQUEST.image_url }, { bytes: PNG }));
    expectRejected(answer, { loc: ['body', 'image'], type: 'value_error', msg: ['image_url'] });
  });

  it('an unknown field part: 422 extra_forbidden, as for JSON', async () => {
    const answer = await post(stack, form({ ...SEED_PARTS, colour: 'blue' }, { bytes: PNG }));
    expectRejected(answer, { loc: ['body', 'colour'], type: 'extra_forbidden', msg: ['colour'] });
  });

  it('strength "2": 422 less_than_equal with the JSON body\'s message', async () => {
    const answer = await post(stack, form({ ...SEED_PARTS, strength: '2' }, { bytes: PNG }));
    expectRejected(answer, { loc: ['body', 'strength'], type: 'less_than_equal', msg: ['strength must be a number between 0.01 and 1'] });
  });

  it.each([
    { field: 'strength', value: 'abc', type: 'float_type', msg: 'strength must be a number between 0.01 and 1' },
    { field: 'num_images', value: '2.5', type: 'int_from_float', msg: 'num_images must be an integer between 1 and 4' },
    { field: 'num_inference_steps', value: '0x10', type: 'int_type', msg: 'num_inference_steps must be an integer' },
    { field: 'enable_safety_checker', value: 'yes', type: 'bool_type', msg: 'enable_safety_checker must be true or false' },
    { field: 'loras', value: 'owner/repo', type: 'list_type', msg: 'loras must be an array' },
    { field: 'image_size', value: '{"width": 640', type: 'literal_error', msg: 'image_size must be one of' },
  ])('$field "$value" that cannot be read: 422 $type from the usual validation', async ({ field, value, type, msg }) => {
    const answer = await post(stack, form({ ...SEED_PARTS, [field]: value }, { bytes: PNG }));
    expectRejected(answer, { loc: ['body', field], type, msg: [msg] });
  });

  it('no image at all: 422 image_url required, as for JSON', async () => {
    const answer = await post(stack, form(SEED_PARTS));
    expectRejected(answer, { loc: ['body', 'image_url'], type: 'missing' });
  });

  it('a file part with another name: 422', async () => {
    const answer = await post(stack, form(SEED_PARTS, { bytes: PNG, field: 'picture' }));
    expectRejected(answer, { loc: ['body', 'picture'], type: 'value_error', msg: ['image'] });
  });

  it('more than one file: 422', async () => {
    const answer = await post(stack, form(SEED_PARTS, { bytes: PNG }, { bytes: JPEG, name: 'second.jpg' }));
    expectRejected(answer, { loc: ['body'], type: 'value_error', msg: ['one file'] });
  });

  it('the image sent as a text field: 422', async () => {
    const answer = await post(stack, form({ ...SEED_PARTS, image: 'https://example.com/dog.png' }));
    expectRejected(answer, { loc: ['body', 'image'], type: 'value_error', msg: ['file'] });
  });

  it('a field sent twice: 422', async () => {
    const data = form(SEED_PARTS, { bytes: PNG });
    data.append('strength', '0.5');
    expectRejected(await post(stack, data), { loc: ['body', 'strength'], type: 'value_error', msg: ['once'] });
  });

  it('a text part longer than a form field may hold: 422', async () => {
    const answer = await post(stack, form({ ...SEED_PARTS, prompt: 'x'.repeat(70 * 1024) }, { bytes: PNG }));
    expectRejected(answer, { loc: ['body', 'prompt'], type: 'string_too_long' });
  });

  it('too many fields: 422', async () => {
    const extra = Object.fromEntries(Array.from({ length: 25 }, (_, i) => [`extra_${i}`, 'x']));
    const answer = await post(stack, form({ ...SEED_PARTS, ...extra }, { bytes: PNG }));
    expectRejected(answer, { loc: ['body'], type: 'value_error', msg: ['at most'] });
  });

  it('a multipart content type without a boundary: 400', async () => {
    const answer = await post(stack, 'prompt=a+lion', { headers: { ...stack.bearer('team-a'), 'content-type': 'multipart/form-data' } });
    expect(answer.status, JSON.stringify(answer.body)).toBe(400);
    expect(answer.body.error_type).toBe('bad_request');
    expect(answer.upstream).toEqual([]);
  });

  it('a body that never names the declared boundary (JSON under a form type, say): 400 that says so', async () => {
    for (const [type, body] of [
      ['multipart/form-data; boundary=xyz', '{"prompt":"a lion"}'],
      ['multipart/form-data; boundary="xyz"', 'prompt=a+lion'],
    ] as const) {
      const answer = await post(stack, body, { headers: { ...stack.bearer('team-a'), 'content-type': type } });
      expect(answer.status, JSON.stringify(answer.body)).toBe(400);
      expect(answer.body.error_type).toBe('bad_request');
      expect(answer.body.detail).toMatch(/^The multipart body holds no part: nothing in it is delimited by its boundary \("xyz"\)\. Send JSON as application\/json/);
      expect(answer.upstream).toEqual([]);
    }
  });

  it('a form of the declared boundary with no parts: an empty form, so 422 naming the fields it needs', async () => {
    const answer = await post(stack, '--xyz--\r\n', { headers: { ...stack.bearer('team-a'), 'content-type': 'multipart/form-data; boundary=xyz' } });
    expectRejected(answer, { loc: ['body', 'prompt'], type: 'missing' }, { loc: ['body', 'image_url'], type: 'missing' });
  });

  it('multipart on a route that takes no form: 415, as before', async () => {
    const res = await fetch(`${stack.url}/v1/requests/00000000-0000-0000-0000-000000000000/cancel`, {
      method: 'PUT',
      headers: stack.bearer('team-a'),
      body: form(SEED_PARTS, { bytes: PNG }),
    });
    expect(res.status).toBe(415);
    expect(((await res.json()) as { error_type: string }).error_type).toBe('unsupported_media_type');
  });

  it('without a key: 401 before any part is read (the body need not even finish), nothing upstream', async () => {
    await stack.app.whenIdle();
    const before = upstreamCalls(stack).length;
    const answer = await post(stack, form(SEED_PARTS, { bytes: PNG }), { headers: {} });
    expect(answer.status).toBe(401);
    expect(answer.body.error_type).toBe('unauthorized');

    // A body that never ends: the 401 still arrives, so the gateway did not wait to read it.
    const endless = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('--b\r\ncontent-disposition: form-data; name="prompt"\r\n\r\na lion\r\n'));
      },
    });
    const controller = new AbortController();
    const res = await fetch(`${stack.url}${SUBMIT}`, {
      method: 'POST',
      headers: { 'content-type': 'multipart/form-data; boundary=b' },
      body: endless,
      signal: controller.signal,
      duplex: 'half',
    } as RequestInit);
    expect(res.status).toBe(401);
    await res.body?.cancel();
    controller.abort();
    await stack.app.whenIdle();
    expect(upstreamCalls(stack).length).toBe(before);
  });
});

describe('the file size cap', () => {
  let small: Stack;

  beforeAll(async () => {
    small = await startStack({ env: { IMAGE_DATA_URI_MAX_BYTES: '4096' } });
  });

  afterAll(async () => {
    await small?.close();
  });

  it('a file over the cap: 413 in the gateway envelope, nothing upstream', async () => {
    const big = Buffer.concat([PNG, Buffer.alloc(5000 - PNG.length, 0x41)]);
    expect(sniffImageType(big)).toBe('png');
    const answer = await post(small, form(SEED_PARTS, { bytes: big }));
    expect(answer.status, JSON.stringify(answer.body)).toBe(413);
    // The file cap is what fits the 4096-byte data-URI cap once base64-encoded: 3054 bytes.
    expect(answer.body).toEqual({ detail: expect.stringContaining('3054') as unknown, error_type: 'image_too_large' });
    expect(answer.upstream).toEqual([]);
  });

  it('a file exactly at the file cap goes through: its data URI fits the data-URI cap', async () => {
    const edge = Buffer.concat([PNG, Buffer.alloc(3054 - PNG.length, 0x41)]);
    const answer = await post(small, form(SEED_PARTS, { bytes: edge }));
    expect(answer.status, JSON.stringify(answer.body)).toBe(200);
    const over = await post(small, form(SEED_PARTS, { bytes: Buffer.concat([edge, Buffer.from([0x41])]) }));
    expect(over.status).toBe(413);
  });

  it('a small file on the same gateway still goes through', async () => {
    const answer = await post(small, form(SEED_PARTS, { bytes: GIF, type: 'image/gif', name: 'dot.gif' }));
    expectAccepted(answer, { ...SEED_FIELDS, image_url: dataUri('gif', GIF) });
  });
});

describe('the body limit on forms (BODY_LIMIT_BYTES)', () => {
  let limited: Stack;
  const LIMIT = 65_536;

  beforeAll(async () => {
    limited = await startStack({ env: { BODY_LIMIT_BYTES: String(LIMIT) } });
  });

  afterAll(async () => {
    await limited?.close();
  });

  /** Sends a valid form with `padding` bytes of preamble before its first part; chunked when `declare` is false. */
  function send(padding: number, declare: boolean): Promise<{ status: number; body: string }> {
    const boundary = 'gateway-test-boundary';
    const fields = Object.entries(SEED_PARTS).map(([name, value]) => `--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`);
    const file = `--${boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n`;
    // A preamble (text before the first boundary, which ends a line) is allowed and skipped by parsers.
    const body = Buffer.concat([Buffer.alloc(padding, 0x20), Buffer.from(`\r\n${fields.join('')}${file}`), PNG, Buffer.from(`\r\n--${boundary}--\r\n`)]);
    return new Promise((resolve) => {
      let answered = false;
      const req = httpRequest(`${limited.url}${SUBMIT}`, {
        method: 'POST',
        headers: {
          ...limited.bearer('team-a'),
          'content-type': `multipart/form-data; boundary=${boundary}`,
          ...(declare ? { 'content-length': String(body.length) } : { 'transfer-encoding': 'chunked' }),
        },
      }, (res) => {
        answered = true;
        let text = '';
        res.on('data', (chunk: Buffer) => (text += chunk.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      });
      // Refused early, the rest of the upload may hit a closed connection: only an error before any answer counts.
      req.on('error', () => answered || resolve({ status: -1, body: '' }));
      // In pieces, as a slow or streaming client sends it.
      for (let at = 0; at < body.length; at += 16_384) req.write(body.subarray(at, at + 16_384));
      req.end();
    });
  }

  it.each([
    ['declared with Content-Length', true],
    ['streamed without a length (chunked)', false],
  ])('a form over the limit, %s: 413 payload_too_large, nothing queued', async (_name, declare) => {
    await limited.app.whenIdle();
    const before = upstreamCalls(limited).length;
    const answer = await send(LIMIT * 4, declare);
    expect(answer.status).toBe(413);
    expect(JSON.parse(answer.body)).toEqual({ detail: `The request body exceeds the limit of ${LIMIT} bytes`, error_type: 'payload_too_large' });
    expect(upstreamCalls(limited).length).toBe(before);
  });

  it('a form within the limit goes through, chunked or not', async () => {
    expect((await send(1_000, true)).status).toBe(200);
    expect((await send(1_000, false)).status).toBe(200);
  });

  it('warns at start that the data URI cap (8 MiB by default) is past what this body limit lets through', () => {
    const warnings = limited.logs.map((l) => JSON.parse(l) as { level: number; msg: string }).filter((l) => l.msg.startsWith('IMAGE_DATA_URI_MAX_BYTES'));
    expect(warnings).toEqual([
      expect.objectContaining({
        level: 40,
        msg: `IMAGE_DATA_URI_MAX_BYTES (8388608) is more than the data URI of the largest image a submit body of BODY_LIMIT_BYTES (${LIMIT}) can carry (87407): larger images are refused as payload_too_large first; raise BODY_LIMIT_BYTES to let them through`,
      }),
    ]);
  });
});

describe('OpenAPI', () => {
  interface Media {
    schema: { $ref?: string; type?: string; required?: string[]; properties?: Record<string, { type?: string; format?: string }> };
  }

  it.each([SUBMIT, FAL_SUBMIT])('POST %s takes JSON (first) and multipart/form-data with a binary image part or an image_url', async (path) => {
    const doc = (await (await fetch(`${stack.url}/openapi.json`)).json()) as {
      paths: Record<string, { post: { requestBody: { content: Record<string, Media> } } }>;
    };
    const content = doc.paths[path]!.post.requestBody.content;
    expect(Object.keys(content)).toEqual(['application/json', 'multipart/form-data']);
    expect(content['application/json']!.schema.$ref).toBe('#/components/schemas/ModelInput');
    const formSchema = content['multipart/form-data']!.schema;
    expect(formSchema.type).toBe('object');
    expect(formSchema.properties!.image).toMatchObject({ type: 'string', format: 'binary' });
    expect(Object.keys(formSchema.properties!).sort()).toEqual(
      ['prompt', 'image', 'image_url', 'strength', 'num_inference_steps', 'guidance_scale', 'num_images', 'enable_safety_checker', 'output_format', 'seed', 'image_size', 'loras', 'sync_mode', 'acceleration'].sort(),
    );
    // Either the file or the URL: neither is required on its own.
    expect(formSchema.required).toEqual(['prompt']);
    expect(formSchema.properties!.image_url).toMatchObject({ type: 'string' });
  });
});


describe.skipIf(!hasChromium)(`Swagger UI${chromiumSkipReason}`, () => {
  it('shows a file picker for multipart/form-data, and "Execute" with a chosen file queues the job', { timeout: 60_000 }, async () => {
    const browser = await launchChromium();
    try {
      const page = await browser.newPage({ viewport: { width: 1300, height: 1600 } });
      await page.goto(`${stack.url}/docs`);
      await authorizeSwaggerUi(page, stack.keys['team-a']!);

      const op = page.locator('#operations-Image_to_image-submit');
      await op.locator('.opblock-summary').click();
      const contentType = op.locator('.opblock-section-request-body select');
      expect(await contentType.inputValue()).toBe('application/json');
      await contentType.selectOption('multipart/form-data');
      const picker = op.locator('input[type=file]');
      await picker.waitFor();
      await picker.setInputFiles({ name: 'dog.jpg', mimeType: 'image/jpeg', buffer: JPEG });

      await stack.app.whenIdle();

      const before = upstreamCalls(stack).length;
      await op.locator('.execute').click();
      const status = op.locator('.live-responses-table tbody .response-col_status').first();
      await status.waitFor();
      expect((await status.textContent())!.trim()).toBe('200');
      const sent = upstreamCalls(stack).slice(before);
      expect(sent).toHaveLength(1);
      expect((sent[0]!.body as { image_url: string }).image_url).toBe(dataUri('jpeg', JPEG));
    } finally {
      await browser.close();
    }
  });

  it('lets the form send an image URL instead of a file, its field starting empty', { timeout: 60_000 }, async () => {
    const browser = await launchChromium();
    try {
      const page = await browser.newPage({ viewport: { width: 1300, height: 1600 } });
      await page.goto(`${stack.url}/docs`);
      await authorizeSwaggerUi(page, stack.keys['team-a']!);

      const op = page.locator('#operations-Image_to_image-submit');
      await op.locator('.opblock-summary').click();
      await op.locator('.opblock-section-request-body select').selectOption('multipart/form-data');
      const urlField = op.locator('tr[data-property-name="image_url"] input[type=text]');
      await urlField.waitFor();
      expect(await urlField.inputValue()).toBe('');
      await urlField.fill(SEED_REQUEST.image_url);

      await stack.app.whenIdle();
      const before = upstreamCalls(stack).length;
      await op.locator('.execute').click();
      const status = op.locator('.live-responses-table tbody .response-col_status').first();
      await status.waitFor();
      expect((await status.textContent())!.trim()).toBe('200');
      const sent = upstreamCalls(stack).slice(before);
      expect(sent).toHaveLength(1);
      expect((sent[0]!.body as { image_url: string }).image_url).toBe(SEED_REQUEST.image_url);
    } finally {
      await browser.close();
    }
  });
});
