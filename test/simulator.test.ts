import { afterEach, describe, expect, it } from 'vitest';
import jpeg from 'jpeg-js';
import { SEED_REQUEST, upstreamPaths } from '../src/model.js';
import { manualClock, startSimulator, type Simulator, type SimulatorOptions } from '../src/simulator/index.js';

const TOKEN = 'sim-secret-token';
const QUEUE_MS = 1000;
const RUN_MS = 2000;
const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

const running: Simulator[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((sim) => sim.close()));
});

async function setup(options: Partial<SimulatorOptions> = {}) {
  const clock = manualClock();
  const sim = await startSimulator({ token: TOKEN, queueMs: QUEUE_MS, runMs: RUN_MS, now: clock.now, ...options });
  running.push(sim);
  const auth = `${options.authScheme ?? 'Key'} ${TOKEN}`;

  const call = async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => {
    const init: RequestInit = { method, headers: { authorization: auth, ...headers } };
    if (body !== undefined) {
      init.body = typeof body === 'string' ? body : JSON.stringify(body);
      (init.headers as Record<string, string>)['content-type'] ??= 'application/json';
    }
    const res = await fetch(sim.url + path, init);
    const text = await res.text();
    // Bodies are checked field by field below; `any` keeps those assertions readable.
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const json: any = text ? JSON.parse(text) : undefined;
    return { status: res.status, headers: res.headers, json };
  };
  const submit = async (input: unknown = SEED_REQUEST, headers?: Record<string, string>) => {
    const res = await call('POST', upstreamPaths.submit(), input, headers);
    expect(res.status).toBe(200);
    return res.json as { request_id: string; queue_position: number; [key: string]: unknown };
  };
  const status = (id: string, query = '') => call('GET', upstreamPaths.status(id) + query);
  const result = (id: string) => call('GET', upstreamPaths.result(id));
  const cancel = (id: string) => call('PUT', upstreamPaths.cancel(id));
  return { sim, clock, call, submit, status, result, cancel };
}

