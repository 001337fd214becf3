import fc from 'fast-check';
import { IMAGE_SIZE_PRESETS } from '../../src/schemas/model-input.js';
import { SEED_REQUEST } from '../../src/model.js';

/**
 * Generators for the submit-body fuzz tests: valid model inputs drawn from the ranges of
 * fal-queue-api.md §6, mutations of them, edge numbers, tricky text and raw (non-JSON) bodies.
 * Generated values are plain data (no functions), so a counterexample prints readably.
 */

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type Body = Record<string, unknown>;

export const FIELDS = [
  'prompt',
  'image_url',
  'strength',
  'num_inference_steps',
  'guidance_scale',
  'num_images',
  'enable_safety_checker',
  'output_format',
  'seed',
  'image_size',
  'loras',
  'sync_mode',
  'acceleration',
] as const;

export const seedBody = (): Body => ({ ...SEED_REQUEST });

/** Sets an own, enumerable property, even for keys like `__proto__` that assignment would treat specially. */
export function defineOwn(target: object, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

// ---------------------------------------------------------------------------------------------
// Text

/** Strings that have broken parsers, loggers and validators before. */
export const TRICKY_STRINGS = [
  '\u200b', // zero-width space
  '\u200c',
  '\u200d', // zero-width joiner
  '\u2060',
  '\u202e', // right-to-left override
  '\u202d',
  '\u2066', // isolates
  '\u2069',
  '\u061c', // arabic letter mark
  '\u05d0\u05e8\u05d9\u05d4', // hebrew
  '\u0627\u0644\u0623\u0633\u062f', // arabic
  '\ufeff', // BOM inside a string
  '\u0000',
  '\u0007',
  '\u001f',
  '\u007f',
  '\u0085',
  '\u00a0',
  '\u2028', // line/paragraph separators (valid JSON, invalid JS before ES2019)
  '\u2029',
  '\ud800', // lone surrogates
  '\udfff',
  '\udc00\ud800', // reversed pair
  '\ud83e\udd81', // lion emoji (astral)
  '\ud83d\udc69\u200d\ud83d\udc69\u200d\ud83d\udc67', // ZWJ family
  '\ud83c\uddfa\ud83c\uddf8', // flag
  'e\u0301', // combining acute
  'Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334', // zalgo
  '\u0130', // dotted capital I (case folding)
  '\u00df',
  '\ufb01',
  '\uffff',
  '\ufffd',
  '\u{10ffff}',
  '\u{1d54f}',
  '"',
  '\\',
  '\\u0000',
  '\\"',
  '</script>',
  '${7*7}',
  '{{7*7}}',
  '%00',
  '%s%n',
  "'; DROP TABLE jobs; --",
  '\r\n',
  '\t',
] as const;

export const trickyString = fc.oneof(
  { arbitrary: fc.constantFrom(...TRICKY_STRINGS), weight: 3 },
  { arbitrary: fc.array(fc.constantFrom(...TRICKY_STRINGS), { minLength: 1, maxLength: 6 }).map((p) => p.join('')), weight: 3 },
  { arbitrary: fc.string({ unit: 'grapheme' }), weight: 2 },
  { arbitrary: fc.string({ unit: 'binary' }), weight: 2 },
  { arbitrary: fc.string({ unit: 'binary-ascii' }), weight: 1 },
  { arbitrary: fc.string(), weight: 1 },
);

const nonEmpty = (s: fc.Arbitrary<string>) => s.filter((v) => v.length > 0);

// ---------------------------------------------------------------------------------------------
// Valid model input (§6)

/** The formats §6 lists for data URIs (reseller docs add `jpg`; the schema decides whether it is accepted). */
const IMAGE_FORMATS = ['png', 'jpeg', 'webp', 'gif', 'avif'] as const;

/** Each format's first bytes, as its decoder checks them; the rest of an image is arbitrary here. */
const IMAGE_HEADS: Record<(typeof IMAGE_FORMATS)[number], Buffer> = {
  png: Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
  jpeg: Buffer.from([0xff, 0xd8, 0xff, 0xe0]),
  webp: Buffer.from('RIFF\0\0\0\0WEBP', 'latin1'),
  gif: Buffer.from('GIF89a', 'latin1'),
  avif: Buffer.from('\0\0\0\x20ftypavif', 'latin1'),
};

/** A data URI as a browser makes one: the label may name another format than the bytes. */
export const dataUri = fc
  .tuple(fc.constantFrom(...IMAGE_FORMATS), fc.constantFrom(...IMAGE_FORMATS), fc.uint8Array({ maxLength: 300 }))
  .map(([label, format, rest]) => `data:image/${label};base64,${Buffer.concat([IMAGE_HEADS[format], rest]).toString('base64')}`);

export const httpUrl = fc.webUrl({ validSchemes: ['http', 'https'], withQueryParameters: true, withFragments: true });

/** A Hugging Face name: owner/repo, optionally a file inside it. */
export const hfName = fc
  .tuple(
    fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,15}$/),
    fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,15}$/),
    fc.option(fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,15}\.safetensors$/), { nil: undefined }),
  )
  .map(([owner, repo, file]) => [owner, repo, file].filter((p) => p !== undefined).join('/'))
  .filter((name) => !name.includes('..'));

