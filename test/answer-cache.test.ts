import { describe, expect, it } from 'vitest';
import { MemoryAnswerCache, type CachedAnswer } from '../src/jobs/answer-cache.js';
import { json, SEED_REQUEST, startStack, waitForCompletion } from './helpers.js';

const answer = (bytes: number): CachedAnswer => ({ statusCode: 200, contentType: 'application/json', headers: {}, body: Buffer.alloc(bytes, 0x20) });
/** What one answer of `bytes` is charged (its body and a fixed allowance). */
const charged = (bytes: number) => bytes + 256;

describe('MemoryAnswerCache', () => {
  it('keeps answers for their TTL, then forgets them', async () => {
    let now = 1_000;
    const cache = new MemoryAnswerCache({ ttlMs: 100, maxBytes: 10_000, now: () => now });
    await cache.set('a', answer(10), 'team-a');
    expect((await cache.get('a'))?.body.length).toBe(10);
    now += 100;
    expect(await cache.get('a')).toBeUndefined();
    expect(cache.usedBytes).toBe(0);
  });

  it('when full, takes room from the tenant holding the most bytes, oldest answer first', async () => {
    const cache = new MemoryAnswerCache({ ttlMs: 60_000, maxBytes: charged(1_000) * 10 });
    await cache.set('b-1', answer(1_000), 'team-b');
    await cache.set('c-1', answer(1_000), 'team-c');
    // team-a fills the rest, and then keeps going.
    for (let i = 0; i < 20; i++) await cache.set(`a-${i}`, answer(1_000), 'team-a');
    expect(await cache.get('b-1')).toBeDefined();
    expect(await cache.get('c-1')).toBeDefined();
    // team-a lost its oldest answers, and kept its newest.
    expect(await cache.get('a-0')).toBeUndefined();
    expect(await cache.get('a-19')).toBeDefined();
    expect(cache.bytesOf('team-a')).toBe(charged(1_000) * 8);
    expect(cache.usedBytes).toBeLessThanOrEqual(charged(1_000) * 10);
  });

  it('evicts the smaller tenants too once the large one is down to their size', async () => {
    const cache = new MemoryAnswerCache({ ttlMs: 60_000, maxBytes: charged(1_000) * 4 });
    await cache.set('b-1', answer(1_000), 'team-b');
    await cache.set('b-2', answer(1_000), 'team-b');
    await cache.set('a-1', answer(1_000), 'team-a');
    await cache.set('a-2', answer(1_000), 'team-a');
    await cache.set('b-3', answer(1_000), 'team-b');
    // team-b now held the most: its oldest went.
    expect(await cache.get('b-1')).toBeUndefined();
    expect(await cache.get('a-1')).toBeDefined();
    expect(cache.bytesOf('team-a')).toBe(cache.bytesOf('team-b'));
  });

  it('replaces an answer kept under the same key without counting it twice', async () => {
    const cache = new MemoryAnswerCache({ ttlMs: 60_000, maxBytes: 100_000 });
    await cache.set('k', answer(500), 'team-a');
    await cache.set('k', answer(700), 'team-a');
    expect(cache.size).toBe(1);
    expect(cache.bytesOf('team-a')).toBe(charged(700));
    expect(cache.usedBytes).toBe(charged(700));
  });
});

describe('the result cache shared by tenants (memory)', () => {
  it("keeps another tenant's result when one tenant fills the cache with large ones", async () => {
    // The smallest cache, and a simulated fal that forgets all but its last 4 jobs (its retention).
    const stack = await startStack({ env: { RESULT_CACHE_MAX_BYTES: '1048576' }, sim: { queueMs: 20, runMs: 50, maxJobs: 4 } });
    try {
      const submit = async (tenant: string, body: unknown) =>
        (await (await fetch(`${stack.url}/v1/image-to-image`, { method: 'POST', headers: { ...stack.bearer(tenant), ...json }, body: JSON.stringify(body) })).json()) as {
          status_url: string;
          response_url: string;
        };
      const kept = await submit('team-b', SEED_REQUEST);
      await waitForCompletion(kept.status_url, stack.bearer('team-b'));
      expect((await fetch(kept.response_url, { headers: stack.bearer('team-b') })).status).toBe(200);
      // sync_mode results carry their images as data URIs: hundreds of kilobytes each.
      const large = { ...SEED_REQUEST, sync_mode: true, num_images: 4, output_format: 'png', image_size: { width: 512, height: 512 } };
      for (let i = 0; i < 6; i++) {
        const job = await submit('team-a', large);
        await waitForCompletion(job.status_url, stack.bearer('team-a'));
        await stack.app.whenIdle();
        expect((await fetch(job.response_url, { headers: stack.bearer('team-a') })).status).toBe(200);
      }
      // fal has forgotten team-b's job by now; the gateway still has its result.
      const later = await fetch(kept.response_url, { headers: stack.bearer('team-b') });
      expect(later.status).toBe(200);
      expect(((await later.json()) as { images: unknown[] }).images).toHaveLength(1);
    } finally {
      await stack.close();
    }
  });
});