/** Width and height from a PNG's IHDR, which must be the first chunk. */
function pngSize(bytes: Buffer) {
  expect([...bytes.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  expect(bytes.subarray(12, 16).toString('ascii')).toBe('IHDR');
  return { width: bytes.readUInt32BE(16), height: bytes.readUInt32BE(20) };
}

/** Width and height from a baseline JPEG's SOF0 segment. */
function jpegSize(bytes: Buffer) {
  expect([...bytes.subarray(0, 3)]).toEqual([0xff, 0xd8, 0xff]);
  let at = 2;
  while (at + 4 <= bytes.length) {
    expect(bytes[at]).toBe(0xff);
    const marker = bytes[at + 1];
    const length = bytes.readUInt16BE(at + 2);
    if (marker === 0xc0) return { height: bytes.readUInt16BE(at + 5), width: bytes.readUInt16BE(at + 7) };
    at += 2 + length;
  }
  throw new Error('no SOF0 segment');
}

async function download(url: string) {
  const res = await fetch(url); // no credentials: files are public
  expect(res.status).toBe(200);
  expect(res.headers.get('cache-control')).toBe('public, max-age=3600');
  return { contentType: res.headers.get('content-type'), bytes: Buffer.from(await res.arrayBuffer()) };
}

describe('auth', () => {
  it('rejects a missing header, a wrong token and the wrong scheme', async () => {
    const { sim } = await setup();
    const path = upstreamPaths.submit();
    const post = (headers: Record<string, string>) =>
      fetch(sim.url + path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: '{}' });

    let res = await post({});
    expect(res.status).toBe(401);
    expect(await res.json()).toEqual({ detail: 'Missing authorization header' });
    for (const authorization of [`Key wrong`, `Bearer ${TOKEN}`, TOKEN, `Key ${TOKEN} extra`]) {
      res = await post({ authorization });
      expect(res.status).toBe(401);
      expect(await res.json()).toEqual({ detail: 'Invalid authentication credentials' });
    }
    expect((await post({ authorization: `Key ${TOKEN}` })).status).toBe(200);
  });

  it('accepts only Bearer when configured for a reseller', async () => {
    const { sim, submit } = await setup({ authScheme: 'Bearer' });
    await submit();
    const res = await fetch(sim.url + upstreamPaths.status('x'), { headers: { authorization: `Key ${TOKEN}` } });
    expect(res.status).toBe(401);
  });
});

describe('submit', () => {
  it('queues and answers with fal queue URLs on urlBase', async () => {
    const { call } = await setup({ urlBase: 'https://queue.fal.run' });
    const res = await call('POST', '/fal-ai/flux-lora/image-to-image', SEED_REQUEST);
    expect(res.status).toBe(200);
    const id = res.json.request_id;
    expect(id).toMatch(UUID_V4);
    expect(res.headers.get('x-fal-request-id')).toBe(id);
    const base = `https://queue.fal.run/fal-ai/flux-lora/requests/${id}`;
    expect(res.json).toEqual({
      status: 'IN_QUEUE',
      request_id: id,
      response_url: base,
      status_url: `${base}/status`,
      cancel_url: `${base}/cancel`,
      logs: null,
      metrics: {},
      queue_position: 0,
    });
  });

  it('defaults queue URLs to its own origin', async () => {
    const { sim, submit } = await setup();
    const job = await submit();
    expect(job.status_url).toBe(`${sim.url}/fal-ai/flux-lora/requests/${job.request_id}/status`);
  });

  it('answers malformed bodies with 400 and non-object JSON with 422', async () => {
    const { call } = await setup();
    const path = upstreamPaths.submit();
    const broken = await call('POST', path, '{"prompt":');
    expect(broken.status).toBe(400);
    expect(typeof broken.json.detail).toBe('string');
    expect((await call('POST', path, 'hello', { 'content-type': 'text/plain' })).status).toBe(400);
    const array = await call('POST', path, [SEED_REQUEST]);
    expect(array.status).toBe(422);
    expect(array.json.detail[0]).toMatchObject({ loc: ['body'], type: 'model_attributes_type' });
  });
});

describe('job lifecycle', () => {
  it('goes IN_QUEUE → IN_PROGRESS → COMPLETED as the clock moves', async () => {
    const { clock, submit, status, result } = await setup();
    const { request_id: id } = await submit();

    let res = await status(id);
    expect(res.status).toBe(202);
    expect(res.json).toMatchObject({ status: 'IN_QUEUE', request_id: id, queue_position: 0, logs: null });
    expect((await result(id)).json).toEqual({ detail: 'Request is still in progress' });

    clock.advance(QUEUE_MS);
    res = await status(id);
    expect(res.status).toBe(202);
    expect(res.json.status).toBe('IN_PROGRESS');
    expect(res.json.logs).toBeNull();
    expect(res.json).not.toHaveProperty('queue_position');
    const early = await status(id, '?logs=1');
    expect(early.json.logs).toEqual([
      { message: 'Loading LoRA weights', level: 'INFO', source: 'USER', timestamp: expect.any(String) },
    ]);
    const res400 = await result(id);
    expect(res400.status).toBe(400);
    expect(res400.json).toEqual({ detail: 'Request is still in progress' });

    clock.advance(RUN_MS / 2);
    const later = await status(id, '?logs=true');
    expect(later.json.logs.length).toBeGreaterThan(early.json.logs.length);
    expect(later.json.logs.map((l: { message: string }) => l.message)).toContain('Step 7/28');

    clock.advance(RUN_MS / 2);
    res = await status(id, '?logs=1');
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ status: 'COMPLETED', request_id: id, metrics: { inference_time: RUN_MS / 1000 } });
    expect(res.json.logs.at(-1).message).toBe('Inference finished');
    expect(res.json).not.toHaveProperty('error');
    expect((await status(id, '?logs=0')).json.logs).toBeNull();
  });

  it('counts earlier queued jobs in queue_position', async () => {
    const { clock, submit, status, cancel } = await setup();
    const a = await submit();
    clock.advance(100);
    const b = await submit();
    clock.advance(100);
    const c = await submit();
    expect([a.queue_position, b.queue_position, c.queue_position]).toEqual([0, 1, 2]);

    expect((await cancel(a.request_id)).status).toBe(202);
    expect((await status(c.request_id)).json.queue_position).toBe(1);
    clock.advance(QUEUE_MS - 100); // now = b.submit + QUEUE_MS: b runs, c waits behind nobody
    expect((await status(b.request_id)).json.status).toBe('IN_PROGRESS');
    expect((await status(c.request_id)).json).toMatchObject({ status: 'IN_QUEUE', queue_position: 0 });
  });
});