/** Strings that look like an image_url and may or may not be one. */
export const imageUrlLike = fc.oneof(
  fc.tuple(
    fc.constantFrom('png', 'jpg', 'JPEG', 'PNG', 'svg+xml', 'x-icon', 'bmp', 'tiff', '', 'png ', 'heic'),
    fc.constantFrom(';base64,', ',', ';charset=utf-8;base64,', ';BASE64,', ';base64 ,'),
    fc.oneof(fc.base64String({ maxLength: 40 }), fc.string({ maxLength: 10 })),
  ).map(([format, sep, data]) => `data:image/${format}${sep}${data}`),
  fc.webUrl({ validSchemes: ['ftp', 'file', 'javascript', 'data', 'ws', 'gopher', 'HTTP', 'Https', 'http', 'https'] }),
  fc.constantFrom(
    'https://',
    'http://',
    'https:///x.png',
    '//example.com/x.png',
    'https//example.com/x.png',
    'https://exa mple.com/x.png',
    'https://[::1]/x.png',
    'http://127.0.0.1:1/x.png',
    'https://\u0000/x.png',
    ' https://example.com/x.png',
    'https://example.com/x.png ',
    'HTTPS://EXAMPLE.COM/X.PNG',
    'https://user:pass@example.com/x.png',
    'https://xn--nxasmq6b.com/x.png',
    'https://\u4f8b\u5b50.\u6d4b\u8bd5/x.png',
    'data:image/png;base64,',
    'data:image/png;base64,====',
    'data:image/png;base64,AAAA===',
  ),
);

/** Strings that look like a LoRA path and may or may not be one. */
export const loraPathLike = fc.oneof(
  hfName,
  httpUrl,
  fc.constantFrom(
    'owner',
    'owner/',
    '/repo',
    'owner/repo/',
    'owner//repo',
    'owner/../repo',
    '../../etc/passwd',
    'owner/repo/../../x',
    '.owner/repo',
    '-owner/repo',
    'owner/repo name',
    'hf://owner/repo',
    's3://bucket/key',
    'file:///etc/passwd',
    'javascript:alert(1)',
    'C:\\weights\\x.safetensors',
  ),
);

export const prompt = fc.oneof(
  { arbitrary: nonEmpty(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 80 })), weight: 3 },
  { arbitrary: nonEmpty(fc.string({ unit: 'binary', minLength: 1 })), weight: 1 },
  { arbitrary: nonEmpty(trickyString), weight: 2 },
  { arbitrary: fc.constant(SEED_REQUEST.prompt), weight: 1 },
);

const lora = fc.record(
  {
    path: fc.oneof(hfName, httpUrl),
    scale: fc.double({ noNaN: true, noDefaultInfinity: true }),
  },
  { requiredKeys: ['path'] },
);

