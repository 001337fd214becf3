import { readFile } from 'node:fs/promises';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { json, SEED_REQUEST, startStack, type Stack } from './helpers.js';
import { startFaultyUpstream, type FaultyUpstream } from './support/faulty-upstream.js';

/**
 * The committed OpenAPI document against what the gateway really answers: each answer below,
 * including the upstream's own odd ones passed on as they came, must fit the schema the document
 * gives for its operation and status. A generated client parses these bodies by that schema.
 */

interface Operation {
  operationId: string;
  responses: Record<string, { content?: Record<string, { schema: unknown }> }>;
}
interface Document {
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, unknown> };
}

const ID = {
  ok: '11111111-aaaa-4aaa-8aaa-000000000001',
  forgotten: '11111111-aaaa-4aaa-8aaa-000000000002',
  model422: '11111111-aaaa-4aaa-8aaa-000000000003',
  failing: '11111111-aaaa-4aaa-8aaa-000000000004',
};

/** What the upstream answers for a job: the queue's usual answers, or its odd ones. */
function upstreamAnswer(method: string, path: string): [number, unknown] {
  const id = Object.values(ID).find((candidate) => path.includes(candidate));
  const status = { status: 'IN_QUEUE', request_id: id, queue_position: 2, status_url: 'x', response_url: 'x', cancel_url: 'x', logs: null, metrics: {} };
  if (path.endsWith('/cancel')) return id === ID.forgotten ? [404, { status: 'NOT_FOUND' }] : [202, { status: 'CANCELLATION_REQUESTED' }];
  if (path.includes('/status')) {
    if (id === ID.forgotten) return [404, { detail: 'Request not found' }];
    if (id === ID.failing) return [500, { detail: 'Internal Server Error' }];
    return [202, status];
  }
  if (id === ID.forgotten) return [404, { detail: 'Request not found' }];
  // The model's own verdicts, as pydantic writes them (input, ctx and url in each entry).
  if (id === ID.model422) {
    return [422, { detail: [{ loc: ['body', 'strength'], msg: 'Input should be less than or equal to 1', type: 'less_than_equal', input: 7, ctx: { le: 1 }, url: 'https://errors.pydantic.dev/2/v/less_than_equal' }] }];
  }
  if (id === ID.failing) return [500, { detail: 'CUDA out of memory' }];
  return [400, { detail: 'Request is still in progress' }];
}

let doc: Document;
let upstream: FaultyUpstream;
let stack: Stack;
const ajv = new Ajv2020({ strict: false, allErrors: true });

beforeAll(async () => {
  doc = JSON.parse(await readFile(new URL('../openapi/openapi.json', import.meta.url), 'utf8')) as Document;
  ajv.addSchema({ $id: 'doc', components: doc.components });
  upstream = await startFaultyUpstream();
  const submitted = [...Object.values(ID)];
  upstream.setHandler((req, res) => {
    const send = (code: number, body: unknown) => res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    if (req.method === 'POST') {
      const id = submitted.shift()!;
      return send(200, { status: 'IN_QUEUE', request_id: id, queue_position: 0, status_url: 'x', response_url: 'x', cancel_url: 'x', logs: null, metrics: {} });
    }
    const [code, body] = upstreamAnswer(req.method ?? 'GET', req.url ?? '');
    send(code, body);
  });
  stack = await startStack({ env: { UPSTREAM_BASE_URL: upstream.url, UPSTREAM_READ_RETRIES: '0', RESULT_PREFETCH: 'false', STALE_JOB_CHECK_MS: '0' } });
  for (let i = 0; i < Object.keys(ID).length; i++) {
    const res = await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-a') }, body: JSON.stringify(SEED_REQUEST) });
    expect(res.status).toBe(200);
  }
});

afterAll(async () => {
  await stack?.close();
  await upstream?.close();
});