describe('X-Fal-Request-Timeout', () => {
  it('gives up a job that cannot start in time: COMPLETED with request_timeout, its result a 504 marked as the user\'s', async () => {
    const { clock, submit, status, result, cancel } = await setup();
    const late = await submit(SEED_REQUEST, { 'x-fal-request-timeout': '0.5' }); // the queue takes 1 s
    const inTime = await submit(SEED_REQUEST, { 'x-fal-request-timeout': '5' });
    clock.advance(400);
    expect((await status(late.request_id)).json.status).toBe('IN_QUEUE');
    clock.advance(100); // the deadline
    const ended = await status(late.request_id, '?logs=1');
    expect(ended.status).toBe(200);
    expect(ended.json).toMatchObject({ status: 'COMPLETED', error_type: 'request_timeout', logs: [], metrics: { inference_time: 0 } });
    const answer = await result(late.request_id);
    expect(answer.status).toBe(504);
    expect(answer.headers.get('x-fal-request-timeout-type')).toBe('user');
    expect(answer.headers.get('x-fal-error-type')).toBe('request_timeout');
    expect(answer.json).toMatchObject({ error_type: 'request_timeout' });
    const tooLate = await cancel(late.request_id);
    expect(tooLate.json).toEqual({ status: 'ALREADY_COMPLETED' });
    expect(tooLate.headers.get('x-fal-request-id')).toBe(late.request_id);
    // The other one started within its timeout, and runs to its end as any job.
    clock.advance(QUEUE_MS + RUN_MS);
    expect((await status(inTime.request_id)).json).not.toHaveProperty('error_type');
    expect((await result(inTime.request_id)).status).toBe(200);
  });
});