export const validInput: fc.Arbitrary<Body> = fc.record(
  {
    prompt,
    image_url: fc.oneof(httpUrl, dataUri, fc.constant(SEED_REQUEST.image_url)),
    strength: fc.double({ min: 0.01, max: 1, noNaN: true }),
    num_inference_steps: fc.integer({ min: 1, max: 50 }),
    guidance_scale: fc.double({ min: 0, max: 35, noNaN: true }),
    num_images: fc.integer({ min: 1, max: 4 }),
    enable_safety_checker: fc.boolean(),
    output_format: fc.constantFrom('jpeg', 'png'),
    seed: fc.oneof(fc.integer(), fc.maxSafeInteger()),
    image_size: fc.oneof(
      fc.constantFrom(...IMAGE_SIZE_PRESETS),
      fc.record({ width: fc.integer({ min: 1, max: 14142 }), height: fc.integer({ min: 1, max: 14142 }) }),
    ),
    loras: fc.array(lora, { maxLength: 4 }),
    sync_mode: fc.boolean(),
    acceleration: fc.constantFrom('none', 'regular'),
  },
  { requiredKeys: ['prompt', 'image_url'] },
);

// ---------------------------------------------------------------------------------------------
// Numbers at the edges

const f64 = new Float64Array(1);
const i64 = new BigInt64Array(f64.buffer);

/** The next double towards +Infinity (one ulp up). */
export function nextUp(x: number): number {
  if (Number.isNaN(x) || x === Infinity) return x;
  if (x === 0) return Number.MIN_VALUE;
  f64[0] = x;
  i64[0]! += x > 0 ? 1n : -1n;
  return f64[0]!;
}

export const nextDown = (x: number): number => -nextUp(-x);

/** Numeric fields and their §6 limits (seed: any safe integer; loras scale: any number). */
export const NUMERIC_FIELDS: Record<string, [number, number]> = {
  strength: [0.01, 1],
  num_inference_steps: [1, 50],
  guidance_scale: [0, 35],
  num_images: [1, 4],
  seed: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  'image_size.width': [1, 14142],
  'image_size.height': [1, 14142],
  'loras.0.scale': [-Number.MAX_VALUE, Number.MAX_VALUE],
};

export const GLOBAL_EDGES = [
  0,
  -0,
  1,
  -1,
  1e308,
  -1e308,
  Number.MAX_VALUE,
  -Number.MAX_VALUE,
  5e-324,
  -5e-324,
  2.2250738585072014e-308,
  Number.EPSILON,
  Number.MAX_SAFE_INTEGER,
  Number.MAX_SAFE_INTEGER + 1,
  Number.MAX_SAFE_INTEGER + 2,
  Number.MIN_SAFE_INTEGER,
  Number.MIN_SAFE_INTEGER - 2,
  0.1 + 0.2,
  0.5,
  1.5,
  2 ** 31 - 1,
  2 ** 31,
  2 ** 32,
  2 ** 53,
  2 ** 64,
  -(2 ** 63),
  1 - 2 ** -53,
  28.000000000000004,
];

export function edgesOf([min, max]: [number, number]): number[] {
  return [min, max, nextUp(min), nextDown(min), nextUp(max), nextDown(max), min - 1, max + 1, (min + max) / 2, -min, -max];
}

/**
 * Number spellings only raw text can carry. Some are not JSON (NaN, Infinity, hex, leading +);
 * some are JSON yet overflow when parsed (1e999 → Infinity, 1e-999 → 0).
 */
export const RAW_NUMBER_TOKENS = [
  'NaN',
  '-NaN',
  'Infinity',
  '-Infinity',
  '+Infinity',
  '1e999',
  '-1e999',
  '1e-999',
  '-1e-999',
  '1E400',
  '-0',
  '-0.0',
  '0.0',
  '0e0',
  '1.0',
  '1E0',
  '1e+0',
  '28.0',
  '2.8e1',
  '2.8E+1',
  '28.000000000000001',
  '3.5000000000000000000000000000001',
  '9007199254740993',
  '-9007199254740993',
  '123456789012345678901234567890',
  '0.' + '0'.repeat(400) + '1',
  '1' + '0'.repeat(400),
  '0x1c',
  '0b1',
  '0o7',
  '+1',
  '.5',
  '5.',
  '01',
  '00',
  '1_000',
  '1e',
  '1e+',
  '-',
  '--1',
  '1.2.3',
  '\u0661', // arabic-indic digit one
  '\uff11', // fullwidth digit one
  'true',
  'null',
  '"28"',
  '[28]',
  '{"value":28}',
];

