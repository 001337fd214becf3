import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FIELDS } from './support/fuzz-arbitraries.js';
import { errors, errorTypeOf } from '../src/errors.js';
import { renderOpenApi } from '../src/openapi-document.js';
import { SEED_REQUEST, startStack, type Stack } from './helpers.js';

/**
 * The OpenAPI document: the committed copies match what the code renders, the running gateway
 * serves the same, and the document says what §6 of fal-queue-api.md says about the model input,
 * auth and errors.
 */

interface Schema {
  $ref?: string;
  type?: string;
  description?: string;
  default?: unknown;
  minimum?: number;
  maximum?: number;
  enum?: unknown[];
  examples?: unknown[];
  required?: string[];
  additionalProperties?: boolean;
  properties?: Record<string, Schema>;
  anyOf?: Schema[];
  items?: Schema;
}

interface MediaType {
  schema: Schema;
}

interface Parameter {
  name: string;
  in: string;
  schema: Schema & { pattern?: string };
}

interface Operation {
  operationId?: string;
  parameters?: Parameter[];
  security?: Array<Record<string, string[]>>;
  requestBody?: { required?: boolean; content: Record<string, MediaType> };
  responses: Record<string, { description: string; content?: Record<string, MediaType> }>;
}

interface SecurityScheme {
  type: string;
  scheme?: string;
  in?: string;
  name?: string;
}

interface OpenApiDocument {
  openapi: string;
  security?: Array<Record<string, string[]>>;
  paths: Record<string, Record<string, Operation>>;
  components: { securitySchemes: Record<string, SecurityScheme>; schemas: Record<string, Schema> };
}

const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options', 'trace'];
const FAL_PREFIX = '/fal-ai/flux-lora/';

const committedJsonText = () => readFile(new URL('../openapi/openapi.json', import.meta.url), 'utf8');
const committedYamlText = () => readFile(new URL('../openapi/openapi.yaml', import.meta.url), 'utf8');

let stack: Stack;
let doc: OpenApiDocument;

beforeAll(async () => {
  stack = await startStack();
  doc = JSON.parse(await committedJsonText()) as OpenApiDocument;
});

afterAll(async () => {
  await stack?.close();
});

/** Every operation of a path, by lower-case method. */
function operationsOf(path: string): Array<[string, Operation]> {
  const item = doc.paths[path];
  if (!item) throw new Error(`no path ${path} in the document`);
  return Object.entries(item).filter(([method]) => METHODS.includes(method));
}

/** GET of a job's result: /v1/requests/{request_id} or its fal twin. */
const isResultRead = (path: string, method: string) => method === 'get' && path.endsWith('/requests/{request_id}');

const tenantPaths = () => Object.keys(doc.paths).filter((p) => p.startsWith('/v1/') || p.startsWith('/fal-ai/'));
/** Routes of the gateway's own, with no counterpart on fal's queue. */
const GATEWAY_ONLY = ['/v1/tokens', '/v1/usage'];
const tenantOperations = () =>
  tenantPaths().flatMap((path) => operationsOf(path).map(([method, op]) => ({ path, method, op })));

function resolve(schema: Schema): Schema {
  if (!schema.$ref) return schema;
  const prefix = '#/components/schemas/';
  expect(schema.$ref.startsWith(prefix), schema.$ref).toBe(true);
  const target = doc.components.schemas[schema.$ref.slice(prefix.length)];
  if (!target) throw new Error(`dangling $ref ${schema.$ref}`);
  return resolve(target);
}

function submitModelInput(path: string): { ref: string | undefined; schema: Schema } {
  const op = doc.paths[path]?.post;
  if (!op?.requestBody) throw new Error(`POST ${path} has no request body`);
  const media = op.requestBody.content['application/json'];
  if (!media) throw new Error(`POST ${path} does not take application/json`);
  return { ref: media.schema.$ref, schema: resolve(media.schema) };
}

describe('committed OpenAPI files', () => {
  it('openapi/openapi.json and openapi/openapi.yaml equal renderOpenApi() exactly', async () => {
    const rendered = await renderOpenApi();
    expect(await committedJsonText(), 'openapi/openapi.json is stale: run npm run openapi').toBe(rendered.json);
    expect(await committedYamlText(), 'openapi/openapi.yaml is stale: run npm run openapi').toBe(rendered.yaml);
  });

  it('is an OpenAPI 3.1 document', () => {
    expect(doc.openapi).toBe('3.1.0');
  });
});