describe('results', () => {
  it('serves the seed request as a real JPEG on its own origin, not urlBase', async () => {
    const { sim, clock, submit, result } = await setup({ urlBase: 'https://queue.fal.run' });
    const { request_id: id } = await submit(SEED_REQUEST);
    clock.advance(QUEUE_MS + RUN_MS);
    const res = await result(id);
    expect(res.status).toBe(200);
    const output = res.json;
    expect(output).toMatchObject({
      prompt: SEED_REQUEST.prompt,
      has_nsfw_concepts: [false],
      timings: { inference: RUN_MS / 1000 },
      seed: expect.any(Number),
    });
    expect(output.images).toHaveLength(1);
    const [image] = output.images;
    expect(image).toMatchObject({ width: 1024, height: 768, content_type: 'image/jpeg', file_name: '0.jpeg' });
    expect(image.url).toBe(`${sim.url}/files/${id}/0.jpeg`);

    const { contentType, bytes } = await download(image.url);
    expect(contentType).toBe('image/jpeg');
    expect(bytes.length).toBe(image.file_size);
    expect(jpegSize(bytes)).toEqual({ width: 1024, height: 768 });
    const decoded = jpeg.decode(bytes);
    expect([decoded.width, decoded.height]).toEqual([1024, 768]);
    // The same result read twice names the same files and seed.
    expect((await result(id)).json).toEqual(output);
  });

  it('renders num_images PNGs at the requested size, different per image', async () => {
    const { clock, submit, result } = await setup();
    const input = { ...SEED_REQUEST, output_format: 'png', num_images: 3, image_size: 'square', seed: 1234 };
    const { request_id: id } = await submit(input);
    clock.advance(QUEUE_MS + RUN_MS);
    const output = (await result(id)).json;
    expect(output.seed).toBe(1234);
    expect(output.has_nsfw_concepts).toEqual([false, false, false]);
    expect(output.images).toHaveLength(3);
    const files: Buffer[] = [];
    for (const [index, image] of output.images.entries()) {
      expect(image).toMatchObject({ width: 512, height: 512, content_type: 'image/png', file_name: `${index}.png` });
      const { contentType, bytes } = await download(image.url);
      expect(contentType).toBe('image/png');
      expect(bytes.length).toBe(image.file_size);
      expect(pngSize(bytes)).toEqual({ width: 512, height: 512 });
      files.push(bytes);
    }
    expect(files[0]!.equals(files[1]!)).toBe(false);
  });

  it('honours an explicit size and caps what it renders', async () => {
    const { clock, submit, result } = await setup();
    const a = await submit({ ...SEED_REQUEST, output_format: 'png', image_size: { width: 300, height: 200 } });
    const b = await submit({ ...SEED_REQUEST, image_size: { width: 4000, height: 100 } });
    const c = await submit({ ...SEED_REQUEST, output_format: 'png', image_size: { width: 300 } });
    clock.advance(QUEUE_MS + RUN_MS);
    // A side left out is 512, as fal's model has it.
    expect(pngSize((await download((await result(c.request_id)).json.images[0].url)).bytes)).toEqual({ width: 300, height: 512 });
    const small = (await result(a.request_id)).json.images[0];
    expect(pngSize((await download(small.url)).bytes)).toEqual({ width: 300, height: 200 });
    const wide = (await result(b.request_id)).json.images[0];
    expect([wide.width, wide.height]).toEqual([2048, 100]);
    expect(jpegSize((await download(wide.url)).bytes)).toEqual({ width: 2048, height: 100 });
  });

  it('inlines images as data URIs with sync_mode', async () => {
    const { clock, submit, result } = await setup();
    const { request_id: id } = await submit({ ...SEED_REQUEST, sync_mode: true, image_size: 'square' });
    clock.advance(QUEUE_MS + RUN_MS);
    const [image] = (await result(id)).json.images;
    const prefix = 'data:image/jpeg;base64,';
    expect(image.url.startsWith(prefix)).toBe(true);
    const bytes = Buffer.from(image.url.slice(prefix.length), 'base64');
    expect(bytes.length).toBe(image.file_size);
    expect(jpegSize(bytes)).toEqual({ width: 512, height: 512 });
  });

  it('reports an input the model rejects as COMPLETED with a 422 result', async () => {
    const { clock, submit, status, result } = await setup();
    const tooStrong = await submit({ ...SEED_REQUEST, strength: 2 });
    const noPrompt: Record<string, unknown> = { ...SEED_REQUEST, colour: 'red' };
    delete noPrompt.prompt;
    const missing = await submit(noPrompt);
    const wrongTypes = await submit({ ...SEED_REQUEST, num_images: '2', seed: 1.5, strength: 'high', image_size: { width: 'wide', height: 512 } });
    clock.advance(QUEUE_MS + RUN_MS);

    const done = await status(tooStrong.request_id);
    expect(done.status).toBe(200);
    expect(done.json).toMatchObject({ status: 'COMPLETED', error: expect.any(String), error_type: expect.any(String) });

    let res = await result(tooStrong.request_id);
    expect(res.status).toBe(422);
    expect(res.json.detail).toEqual([
      expect.objectContaining({ loc: ['body', 'strength'], type: 'less_than_equal', msg: expect.any(String) }),
    ]);
    res = await result(missing.request_id);
    expect(res.status).toBe(422);
    expect(res.json.detail).toEqual([
      expect.objectContaining({ loc: ['body', 'prompt'], type: 'missing', msg: 'Field required' }),
      expect.objectContaining({ loc: ['body', 'colour'], type: 'extra_forbidden' }),
    ]);
    // pydantic's codes: an integer field given a string is int_type (not float_type, as for a number field).
    res = await result(wrongTypes.request_id);
    expect(res.status).toBe(422);
    expect(res.json.detail).toEqual(
      expect.arrayContaining([
        { loc: ['body', 'num_images'], type: 'int_type', msg: 'Input should be a valid integer', input: '2' },
        { loc: ['body', 'seed'], type: 'int_from_float', msg: 'Input should be a valid integer, got a number with a fractional part', input: 1.5 },
        { loc: ['body', 'strength'], type: 'float_type', msg: 'Input should be a valid number', input: 'high' },
        { loc: ['body', 'image_size', 'width'], type: 'int_type', msg: 'Input should be a valid integer', input: 'wide' },
      ]),
    );
    expect(res.json.detail).toHaveLength(4);
  });
});