// ---------------------------------------------------------------------------------------------
// Keys

export const SPECIAL_KEYS = [
  '__proto__',
  'constructor',
  'prototype',
  'toString',
  'valueOf',
  'hasOwnProperty',
  'isPrototypeOf',
  '__defineGetter__',
  '__lookupGetter__',
  'length',
  '0',
  '-1',
  '',
  ' ',
  'prompt ',
  ' prompt',
  'Prompt',
  'PROMPT',
  'prompt\u200b',
  '\u200bprompt',
  'pro\u200dmpt',
  '\u202eprompt',
  '\u202etpmorp',
  'prompt\u0000',
  '\ufeffprompt',
  'im\u00e1ge_url',
  'image\u2010url',
  'image-url',
  'imageUrl',
  '\uff50\uff52\uff4f\uff4d\uff50\uff54', // fullwidth "prompt"
  '\u0440rompt', // cyrillic er
  '\ud83e\udd81',
  '\ud800',
  'loras[0]',
  'image_size.width',
  'body',
  'detail',
  'error_type',
  'fal_webhook',
  'negative_prompt',
  '$where',
  'a'.repeat(1000),
] as const;

export const unknownKey = fc.oneof(
  { arbitrary: fc.constantFrom(...SPECIAL_KEYS), weight: 4 },
  { arbitrary: trickyString, weight: 2 },
  { arbitrary: fc.string(), weight: 1 },
);

/**
 * A constant object or array copied for each use: the mutations add keys to nested objects, and
 * one shared instance would carry them into later runs (or into itself: a cycle).
 */
const fresh = (value: Json): Json => structuredClone(value);

/** Values meant to pollute a prototype if a parser or merge were naive. */
export const pollutant = fc
  .constantFrom<Json>({ polluted: 'yes' }, { prototype: { polluted: 'yes' } }, { __proto__polluted: 1 }, { toString: 'polluted' })
  .map(fresh);

export const jsonValue = fc.jsonValue() as fc.Arbitrary<Json>;

export const anyValue: fc.Arbitrary<Json> = fc.oneof(
  { arbitrary: jsonValue, weight: 4 },
  { arbitrary: pollutant, weight: 1 },
  { arbitrary: trickyString as fc.Arbitrary<Json>, weight: 1 },
  { arbitrary: fc.constantFrom<Json>(null, true, false, 0, -1, '', [], {}, [null], { path: null }).map(fresh), weight: 2 },
);

// ---------------------------------------------------------------------------------------------
// Mutations of a body, as data

export type Op =
  | { op: 'drop'; field: string }
  | { op: 'set'; field: string; value: Json }
  | { op: 'add'; key: string; value: Json }
  | { op: 'addNested'; where: 'image_size' | 'lora'; key: string; value: Json }
  | { op: 'setNested'; where: 'image_size.width' | 'image_size.height' | 'lora.path' | 'lora.scale'; value: Json };

const field = fc.constantFrom<string>(...FIELDS);