/** The documented schema of `status` for the operation at `path` (as the document writes it, e.g. /v1/requests/{request_id}). */
function documented(method: string, path: string, status: number): unknown {
  const op = doc.paths[path]?.[method];
  if (!op) throw new Error(`${method} ${path} is not in the document`);
  const schema = op.responses[String(status)]?.content?.['application/json']?.schema;
  if (!schema) throw new Error(`${method.toUpperCase()} ${path} documents no JSON body for ${status}`);
  // References point into the document's components, added above as "doc".
  return JSON.parse(JSON.stringify(schema).replaceAll('"#/components/', '"doc#/components/'));
}

const cases: Array<{ what: string; method: 'get' | 'put'; path: string; id: string; status: number; headers?: Record<string, string> }> = [
  { what: 'a status', method: 'get', path: '/v1/requests/{request_id}/status', id: ID.ok, status: 202 },
  { what: 'a job fal no longer knows: status', method: 'get', path: '/v1/requests/{request_id}/status', id: ID.forgotten, status: 404 },
  { what: 'a job fal no longer knows: result', method: 'get', path: '/v1/requests/{request_id}', id: ID.forgotten, status: 404 },
  { what: 'a job fal no longer knows: cancel', method: 'put', path: '/v1/requests/{request_id}/cancel', id: ID.forgotten, status: 404 },
  { what: "another tenant's job", method: 'get', path: '/v1/requests/{request_id}/status', id: 'c0ffee00-0000-4000-8000-00000000dead', status: 404 },
  { what: 'a result not ready', method: 'get', path: '/v1/requests/{request_id}', id: ID.ok, status: 400 },
  { what: "the model's 422, pydantic's entries", method: 'get', path: '/v1/requests/{request_id}', id: ID.model422, status: 422 },
  { what: "the model's 500", method: 'get', path: '/v1/requests/{request_id}', id: ID.failing, status: 500 },
  { what: "fal's 500 on a status", method: 'get', path: '/v1/requests/{request_id}/status', id: ID.failing, status: 500 },
  { what: 'a Host that names no host', method: 'get', path: '/v1/requests/{request_id}/status', id: ID.ok, status: 400, headers: { host: 'bad host!' } },
  { what: 'a cancel', method: 'put', path: '/v1/requests/{request_id}/cancel', id: ID.ok, status: 202 },
];

describe('answers fit the OpenAPI document', () => {
  for (const twin of ['/v1/requests/', '/fal-ai/flux-lora/requests/']) {
    it.each(cases)(`${twin}… $what: $status, as documented`, async ({ method, path, id, status, headers }) => {
      const docPath = path.replace('/v1/requests/', twin);
      const url = `${stack.url}${docPath.replace('{request_id}', id)}`;
      const { request } = await import('undici');
      const res = await request(url, { method: method.toUpperCase() as 'GET' | 'PUT', headers: { ...stack.bearer('team-a'), ...headers } });
      const body: unknown = await res.body.json();
      expect(res.statusCode, JSON.stringify(body)).toBe(status);
      const validate = ajv.compile(documented(method, docPath, status) as object);
      expect(validate(body), `${JSON.stringify(body)}: ${ajv.errorsText(validate.errors)}`).toBe(true);
    });
  }
});

describe("the gateway's own answers fit it too", () => {
  it.each<{ what: string; body: unknown; headers: Record<string, string>; status: number }>([
    { what: 'a queued job', body: SEED_REQUEST, headers: {}, status: 200 },
    { what: 'input the model would refuse', body: { ...SEED_REQUEST, strength: 7 }, headers: {}, status: 422 },
    { what: 'no key', body: SEED_REQUEST, headers: { authorization: '' }, status: 401 },
  ])('POST /v1/image-to-image, $what: $status, as documented', async ({ body, headers, status }) => {
    upstream.setHandler((_req, res) =>
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'IN_QUEUE', request_id: ID.ok, queue_position: 0, status_url: 'x', response_url: 'x', cancel_url: 'x', logs: null, metrics: {} })),
    );
    const res = await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-a'), ...headers }, body: JSON.stringify(body) });
    const answer: unknown = await res.json();
    expect(res.status, JSON.stringify(answer)).toBe(status);
    const validate = ajv.compile(documented('post', '/v1/image-to-image', status) as object);
    expect(validate(answer), `${JSON.stringify(answer)}: ${ajv.errorsText(validate.errors)}`).toBe(true);
  });
});