describe('cancel', () => {
  it('cancels a queued job: status COMPLETED, result 400', async () => {
    const { clock, submit, status, result, cancel } = await setup();
    const { request_id: id } = await submit();
    const res = await cancel(id);
    expect(res.status).toBe(202);
    expect(res.json).toEqual({ status: 'CANCELLATION_REQUESTED' });

    const st = await status(id);
    expect(st.status).toBe(200);
    expect(st.json).toMatchObject({ status: 'COMPLETED', metrics: { inference_time: 0 } });
    clock.advance(QUEUE_MS + RUN_MS); // it never runs
    expect((await status(id)).json.status).toBe('COMPLETED');
    const out = await result(id);
    expect(out.status).toBe(400);
    expect(out.json).toEqual({ detail: 'Request was cancelled' });
    expect((await cancel(id)).json).toEqual({ status: 'ALREADY_COMPLETED' });
  });

  it('cancels a running job and refuses to cancel a completed one', async () => {
    const { clock, submit, status, result, cancel } = await setup();
    const running = await submit();
    const finished = await submit();
    clock.advance(QUEUE_MS + 500);
    expect((await cancel(running.request_id)).status).toBe(202);
    expect((await status(running.request_id)).json.metrics).toEqual({ inference_time: 0.5 });
    expect((await result(running.request_id)).status).toBe(400);

    clock.advance(RUN_MS);
    const res = await cancel(finished.request_id);
    expect(res.status).toBe(400);
    expect(res.json).toEqual({ status: 'ALREADY_COMPLETED' });
    expect((await result(finished.request_id)).status).toBe(200);
  });
});