/** Values near what a field accepts: the right type, the wrong case, a neighbouring enum value. */
const nearValue: fc.Arbitrary<{ field: string; value: Json }> = fc.oneof(
  fc.record({ field: fc.constant('image_url'), value: imageUrlLike }),
  fc.record({ field: fc.constant('prompt'), value: fc.oneof(trickyString, fc.constantFrom('', ' ', '\u200b')) }),
  fc.record({
    field: fc.constantFrom('output_format', 'acceleration', 'image_size'),
    value: fc.constantFrom<Json>('jpeg', 'png', 'JPEG', 'jpg', 'webp', 'none', 'regular', 'None', 'square', 'square_hd', 'SQUARE', 'portrait_4_3 ', 'landscape_21_9', '', { width: 512 }, { height: 512 }, { width: '512', height: 512 }),
  }),
  fc.record({
    field: fc.constant('loras'),
    value: fc.array(
      fc.oneof(
        fc.record({ path: loraPathLike as fc.Arbitrary<Json>, scale: fc.oneof(fc.double({ noNaN: true, noDefaultInfinity: true }), anyValue) }, { requiredKeys: ['path'] }),
        anyValue,
      ),
      { maxLength: 3 },
    ) as fc.Arbitrary<Json>,
  }),
  fc.record({ field: fc.constantFrom('enable_safety_checker', 'sync_mode'), value: fc.constantFrom<Json>(true, false, 'true', 'false', 0, 1, null, 'yes') }),
);

export const op: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.record({ op: fc.constant('drop' as const), field }), weight: 2 },
  { arbitrary: fc.record({ op: fc.constant('set' as const), field, value: anyValue }), weight: 3 },
  { arbitrary: nearValue.map(({ field: f, value }) => ({ op: 'set' as const, field: f, value })), weight: 3 },
  { arbitrary: fc.record({ op: fc.constant('add' as const), key: unknownKey, value: anyValue }), weight: 3 },
  {
    arbitrary: fc.record({
      op: fc.constant('addNested' as const),
      where: fc.constantFrom('image_size' as const, 'lora' as const),
      key: unknownKey,
      value: anyValue,
    }),
    weight: 1,
  },
  {
    arbitrary: fc.record({
      op: fc.constant('setNested' as const),
      where: fc.constantFrom('image_size.width' as const, 'image_size.height' as const, 'lora.path' as const, 'lora.scale' as const),
      value: anyValue,
    }),
    weight: 2,
  },
);

const isObject = (v: unknown): v is Body => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * A deep copy with `ops` applied; own properties are defined, never assigned. Values are copied
 * in too: fast-check reuses generated values while shrinking, and a later op would edit them.
 */
export function applyOps(base: Body, ops: readonly Op[]): Body {
  const body = structuredClone(base);
  const imageSize = (): Body => {
    if (!isObject(body.image_size)) defineOwn(body, 'image_size', { width: 512, height: 512 });
    return body.image_size as Body;
  };
  const lora = (): Body => {
    if (!Array.isArray(body.loras)) defineOwn(body, 'loras', []);
    const list = body.loras as unknown[];
    if (!isObject(list[0])) list[0] = { path: 'owner/repo', scale: 1 };
    return list[0] as Body;
  };
  for (const o of ops) {
    switch (o.op) {
      case 'drop':
        delete body[o.field];
        break;
      case 'set':
        defineOwn(body, o.field, structuredClone(o.value));
        break;
      case 'add':
        defineOwn(body, o.key, structuredClone(o.value));
        break;
      case 'addNested':
        defineOwn(o.where === 'image_size' ? imageSize() : lora(), o.key, structuredClone(o.value));
        break;
      case 'setNested': {
        const [where, name] = o.where.split('.') as ['image_size' | 'lora', string];
        defineOwn(where === 'image_size' ? imageSize() : lora(), name, structuredClone(o.value));
        break;
      }
    }
  }
  return body;
}

// ---------------------------------------------------------------------------------------------
// Serialising: JSON.stringify, or a hand-written serialiser that varies whitespace and escapes

export interface Style {
  /** Whitespace put around every token. */
  ws: string;
  /** Escape every n-th UTF-16 unit of keys as \uXXXX (0: only what JSON requires). */
  escapeKeys: number;
  /** Same for string values. */
  escapeValues: number;
  /** Uppercase hex digits in escapes. */
  upperHex: boolean;
}

export const style: fc.Arbitrary<Style> = fc.record({
  ws: fc.constantFrom('', ' ', '\n', '\t', '\r\n  '),
  escapeKeys: fc.constantFrom(0, 0, 1, 2, 3),
  escapeValues: fc.constantFrom(0, 0, 1, 3),
  upperHex: fc.boolean(),
});

