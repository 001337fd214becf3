import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hostAllowed } from '../src/tenants/input-policy.js';
import { parseTenants } from '../src/tenants/tenants-file.js';
import { json, SEED_REQUEST, startStack, upstreamCalls, type Stack } from './helpers.js';

describe('input policy', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({
      env: { IMAGE_DATA_URI_MAX_BYTES: '2050' },
      tenants: [{ id: 'open' }, { id: 'restricted', imageHosts: ['storage.googleapis.com', '*.images.example.com'] }],
    });
  });
  afterAll(() => stack.close());

  async function submit(tenant: string, body: Record<string, unknown>) {
    const before = upstreamCalls(stack).length;
    const res = await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer(tenant) }, body: JSON.stringify(body) });
    const payload = (await res.json()) as { error_type?: string; detail?: Array<{ loc: unknown[]; msg: string; type: string }> };
    return { status: res.status, payload, reachedUpstream: upstreamCalls(stack).length > before };
  }

  /** A PNG data URI of exactly `bytes` characters (base64 comes in fours: 22 + 4n). */
  const dataUri = (bytes: number) => {
    const head = 'data:image/png;base64,iVBORw0KGgoAAAAN';
    if ((bytes - head.length) % 4 !== 0) throw new Error(`no PNG data URI is ${bytes} characters long`);
    return `${head}${'A'.repeat(bytes - head.length)}`;
  };

  it('caps inline images: a data URI at the limit passes, one byte over is 422 before anything is queued', async () => {
    expect((await submit('open', { ...SEED_REQUEST, image_url: dataUri(2050) })).status).toBe(200);
    const over = await submit('open', { ...SEED_REQUEST, image_url: dataUri(2054) });
    expect(over.status).toBe(422);
    expect(over.reachedUpstream).toBe(false);
    expect(over.payload.detail![0]).toMatchObject({ loc: ['body', 'image_url'], type: 'string_too_long' });
    expect(over.payload.detail![0]!.msg).toMatch(/limit is 2050/);
    // The scheme in any case is a data URI all the same (the schema takes it so): capped alike.
    for (const scheme of ['DATA:', 'Data:']) {
      const shouted = await submit('open', { ...SEED_REQUEST, image_url: scheme + dataUri(2054).slice(5) });
      expect(shouted.status, scheme).toBe(422);
      expect(shouted.reachedUpstream).toBe(false);
      expect(shouted.payload.detail![0]).toMatchObject({ loc: ['body', 'image_url'], type: 'string_too_long' });
    }
    expect((await submit('open', { ...SEED_REQUEST, image_url: 'DATA:' + dataUri(2050).slice(5) })).status).toBe(200);
  });

  it.each(['owner/repo', 'owner/repo/weights.safetensors', 'https://huggingface.co/owner/repo/resolve/main/w.safetensors'])(
    'accepts the LoRA path %s',
    async (path) => {
      expect((await submit('open', { ...SEED_REQUEST, loras: [{ path, scale: 0.8 }] })).status).toBe(200);
    },
  );

  it.each(['file:///etc/passwd', 'javascript:alert(1)', 'data:application/octet-stream;base64,AAAA', '../../etc/passwd', 'owner/../secret', 'just-a-name', 'ftp://host/w'])(
    'rejects the LoRA path %s',
    async (path) => {
      const res = await submit('open', { ...SEED_REQUEST, loras: [{ path }] });
      expect(res.status).toBe(422);
      expect(res.reachedUpstream).toBe(false);
      expect(res.payload.detail![0]!.loc).toEqual(['body', 'loras', 0, 'path']);
    },
  );

  it("limits a tenant's image and LoRA URLs to its allowed hosts", async () => {
    expect((await submit('restricted', SEED_REQUEST)).status).toBe(200);
    expect((await submit('restricted', { ...SEED_REQUEST, image_url: 'https://cdn.images.example.com/a.png' })).status).toBe(200);
    expect((await submit('restricted', { ...SEED_REQUEST, image_url: dataUri(102) })).status).toBe(200);
    expect((await submit('restricted', { ...SEED_REQUEST, loras: [{ path: 'owner/repo' }] })).status).toBe(200);

    const elsewhere = await submit('restricted', {
      ...SEED_REQUEST,
      image_url: 'http://169.254.169.254/latest/meta-data',
      loras: [{ path: 'https://images.example.com.evil.net/w.safetensors' }],
    });
    expect(elsewhere.status).toBe(422);
    expect(elsewhere.reachedUpstream).toBe(false);
    expect(elsewhere.payload.detail!.map((d) => d.loc)).toEqual([
      ['body', 'image_url'],
      ['body', 'loras', 0, 'path'],
    ]);
    expect(elsewhere.payload.detail![0]!.msg).toContain('"169.254.169.254" is not allowed for this tenant');
    // Another tenant without a list is not affected.
    expect((await submit('open', { ...SEED_REQUEST, image_url: 'https://anywhere.example.org/x.png' })).status).toBe(200);
  });

  it('refuses URLs that parsers read differently (backslashes, control characters), so an allowed host cannot hide another', async () => {
    for (const image_url of ['https://storage.googleapis.com\\@evil.com/a.png', 'https://storage.googleapis.com/a\\b.png', 'https://storage.google\tapis.com/a.png', 'https://storage.googleapis.com/a.png\n']) {
      for (const tenant of ['restricted', 'open']) {
        const res = await submit(tenant, { ...SEED_REQUEST, image_url });
        expect(res.status, `${tenant} ${JSON.stringify(image_url)}`).toBe(422);
        expect(res.reachedUpstream).toBe(false);
        expect(res.payload.detail![0]!.msg).toContain('no backslashes or control characters');
      }
    }
    const lora = await submit('restricted', { ...SEED_REQUEST, loras: [{ path: 'https://storage.googleapis.com\\@evil.com/w.safetensors' }] });
    expect(lora.status).toBe(422);
    expect(lora.payload.detail![0]!.loc).toEqual(['body', 'loras', 0, 'path']);
  });

  it('matches host patterns exactly or by subdomain', () => {
    const patterns = ['example.com', '*.cdn.example.com'];
    expect(hostAllowed('example.com', patterns)).toBe(true);
    expect(hostAllowed('EXAMPLE.com', patterns)).toBe(true);
    expect(hostAllowed('a.cdn.example.com', patterns)).toBe(true);
    expect(hostAllowed('cdn.example.com', patterns)).toBe(false);
    expect(hostAllowed('sub.example.com', patterns)).toBe(false);
    expect(hostAllowed('evilexample.com', patterns)).toBe(false);
    expect(hostAllowed('a.cdn.example.com.evil.net', patterns)).toBe(false);
  });

  it('reads imageHosts from the tenants file and rejects bad patterns', () => {
    expect(parseTenants({ tenants: [{ id: 'a', keys: [], imageHosts: ['Example.COM', '*.cdn.example.com'] }] })[0]!.imageHosts).toEqual([
      'example.com',
      '*.cdn.example.com',
    ]);
    expect(() => parseTenants({ tenants: [{ id: 'a', keys: [], imageHosts: ['https://example.com'] }] })).toThrow(/must be a host name/);
  });
});