describe('served documentation', () => {
  it('GET /openapi.json serves the committed document', async () => {
    const res = await fetch(`${stack.url}/openapi.json`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(await res.json()).toEqual(doc);
  });

  it('GET /docs serves the Swagger UI page without a key, and all its assets load', async () => {
    const res = await fetch(`${stack.url}/docs`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await res.text();
    expect(html).toContain('<div id="swagger-ui">');
    const assets = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => new URL(m[1]!, res.url).href);
    expect(assets.some((a) => a.endsWith('/swagger-ui-bundle.js'))).toBe(true);
    expect(assets.some((a) => a.endsWith('/swagger-ui.css'))).toBe(true);
    for (const asset of assets) {
      const loaded = await fetch(asset);
      expect(loaded.status, asset).toBe(200);
      expect((await loaded.arrayBuffer()).byteLength, asset).toBeGreaterThan(0);
    }
  });

  it('GET /docs/json serves the same document as /openapi.json', async () => {
    const res = await fetch(`${stack.url}/docs/json`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual(doc);
  });
});

describe('security', () => {
  it('declares bearerAuth, apiKeyHeader and falKey', () => {
    const schemes = doc.components.securitySchemes;
    expect(schemes.bearerAuth).toMatchObject({ type: 'http', scheme: 'bearer' });
    expect(schemes.apiKeyHeader).toMatchObject({ type: 'apiKey', in: 'header', name: 'x-api-key' });
    expect(schemes.falKey).toMatchObject({ type: 'apiKey', in: 'header', name: 'Authorization' });
  });

  it('every /v1/ and /fal-ai/ operation requires one of the declared schemes', () => {
    const ops = tenantOperations();
    expect(ops.length).toBe(12);
    for (const { path, method, op } of ops) {
      const where = `${method.toUpperCase()} ${path}`;
      expect(op.security, where).toBeDefined();
      expect(op.security!.length, where).toBeGreaterThan(0);
      const named = op.security!.flatMap((requirement) => Object.keys(requirement));
      expect(named.length, where).toBeGreaterThan(0);
      for (const name of named) expect(Object.keys(doc.components.securitySchemes), where).toContain(name);
      expect(new Set(named), where).toEqual(new Set(['bearerAuth', 'apiKeyHeader', 'falKey']));
    }
  });

  it.each(['/healthz', '/readyz'])('%s requires no key (no operation or document-level security)', (path) => {
    for (const [method, op] of operationsOf(path)) {
      const effective = op.security ?? doc.security ?? [];
      const open = effective.length === 0 || effective.some((requirement) => Object.keys(requirement).length === 0);
      expect(open, `${method.toUpperCase()} ${path}`).toBe(true);
    }
  });
});

describe('ModelInput', () => {

  it.each(['/v1/image-to-image', `${FAL_PREFIX}image-to-image`])('POST %s takes a ModelInput body', (path) => {
    const { ref } = submitModelInput(path);
    expect(ref).toBe('#/components/schemas/ModelInput');
    expect(doc.paths[path]!.post!.requestBody!.required).toBe(true);
  });

  it('has the seed request as its example', () => {
    const { schema } = submitModelInput('/v1/image-to-image');
    expect(schema.examples).toBeDefined();
    expect(schema.examples![0]).toStrictEqual({ ...SEED_REQUEST });
  });

  it('has exactly the fields of §6, prompt and image_url required, no others allowed', () => {
    const { schema } = submitModelInput('/v1/image-to-image');
    expect(schema.type).toBe('object');
    expect(Object.keys(schema.properties ?? {}).sort()).toEqual([...FIELDS].sort());
    expect([...(schema.required ?? [])].sort()).toEqual(['image_url', 'prompt']);
    expect(schema.additionalProperties).toBe(false);
  });

  it('describes every property', () => {
    const { schema } = submitModelInput('/v1/image-to-image');
    for (const [name, property] of Object.entries(schema.properties ?? {})) {
      expect(typeof property.description, name).toBe('string');
      expect(property.description!.trim().length, name).toBeGreaterThan(0);
    }
  });

  it.each([
    { field: 'strength', type: 'number', minimum: 0.01, maximum: 1 },
    { field: 'num_inference_steps', type: 'integer', minimum: 1, maximum: 50 },
    { field: 'guidance_scale', type: 'number', minimum: 0, maximum: 35 },
    { field: 'num_images', type: 'integer', minimum: 1, maximum: 4 },
  ])('$field is a $type from $minimum to $maximum', ({ field, type, minimum, maximum }) => {
    const property = submitModelInput('/v1/image-to-image').schema.properties![field]!;
    expect(property).toMatchObject({ type, minimum, maximum });
  });

  it.each([
    { field: 'strength', value: 0.85 },
    { field: 'num_inference_steps', value: 28 },
    { field: 'guidance_scale', value: 3.5 },
    { field: 'num_images', value: 1 },
    { field: 'enable_safety_checker', value: true },
    { field: 'output_format', value: 'jpeg' },
    { field: 'loras', value: [] },
    { field: 'sync_mode', value: false },
    { field: 'acceleration', value: 'none' },
  ])('$field defaults to $value', ({ field, value }) => {
    const property = submitModelInput('/v1/image-to-image').schema.properties![field]!;
    expect(property.default).toStrictEqual(value);
  });

  it.each(['prompt', 'image_url', 'seed', 'image_size'])('%s documents no default', (field) => {
    const property = submitModelInput('/v1/image-to-image').schema.properties![field]!;
    expect(property.default).toBeUndefined();
  });

  it('lists the allowed values of the enums', () => {
    const properties = submitModelInput('/v1/image-to-image').schema.properties!;
    expect(properties.output_format!.enum).toEqual(['jpeg', 'png']);
    expect(properties.acceleration!.enum).toEqual(['none', 'regular']);
    // seed and image_size: optional with no default in the model, so null is accepted too.
    expect(properties.seed!.anyOf?.map((s) => s.type)).toEqual(['integer', 'null']);
    expect(properties.image_size!.anyOf?.some((s) => s.type === 'null')).toBe(true);
    const presets = properties.image_size!.anyOf?.find((s) => s.enum)?.enum;
    expect([...(presets ?? [])].sort()).toEqual(
      ['landscape_16_9', 'landscape_4_3', 'portrait_16_9', 'portrait_4_3', 'square', 'square_hd'].sort(),
    );
  });
});

describe('parameters and bodies as the gateway takes them', () => {
  it('the logs flag: the documented pattern takes every spelling the routes take (JSON Schema patterns have no flags)', () => {
    const patterns = tenantOperations().flatMap(({ op }) => (op.parameters ?? []).filter((p) => p.in === 'query' && p.name === 'logs').map((p) => p.schema.pattern));
    // Status, result (fal's twin too) and the streams.
    expect(patterns.length).toBeGreaterThanOrEqual(4);
    for (const pattern of patterns) {
      const re = new RegExp(pattern!);
      for (const value of ['1', '0', 'true', 'True', 'TRUE', 'false', 'False', '']) expect(re.test(value), `${pattern} on "${value}"`).toBe(true);
      for (const value of ['yes', '2', 'truex']) expect(re.test(value), `${pattern} on "${value}"`).toBe(false);
    }
  });

  it('POST /v1/tokens documents its body as optional (it mints without one: browser-access.test.ts); a submit body stays required', () => {
    expect(doc.paths['/v1/tokens']!.post!.requestBody!.required).toBe(false);
    for (const path of ['/v1/image-to-image', `${FAL_PREFIX}image-to-image`]) expect(doc.paths[path]!.post!.requestBody!.required).toBe(true);
  });
});

describe('errors', () => {
  it('the Error component has detail and error_type', () => {
    const error = doc.components.schemas.Error;
    expect(error).toBeDefined();
    expect(Object.keys(error!.properties ?? {})).toEqual(expect.arrayContaining(['detail', 'error_type']));
    expect(error!.required).toEqual(expect.arrayContaining(['detail', 'error_type']));
  });

  it('every /v1 and /fal-ai operation documents 401, 422, 429 with the Error schema, and 404 per request with fal\'s own shape too', () => {
    for (const { path, method, op } of tenantOperations()) {
      const codes = ['401', '422', '429', ...(path.includes('{request_id}') ? ['404'] : [])];
      for (const code of codes) {
        const where = `${method.toUpperCase()} ${path} ${code}`;
        const response = op.responses[code];
        expect(response, where).toBeDefined();
        expect(response!.description.length, where).toBeGreaterThan(0);
        // A result's 422 is usually the model's own body, passed on as fal sent it (no error_type).
        // A job fal no longer knows: fal's 404 body as it came, without error_type.
        const expected = (isResultRead(path, method) && code === '422') || code === '404' ? 'UpstreamError' : 'Error';
        const schema = response!.content?.['application/json']?.schema;
        // A cancel answers in the cancel dialect: {"status": "NOT_FOUND"}, with the envelope when the gateway says it.
        if (method === 'put' && code === '404') {
          expect(schema?.anyOf?.map((s) => s.$ref), where).toEqual(['#/components/schemas/CancelNotFound', '#/components/schemas/CancelResponse']);
          expect((response!.content!['application/json'] as { example?: unknown }).example, where).toEqual({
            status: 'NOT_FOUND',
            detail: 'Request not found',
            error_type: 'request_not_found',
          });
        } else {
          expect(schema?.$ref, where).toBe(`#/components/schemas/${expected}`);
        }
      }
    }
  });

  it("documents fal's own error bodies on the result route without the gateway's error_type, and the stream as text/event-stream", () => {
    const upstreamError = doc.components.schemas.UpstreamError;
    expect(upstreamError!.required).toEqual(['detail']);
    const reads = tenantOperations().filter(({ path, method }) => isResultRead(path, method));
    expect(reads).toHaveLength(2);
    for (const { op } of reads) {
      for (const code of ['400', '422']) expect(op.responses[code]!.content?.['application/json']?.schema.$ref).toBe('#/components/schemas/UpstreamError');
    }
    const streams = tenantOperations().filter(({ path }) => path.endsWith('/status/stream'));
    expect(streams).toHaveLength(2);
    for (const { op } of streams) expect(Object.keys(op.responses['200']!.content ?? {})).toEqual(['text/event-stream']);
  });
});

describe('error examples', () => {
  /** The status each gateway error_type is answered with, from the errors themselves. */
  const statusOf = new Map<string, number>([['validation_error', 422]]);
  for (const make of Object.values(errors)) {
    const err = new (make as new () => { code: string; statusCode: number })();
    statusOf.set(errorTypeOf(err.code), err.statusCode);
  }

  it('shows, for each error status of each operation, an example answered with that very status', () => {
    let checked = 0;
    for (const [path, methods] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(methods)) {
        for (const [code, response] of Object.entries(op.responses ?? {})) {
          const media = response.content?.['application/json'] as { example?: { error_type?: string }; schema?: { $ref?: string } } | undefined;
          const example = media?.example;
          // Without one, Swagger UI shows the schema's generic example, whatever the status.
          if (media?.schema?.$ref === '#/components/schemas/Error') expect(example, `${method.toUpperCase()} ${path} ${code}`).toBeDefined();
          if (typeof example?.error_type !== 'string') continue;
          // fal's own 5xx passes with its status; without a category of fal's, it is upstream_error (README's error table).
          const passedOn = example.error_type === 'upstream_error' && Number(code) >= 500 && Number(code) <= 504;
          if (!passedOn) expect(statusOf.get(example.error_type), `${method.toUpperCase()} ${path} ${code}: ${example.error_type}`).toBe(Number(code));
          checked++;
        }
      }
    }
    expect(checked).toBeGreaterThan(50);
  });
});

describe('fal-compatible twins', () => {
  it('every /v1 path has a twin under /fal-ai/flux-lora with the same methods, and vice versa', () => {
    const native = tenantPaths().filter((p) => p.startsWith('/v1/') && !GATEWAY_ONLY.includes(p));
    const fal = tenantPaths().filter((p) => p.startsWith('/fal-ai/'));
    expect(native.length).toBe(5);
    expect(fal.map((p) => p.replace(FAL_PREFIX, '/v1/')).sort()).toEqual([...native].sort());
    for (const path of native) {
      const twin = path.replace('/v1/', FAL_PREFIX);
      const methods = (p: string) => operationsOf(p).map(([m]) => m).sort();
      expect(methods(twin), twin).toEqual(methods(path));
      for (const [method, op] of operationsOf(path)) {
        const twinOp = doc.paths[twin]![method]!;
        expect(Object.keys(twinOp.responses).sort(), `${method} ${twin}`).toEqual(Object.keys(op.responses).sort());
        expect(twinOp.requestBody, `${method} ${twin}`).toEqual(op.requestBody);
      }
    }
  });

  it('operation ids are unique', () => {
    const ids = tenantOperations().map(({ op }) => op.operationId);
    expect(ids.every((id) => typeof id === 'string')).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
  });
});