describe('unknown things', () => {
  it('answers 404 for unknown ids, files and routes', async () => {
    const { sim, call, status, result, cancel } = await setup();
    const id = '00000000-0000-4000-8000-000000000000';
    expect(await status(id)).toMatchObject({ status: 404, json: { detail: 'Request not found' } });
    expect(await result(id)).toMatchObject({ status: 404, json: { detail: 'Request not found' } });
    expect(await cancel(id)).toMatchObject({ status: 404, json: { status: 'NOT_FOUND' } });
    expect(await call('GET', '/fal-ai/other-model/requests')).toMatchObject({ status: 404, json: { detail: 'Not Found' } });
    expect((await fetch(`${sim.url}/files/${id}/0.jpeg`)).status).toBe(404);
  });

  it("forgets a job an hour after it completed, as fal's retention, and six minutes after for a large (inlined) result; its files stay", async () => {
    const { sim, clock, submit, status, result, cancel } = await setup();
    const plain = await submit();
    const inline = await submit({ ...SEED_REQUEST, sync_mode: true, image_size: 'square' });
    const cancelled = await submit();
    expect((await cancel(cancelled.request_id)).status).toBe(202);
    clock.advance(QUEUE_MS + RUN_MS); // both completed now
    const file = `${sim.url}/files/${plain.request_id}/0.jpeg`;
    expect((await fetch(file)).status).toBe(200);
    // A large result: kept 6 minutes.
    clock.advance(6 * 60_000 - 1);
    expect((await result(inline.request_id)).status).toBe(200);
    clock.advance(1);
    expect(await result(inline.request_id)).toMatchObject({ status: 404, json: { detail: 'Request not found' } });
    expect((await status(inline.request_id)).status).toBe(404);
    // A small one: an hour (the cancelled job, from its cancellation).
    expect((await result(plain.request_id)).status).toBe(200);
    clock.advance(60 * 60_000 - 6 * 60_000 - QUEUE_MS - RUN_MS);
    expect(await cancel(cancelled.request_id)).toMatchObject({ status: 404, json: { status: 'NOT_FOUND' } });
    expect((await status(plain.request_id)).status).toBe(200);
    clock.advance(QUEUE_MS + RUN_MS);
    expect(await status(plain.request_id)).toMatchObject({ status: 404, json: { detail: 'Request not found' } });
    expect(await result(plain.request_id)).toMatchObject({ status: 404, json: { detail: 'Request not found' } });
    expect(await cancel(plain.request_id)).toMatchObject({ status: 404, json: { status: 'NOT_FOUND' } });
    // Its images stay where the result pointed: fal's media outlive the queue's record of the job.
    expect((await fetch(file)).status).toBe(200);
  });

  it("refuses a submit past the account's concurrency limit with 429, queuing nothing, as fal does", async () => {
    const { clock, sim, call, submit } = await setup({ accountConcurrency: 2 });
    await submit();
    await submit();
    const refused = await call('POST', upstreamPaths.submit(), SEED_REQUEST);
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(refused.json).toEqual({ detail: 'Concurrency limit reached: 2 requests are already queued or running for this account' });
    expect(sim.requests.filter((r) => r.method === 'POST')).toHaveLength(3);
    clock.advance(QUEUE_MS + RUN_MS); // both done: room again
    await submit();
  });

  it('keeps results as long as configured', async () => {
    const { clock, submit, result } = await setup({ resultRetentionMs: 1_000 });
    const job = await submit();
    clock.advance(QUEUE_MS + RUN_MS + 999);
    expect((await result(job.request_id)).status).toBe(200);
    clock.advance(1);
    expect((await result(job.request_id)).status).toBe(404);
  });

  it('forgets the oldest jobs beyond maxJobs', async () => {
    const { submit, status } = await setup({ maxJobs: 2 });
    const first = await submit();
    await submit();
    await submit();
    expect((await status(first.request_id)).status).toBe(404);
  });
});

describe('recording', () => {
  it('records method, path, headers and body of every request', async () => {
    const { sim, submit, status } = await setup();
    const { request_id: id } = await submit(SEED_REQUEST, { 'x-fal-queue-priority': 'low' });
    await status(id, '?logs=1');
    await fetch(sim.url + upstreamPaths.status(id)); // unauthenticated: still recorded

    expect(sim.requests).toHaveLength(3);
    const [post, get, anonymous] = sim.requests;
    expect(post).toMatchObject({ method: 'POST', path: '/fal-ai/flux-lora/image-to-image', body: SEED_REQUEST });
    expect(post!.headers).toMatchObject({ authorization: `Key ${TOKEN}`, 'x-fal-queue-priority': 'low' });
    expect(get).toMatchObject({ method: 'GET', path: `/fal-ai/flux-lora/requests/${id}/status?logs=1` });
    expect(anonymous!.headers.authorization).toBeUndefined();
  });
});

describe('status stream', () => {
  it('sends status events until COMPLETED, then closes', async () => {
    const { sim, clock, submit } = await setup({ streamPollMs: 10 });
    const { request_id: id } = await submit();
    const res = await fetch(`${sim.url}${upstreamPaths.status(id)}/stream`, {
      headers: { authorization: `Key ${TOKEN}` },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/event-stream');
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    const events: { status: string }[] = [];
    let buffer = '';
    let advanced = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (line.startsWith('data: ')) events.push(JSON.parse(line.slice(6)));
      }
      // Move time only after seeing each state, so every state is observed.
      while (advanced < events.length) {
        clock.advance(advanced === 0 ? QUEUE_MS : RUN_MS);
        advanced++;
      }
    }
    expect(events.map((e) => e.status)).toEqual(['IN_QUEUE', 'IN_PROGRESS', 'COMPLETED']);
  });
});