function escapeString(s: string, every: number, upperHex: boolean): string {
  const hex = (c: number) => {
    const h = c.toString(16).padStart(4, '0');
    return `\\u${upperHex ? h.toUpperCase() : h}`;
  };
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const high = c >= 0xd800 && c <= 0xdbff;
    const low = c >= 0xdc00 && c <= 0xdfff;
    const paired = (high && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) || (low && i > 0 && (s.charCodeAt(i - 1) & 0xfc00) === 0xd800);
    if ((every > 0 && i % every === 0) || c < 0x20 || c === 0x22 || c === 0x5c || ((high || low) && !paired)) out += hex(c);
    else out += s[i];
  }
  return `${out}"`;
}

export function serialise(value: unknown, s: Style): string {
  const w = s.ws;
  if (value === null || typeof value === 'boolean') return String(value);
  if (typeof value === 'number') return Number.isFinite(value) ? JSON.stringify(value) : 'null';
  if (typeof value === 'string') return escapeString(value, s.escapeValues, s.upperHex);
  if (Array.isArray(value)) return `[${w}${value.map((v) => serialise(v === undefined ? null : v, s)).join(`${w},${w}`)}${w}]`;
  if (typeof value === 'object') {
    const parts = Object.keys(value)
      .filter((k) => (value as Body)[k] !== undefined)
      .map((k) => `${escapeString(k, s.escapeKeys, s.upperHex)}${w}:${w}${serialise((value as Body)[k], s)}`);
    return `{${w}${parts.join(`${w},${w}`)}${w}}`;
  }
  return 'null';
}

export const encoding = fc.oneof(
  { arbitrary: fc.constant(undefined), weight: 3 },
  { arbitrary: style, weight: 2 },
);

export function encode(value: unknown, s: Style | undefined): string {
  return s === undefined ? (JSON.stringify(value) ?? '') : serialise(value, s);
}

// ---------------------------------------------------------------------------------------------
// Raw bodies

/** Byte sequences that are not UTF-8: each decodes to U+FFFD (one or more). */
export const BAD_UTF8: readonly number[][] = [
  [0xff],
  [0xfe],
  [0xc3], // lead byte without continuation
  [0x80], // lone continuation
  [0xc0, 0xaf], // overlong "/"
  [0xe0, 0x80, 0xaf], // overlong
  [0xed, 0xa0, 0x80], // encoded surrogate
  [0xf4, 0x90, 0x80, 0x80], // above U+10FFFF
  [0xf8, 0x88, 0x80, 0x80, 0x80], // 5-byte form
];

const SEED_TEXT = JSON.stringify(SEED_REQUEST);

export type RawCase =
  | { raw: 'text'; text: string }
  | { raw: 'splice'; at: number; remove: number; insert: string }
  | { raw: 'truncate'; at: number }
  | { raw: 'duplicate'; field: string; value: Json; before: boolean }
  | { raw: 'bytes'; at: number; bytes: number[]; inPrompt: boolean }
  | { raw: 'bom'; body: Body }
  | { raw: 'token'; path: string; token: string };

const SYNTAX_NOISE = [
  ',',
  ',,',
  '}',
  ']',
  '{',
  '[',
  ':',
  '"',
  "'",
  '/* c */',
  '// c\n',
  '\\',
  'undefined',
  'NaN',
  'Infinity',
  '\u0000',
  '\u00a0', // not JSON whitespace
  '\u2028',
  '\ufeff',
  '\u000b', // vertical tab: not JSON whitespace
  '\u000c',
] as const;

