import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OTHER_BODY_LIMIT_BYTES } from '../src/app.js';
import { json, SEED_REQUEST, startStack, upstreamCalls, type Stack } from './helpers.js';

/**
 * Only the submit routes take large bodies. Any other request (an unknown path, a preflight, a
 * cancel, a browser token) is answered once OTHER_BODY_LIMIT_BYTES have arrived, or at once when
 * its Content-Length says more: nobody, with a key or without, can make the gateway read and
 * parse megabytes to answer a 404.
 */

interface Answer {
  status: number;
  body: string;
}

/**
 * Sends a request's head and only the first bytes of its body, and returns the answer the gateway
 * gives without waiting for the rest (or undefined if it gave none within `waitMs`).
 */
function answerWithoutWholeBody(url: string, head: string, firstBytes: string, waitMs = 3_000): Promise<Answer | undefined> {
  return new Promise((resolve) => {
    const socket = connect(Number(new URL(url).port), '127.0.0.1');
    let received = '';
    const done = (answer: Answer | undefined) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(answer);
    };
    const timer = setTimeout(() => done(undefined), waitMs);
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
      const end = received.indexOf('\r\n\r\n');
      if (end === -1) return;
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(received.slice(0, end))?.[1] ?? NaN);
      const body = received.slice(end + 4);
      if (Buffer.byteLength(body, 'latin1') >= length) done({ status: Number(received.slice(9, 12)), body });
    });
    socket.write(head + firstBytes);
  });
}

describe('body limits', () => {
  let stack: Stack;
  const big = 4 * 1024 * 1024;
  const host = () => `Host: 127.0.0.1:${new URL(stack.url).port}`;

  beforeAll(async () => {
    stack = await startStack({ tenants: [{ id: 'team-a', allowedOrigins: ['http://localhost:5173'] }] });
  });
  afterAll(() => stack.close());

  it('answers an unknown path at once, without a key, whatever body it announces', async () => {
    const answer = await answerWithoutWholeBody(
      stack.url,
      `POST /nowhere HTTP/1.1\r\n${host()}\r\nContent-Type: application/json\r\nContent-Length: ${big}\r\n\r\n`,
      '{"k0":0,',
    );
    expect(answer?.status).toBe(404);
    expect(JSON.parse(answer!.body)).toEqual({ detail: 'Route POST /nowhere not found; see /docs for the available routes', error_type: 'route_not_found' });
  });

  it('stops reading a chunked body to an unknown path past the small limit', async () => {
    const chunk = `{"k":"${'x'.repeat(OTHER_BODY_LIMIT_BYTES)}`;
    const answer = await answerWithoutWholeBody(
      stack.url,
      `POST /v1/nowhere HTTP/1.1\r\n${host()}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`,
      `${chunk.length.toString(16)}\r\n${chunk}\r\n`,
    );
    expect(answer?.status).toBe(404);
    expect(JSON.parse(answer!.body).error_type).toBe('route_not_found');
  });

  it('answers an unknown path 404 whatever is wrong with its body (not JSON, another type)', async () => {
    for (const [type, body] of [
      ['application/json', '{not json'],
      ['text/plain', 'hello'],
      ['application/json', ''],
    ]) {
      const res = await fetch(`${stack.url}/v1/nowhere`, { method: 'POST', headers: { 'content-type': type! }, body });
      expect(res.status, `${type} ${body}`).toBe(404);
      expect(((await res.json()) as { error_type: string }).error_type).toBe('route_not_found');
    }
  });

  it('answers a preflight carrying a large body at once', async () => {
    const answer = await answerWithoutWholeBody(
      stack.url,
      `OPTIONS /v1/image-to-image HTTP/1.1\r\n${host()}\r\nOrigin: http://localhost:5173\r\nAccess-Control-Request-Method: POST\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${big}\r\n\r\n`,
      '{',
    );
    expect(answer?.status).toBe(413);
    expect(JSON.parse(answer!.body)).toEqual({ detail: `The request body exceeds the limit of ${OTHER_BODY_LIMIT_BYTES} bytes`, error_type: 'payload_too_large' });
  });

  it('refuses a large body on the routes that take small ones (cancel, browser tokens), naming their limit', async () => {
    const key = stack.keys['team-a']!;
    for (const [method, path] of [
      ['PUT', '/v1/requests/00000000-0000-4000-8000-000000000000/cancel'],
      ['PUT', '/fal-ai/flux-lora/requests/00000000-0000-4000-8000-000000000000/cancel'],
      ['POST', '/v1/tokens'],
    ]) {
      const answer = await answerWithoutWholeBody(
        stack.url,
        `${method} ${path} HTTP/1.1\r\n${host()}\r\nAuthorization: Bearer ${key}\r\nContent-Type: application/json\r\nContent-Length: ${big}\r\n\r\n`,
        '{',
      );
      expect(answer?.status, `${method} ${path}`).toBe(413);
      expect(JSON.parse(answer!.body).detail).toBe(`The request body exceeds the limit of ${OTHER_BODY_LIMIT_BYTES} bytes`);
    }
  });

  it('still takes a submit as large as BODY_LIMIT_BYTES allows, on both submit paths', async () => {
    // A 2 MiB data URI: far past the small limit, well within the default 10 MiB.
    const image = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.alloc(1_500_000)]);
    const body = JSON.stringify({ ...SEED_REQUEST, image_url: `data:image/png;base64,${image.toString('base64')}` });
    expect(body.length).toBeGreaterThan(2 * 1024 * 1024 - 100_000);
    const before = upstreamCalls(stack).length;
    for (const path of ['/v1/image-to-image', '/fal-ai/flux-lora/image-to-image']) {
      const res = await fetch(`${stack.url}${path}`, { method: 'POST', headers: { ...json, ...stack.bearer('team-a') }, body });
      expect(res.status, path).toBe(200);
    }
    expect(upstreamCalls(stack).length).toBe(before + 2);
  });
});
