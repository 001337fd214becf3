import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createLogDestination } from '../src/log-destination.js';

/** The server's log destination, writing to a real file: batched, in order, nothing lost. */
describe('log destination', () => {
  let dir: string | undefined;
  afterEach(async () => {
    vi.useRealTimers();
    if (dir) await rm(dir, { recursive: true, force: true });
    dir = undefined;
  });

  const linesOf = async (file: string) => (await readFile(file, 'utf8').catch(() => '')).split('\n').filter(Boolean);

  async function waitFor(check: () => Promise<boolean>, ms = 2_000): Promise<void> {
    for (const until = Date.now() + ms; Date.now() < until; ) {
      if (await check()) return;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  it('writes many lines in order, each full batch at once (the timer only writes what is left)', async () => {
    // The 250 ms flush never fires here: only full batches and flushSync write.
    vi.useFakeTimers({ toFake: ['setInterval'] });
    dir = await mkdtemp(join(tmpdir(), 'log-destination-'));
    const file = join(dir, 'out.log');
    const destination = createLogDestination(file);
    const line = (i: number) => `${JSON.stringify({ i, msg: 'x'.repeat(200) })}\n`;
    for (let i = 0; i < 2_000; i++) destination.stream.write(line(i));
    // About 2,000 x 222 characters: 27 full 16 KiB batches, written without the timer; the rest waits.
    const batched = Math.floor((2_000 * line(0).length) / 16_384) * Math.ceil(16_384 / line(0).length);
    // Wait until the writes settle (the count holds still), then look.
    let seen = -1;
    await waitFor(async () => {
      const now = (await linesOf(file)).length;
      const settled = now === seen && now >= batched - 100;
      seen = now;
      if (!settled) await new Promise((resolve) => setTimeout(resolve, 100));
      return settled;
    }, 5_000);
    const early = await linesOf(file);
    expect(early.length).toBeGreaterThanOrEqual(batched - 100);
    expect(early.length).toBeLessThan(2_000);
    destination.flushSync();
    const all = await linesOf(file);
    expect(all.map((l) => (JSON.parse(l) as { i: number }).i)).toEqual(Array.from({ length: 2_000 }, (_, i) => i));
  });

  it('writes a lone line within its 250 ms deadline, and flushSync writes what is still gathered', async () => {
    dir = await mkdtemp(join(tmpdir(), 'log-destination-'));
    const file = join(dir, 'out.log');
    const destination = createLogDestination(file);
    destination.stream.write('{"msg":"alone"}\n');
    await waitFor(async () => (await linesOf(file)).length === 1, 1_000);
    expect(await linesOf(file)).toEqual(['{"msg":"alone"}']);
    destination.stream.write('{"msg":"at exit"}\n');
    destination.flushSync();
    expect(await linesOf(file)).toEqual(['{"msg":"alone"}', '{"msg":"at exit"}']);
  });
});