export const rawCase: fc.Arbitrary<RawCase> = fc.oneof(
  { arbitrary: fc.record({ raw: fc.constant('text' as const), text: fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.json(), trickyString) }), weight: 2 },
  {
    arbitrary: fc.record({
      raw: fc.constant('text' as const),
      text: fc.constantFrom(
        'NaN',
        'Infinity',
        '-Infinity',
        '1e999',
        '-1e999',
        'undefined',
        '{}',
        '[]',
        '""',
        ' ',
        '\n',
        '{"prompt":"a","image_url":"https://x.y/z.png",}',
        "{'prompt':'a','image_url':'https://x.y/z.png'}",
        '{prompt:"a",image_url:"https://x.y/z.png"}',
        '{"prompt":"a","image_url":"https://x.y/z.png"}{}',
        '{"prompt":"a","image_url":"https://x.y/z.png"} x',
        '{"prompt":"a"\u00a0,"image_url":"https://x.y/z.png"}',
        '{"prompt":"a\nb","image_url":"https://x.y/z.png"}', // raw newline inside a string
        '{"prompt":"\\x41","image_url":"https://x.y/z.png"}',
        '{"prompt":"\\ud800","image_url":"https://x.y/z.png"}',
        '{"prompt":"\\u00","image_url":"https://x.y/z.png"}',
        '{"prompt":"a","image_url":"https://x.y/z.png","strength":NaN}',
        '{"prompt":"a","image_url":"https://x.y/z.png","seed":Infinity}',
        '{"prompt":"a","image_url":"https://x.y/z.png","seed":1e999}',
        '{"prompt":"a","image_url":"https://x.y/z.png","loras":[{"path":"a","scale":-1e999}]}',
        '{"\\u0070rompt":"a","\\u0069mage_url":"https://x.y/z.png"}',
        '{"__proto__":{"polluted":"yes"},"prompt":"a","image_url":"https://x.y/z.png"}',
        '{"\\u005f_proto__":{"polluted":"yes"},"prompt":"a","image_url":"https://x.y/z.png"}',
        '{"constructor":{"prototype":{"polluted":"yes"}},"prompt":"a","image_url":"https://x.y/z.png"}',
      ),
    }),
    weight: 3,
  },
  {
    arbitrary: fc.record({
      raw: fc.constant('splice' as const),
      at: fc.nat({ max: SEED_TEXT.length }),
      remove: fc.nat({ max: 3 }),
      insert: fc.oneof(fc.constantFrom(...SYNTAX_NOISE), fc.string({ maxLength: 3 })),
    }),
    weight: 3,
  },
  { arbitrary: fc.record({ raw: fc.constant('truncate' as const), at: fc.nat({ max: SEED_TEXT.length }) }), weight: 1 },
  {
    arbitrary: fc.record({ raw: fc.constant('duplicate' as const), field, value: anyValue, before: fc.boolean() }),
    weight: 2,
  },
  {
    arbitrary: fc.record({
      raw: fc.constant('bytes' as const),
      at: fc.nat({ max: SEED_REQUEST.prompt.length }),
      bytes: fc.constantFrom(...BAD_UTF8),
      inPrompt: fc.boolean(),
    }),
    weight: 2,
  },
  { arbitrary: fc.record({ raw: fc.constant('bom' as const), body: fc.oneof(fc.constant(seedBody()), validInput) }), weight: 1 },
  {
    arbitrary: fc.record({
      raw: fc.constant('token' as const),
      path: fc.constantFrom(...Object.keys(NUMERIC_FIELDS)),
      token: fc.constantFrom(...RAW_NUMBER_TOKENS),
    }),
    weight: 3,
  },
);

const MARK = '@@FUZZ_NUMBER@@';

/** The seed request with `path` (e.g. `image_size.width`, `loras.0.scale`) set to `value`. */
export function seedWithPath(path: string, value: unknown): Body {
  const body = seedBody();
  const [top, second, third] = path.split('.') as [string, string?, string?];
  if (second === undefined) body[top] = value;
  else if (top === 'image_size') body.image_size = { width: 512, height: 512, [second]: value };
  else body.loras = [{ path: 'owner/repo', scale: 1, [third!]: value }];
  return body;
}

export function rawBytes(c: RawCase): Buffer {
  switch (c.raw) {
    case 'text':
      return Buffer.from(c.text, 'utf8');
    case 'splice':
      return Buffer.from(SEED_TEXT.slice(0, c.at) + c.insert + SEED_TEXT.slice(c.at + c.remove), 'utf8');
    case 'truncate':
      return Buffer.from(SEED_TEXT.slice(0, c.at), 'utf8');
    case 'duplicate': {
      // The same key twice: JSON.parse keeps the last one, and so must whatever validates.
      const pair = `${JSON.stringify(c.field)}:${JSON.stringify(c.value)}`;
      return Buffer.from(c.before ? `{${pair},${SEED_TEXT.slice(1)}` : `${SEED_TEXT.slice(0, -1)},${pair}}`, 'utf8');
    }
    case 'bytes': {
      // Inside the prompt string (decodes to U+FFFD: still valid), or in a key or between tokens.
      const start = SEED_TEXT.indexOf(SEED_REQUEST.prompt);
      const between = [0, 1, SEED_TEXT.indexOf(':') + 1, SEED_TEXT.length - 1, SEED_TEXT.length];
      const at = c.inPrompt ? start + c.at : between[c.at % between.length]!;
      return Buffer.concat([Buffer.from(SEED_TEXT.slice(0, at)), Buffer.from(c.bytes), Buffer.from(SEED_TEXT.slice(at))]);
    }
    case 'bom':
      return Buffer.from(`\ufeff${JSON.stringify(c.body)}`, 'utf8');
    case 'token':
      return Buffer.from(JSON.stringify(seedWithPath(c.path, MARK)).replace(JSON.stringify(MARK), c.token), 'utf8');
  }
}

// ---------------------------------------------------------------------------------------------
// Deep and wide bodies (raw text: building them as values would be slow and could overflow)

export type DeepShape = 'array' | 'object' | 'loras' | 'image_size' | 'unknown' | 'proto_at_bottom' | 'constructor_at_bottom' | 'unclosed' | 'mixed';

export const DEEP_SHAPES: readonly DeepShape[] = [
  'array',
  'object',
  'loras',
  'image_size',
  'unknown',
  'proto_at_bottom',
  'constructor_at_bottom',
  'unclosed',
  'mixed',
];

export function deepBody(shape: DeepShape, depth: number): string {
  const seedOpen = SEED_TEXT.slice(0, -1);
  const arrays = (inner = '1') => `${'['.repeat(depth)}${inner}${']'.repeat(depth)}`;
  const objects = (inner = '1') => `${'{"a":'.repeat(depth)}${inner}${'}'.repeat(depth)}`;
  switch (shape) {
    case 'array':
      return arrays('');
    case 'object':
      return objects();
    case 'loras':
      return `${seedOpen},"loras":[${objects(`{"path":"x","scale":1}`)}]}`;
    case 'image_size':
      return `${seedOpen},"image_size":${arrays(`{"width":1,"height":1}`)}}`;
    case 'unknown':
      return `${seedOpen},"extra":${arrays()}}`;
    case 'proto_at_bottom':
      return `${seedOpen},"extra":${objects('{"__proto__":{"polluted":"yes"}}')}}`;
    case 'constructor_at_bottom':
      return `${seedOpen},"loras":[${objects('{"constructor":{"prototype":{"polluted":"yes"}}}')}]}`;
    case 'unclosed':
      return `${seedOpen},"loras":${'['.repeat(depth)}`;
    case 'mixed':
      return `${seedOpen},"loras":${'[{"path":"p","scale":'.repeat(depth)}1${'}]'.repeat(depth)}}`;
  }
}

export type WideShape = 'loras_invalid' | 'loras_valid' | 'unknown_keys' | 'image_size_keys';

export function wideBody(shape: WideShape, width: number): string {
  const seedOpen = SEED_TEXT.slice(0, -1);
  const list = (item: (i: number) => string) => Array.from({ length: width }, (_, i) => item(i)).join(',');
  switch (shape) {
    case 'loras_invalid':
      return `${seedOpen},"loras":[${list(() => '1')}]}`;
    case 'loras_valid':
      return `${seedOpen},"loras":[${list((i) => `{"path":"owner/repo-${i}","scale":${i / 7}}`)}]}`;
    case 'unknown_keys':
      return `${seedOpen},${list((i) => `"k${i}":${i}`)}}`;
    case 'image_size_keys':
      return `${seedOpen},"image_size":{"width":1,"height":1,${list((i) => `"k${i}":${i}`)}}}`;
  }
}
