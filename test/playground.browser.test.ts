import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Script } from 'node:vm';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PLAYGROUND_CSP } from '../src/routes/playground.js';
import { renderImage } from '../src/simulator/images.js';
import { SEED_REQUEST, startStack, upstreamCalls, type Stack } from './helpers.js';
import { chromiumSkipReason, hasChromium, launchChromium } from './support/browser.js';

/**
 * The playground page: served with its own CSP, off in production, and a person's path through
 * it in a real headless Chromium: key, uploaded image, prompt, parameters, live progress,
 * results, cancel, and a clear message for a wrong key.
 */
const ARTIFACTS = new URL('../test-artifacts/', import.meta.url).pathname;

describe('playground over plain HTTP', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ listen: false });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('serves the page, its script and its stylesheet with the page CSP, no-cache and an ETag', async () => {
    for (const [url, type] of [
      ['/playground', 'text/html; charset=utf-8'],
      ['/playground/app.js', 'text/javascript; charset=utf-8'],
      ['/playground/app.css', 'text/css; charset=utf-8'],
    ] as const) {
      const res = await stack.app.inject({ url });
      expect(res.statusCode, url).toBe(200);
      expect(res.headers['content-type'], url).toBe(type);
      expect(res.headers['content-security-policy'], url).toBe(PLAYGROUND_CSP);
      expect(res.headers['cache-control'], url).toBe('no-cache');
      expect(res.headers['x-content-type-options'], url).toBe('nosniff');
      const etag = res.headers.etag as string;
      expect(etag, url).toMatch(/^"[\w-]+"$/);
      const again = await stack.app.inject({ url, headers: { 'if-none-match': etag } });
      expect(again.statusCode, url).toBe(304);
      expect(again.body, url).toBe('');
    }
    expect(PLAYGROUND_CSP).toContain("script-src 'self'");
    expect(PLAYGROUND_CSP).toContain("style-src 'self'");
    expect(PLAYGROUND_CSP).toContain("img-src 'self' data: http: https:");
    expect(PLAYGROUND_CSP).toContain("connect-src 'self'");
    expect(PLAYGROUND_CSP).toContain("frame-ancestors 'none'");
    expect(PLAYGROUND_CSP).not.toContain('unsafe');
  });

  it('has no inline script or style, and its script parses', async () => {
    const page = (await stack.app.inject({ url: '/playground' })).body;
    expect(page).toContain('<script src="/playground/app.js" defer></script>');
    expect(page).toContain('<link rel="stylesheet" href="/playground/app.css">');
    expect(page.match(/<script\b/g)).toHaveLength(1);
    expect(page).not.toMatch(/<style\b|\sstyle=|\son[a-z]+=/i);
    // Prefilled with the seed request.
    expect(page).toContain(SEED_REQUEST.prompt);
    expect(page).toContain(SEED_REQUEST.image_url);
    const script = (await stack.app.inject({ url: '/playground/app.js' })).body;
    expect(() => new Script(script)).not.toThrow();
    expect(script).not.toMatch(/localStorage\s*[.[]/);
  });

  it('leaves the API answers with their own CSP and keeps the page out of the OpenAPI document', async () => {
    const health = await stack.app.inject({ url: '/healthz' });
    expect(health.headers['content-security-policy']).toBe("default-src 'none'; frame-ancestors 'none'");
    const doc = (await stack.app.inject({ url: '/openapi.json' })).json() as { paths: Record<string, unknown> };
    expect(Object.keys(doc.paths).filter((p) => p.startsWith('/playground'))).toEqual([]);
  });

  it('is off by default in production, and follows PLAYGROUND_ENABLED either way', async () => {
    const cases: [Record<string, string>, number][] = [
      [{ NODE_ENV: 'production' }, 404],
      [{ NODE_ENV: 'production', PLAYGROUND_ENABLED: 'true' }, 200],
      [{ NODE_ENV: 'development', PLAYGROUND_ENABLED: 'false' }, 404],
      [{ NODE_ENV: 'test' }, 200],
    ];
    for (const [env, code] of cases) {
      const other = await startStack({ env, listen: false });
      try {
        for (const url of ['/playground', '/playground/app.js', '/playground/app.css']) {
          expect((await other.app.inject({ url })).statusCode, `${JSON.stringify(env)} ${url}`).toBe(code);
        }
      } finally {
        await other.close();
      }
    }
  });
});

describe.skipIf(!hasChromium)(`playground in a browser${chromiumSkipReason}`, () => {
  let stack: Stack;
  let browser: Browser;
  let context: BrowserContext;
  let fixtureDir: string;
  let fixture: string;
  let fixturePng: Buffer;
  /** Console errors, page errors and CSP violations of the current test's page. */
  let problems: string[];

  beforeAll(async () => {
    stack = await startStack({
      sim: { queueMs: 300, runMs: 600 },
      tenants: [{ id: 'team-a' }, { id: 'thrifty', submit: { max: 1, timeWindowMs: 60_000 } }],
    });
    fixtureDir = mkdtempSync(join(tmpdir(), 'playground-'));
    fixture = join(fixtureDir, 'input.png');
    fixturePng = renderImage({ width: 96, height: 64, format: 'png', seed: 7 });
    writeFileSync(fixture, fixturePng);
    browser = await launchChromium();
    mkdirSync(ARTIFACTS, { recursive: true });
  });
  afterEach(async () => {
    await context?.close();
  });
  afterAll(async () => {
    await browser?.close();
    await stack?.close();
    if (fixtureDir) rmSync(fixtureDir, { recursive: true, force: true });
  });

  async function openPlayground(viewport = { width: 1280, height: 900 }, base = stack.url): Promise<Page> {
    problems = [];
    context = await browser.newContext({ viewport });
    // Runs before the page's own script and outside its CSP: reports any violation as a console error.
    await context.addInitScript({
      content: "document.addEventListener('securitypolicyviolation', (e) => console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI));",
    });
    const page = await context.newPage();
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(message.text());
    });
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
    await page.goto(`${base}/playground`);
    return page;
  }

  /**
   * Waits until `count` result images have loaded. A function, not a string: the page's CSP
   * forbids eval, which Playwright would use for a string predicate. (Tests are type-checked
   * without the DOM library, hence the minimal shape.)
   */
  const waitForImages = (page: Page, count: number) =>
    page.waitForFunction(
      (n) => {
        type Img = { complete: boolean; naturalWidth: number };
        const doc = (globalThis as unknown as { document: { querySelectorAll(selector: string): ArrayLike<Img> } }).document;
        const images = Array.from(doc.querySelectorAll('#results img'));
        return images.length === n && images.every((img) => img.complete && img.naturalWidth > 0);
      },
      count,
      { timeout: 20_000 },
    );
  const submits = () => upstreamCalls(stack).filter((r) => r.method === 'POST');

  it('uploads an image, follows the progress and renders the result images', { timeout: 60_000 }, async () => {
    const page = await openPlayground();
    const before = submits().length;
    await page.getByLabel('API key or browser token').fill(stack.keys['team-a']!);
    await page.getByText('Upload a file', { exact: true }).click();
    expect(await page.getByLabel('Upload a file').isChecked()).toBe(true);
    await page.getByLabel('Image file').setInputFiles(fixture);
    await expect.poll(() => page.evaluate("document.getElementById('preview-img').naturalWidth")).toBe(96);
    await page.getByLabel('Prompt').fill('A watercolour fox sitting on a stone bench');
    await page.getByRole('spinbutton', { name: 'Number of images' }).fill('2');
    await page.getByRole('button', { name: 'Generate' }).click();

    // Two result images, really loaded from the (simulated) file host.
    await waitForImages(page, 2);
    expect(await page.locator('#status').getAttribute('data-status')).toBe('COMPLETED');
    expect(await page.locator('#message').innerText()).toMatch(/Done\s+2 images/);

    const logs = await page.locator('#logs').innerText();
    expect(logs).toMatch(/IN_QUEUE|IN_PROGRESS/);
    expect(logs).toContain('Loading LoRA weights');
    expect(logs).toMatch(/Step \d+\/28/);
    expect(logs).toContain('COMPLETED');

    // What reached fal: the uploaded file as a data URI, and the page's parameters.
    expect(submits()).toHaveLength(before + 1);
    const sent = submits().at(-1)!.body as Record<string, unknown>;
    expect(sent.image_url).toMatch(/^data:image\/png;base64,/);
    expect(sent.image_url).toBe(`data:image/png;base64,${fixturePng.toString('base64')}`);
    expect(sent).toMatchObject({
      prompt: 'A watercolour fox sitting on a stone bench',
      num_images: 2,
      strength: 0.85,
      num_inference_steps: 28,
      guidance_scale: 3.5,
      output_format: 'jpeg',
    });
    // The page followed the status stream (not polling), with logs.
    const requestId = (await page.locator('#request-id').innerText()).trim();
    const streamed = upstreamCalls(stack).filter((r) => r.path.includes(requestId));
    expect(streamed.some((r) => r.path.endsWith('/status/stream?logs=1'))).toBe(true);
    expect(streamed.some((r) => /\/status(\?|$)/.test(r.path))).toBe(false);

    // The seed shown is the result's.
    const result = (await (await fetch(`${stack.url}/v1/requests/${requestId}`, { headers: stack.bearer('team-a') })).json()) as { seed: number };
    expect((await page.locator('#result-seed').innerText()).trim()).toBe(String(result.seed));

    // The key stays in this tab's session storage, never in local storage.
    expect(await page.evaluate("[localStorage.length, sessionStorage.getItem('fal-gateway.playground.key')]")).toEqual([0, stack.keys['team-a']]);

    await page.screenshot({ path: `${ARTIFACTS}playground-result.png`, fullPage: true });

    expect(problems).toEqual([]);
  });

  it('cancels a queued job: the page reports the cancellation and renders no image', { timeout: 30_000 }, async () => {
    // A queue long enough that the click surely lands while the job waits.
    const slow = await startStack({ sim: { queueMs: 5_000, runMs: 600 } });
    try {
      const page = await openPlayground(undefined, slow.url);
      await page.getByLabel('API key or browser token').fill(slow.keys['team-a']!);
      await page.getByRole('button', { name: 'Generate' }).click();
      const cancel = page.getByRole('button', { name: 'Cancel' });
      await expect.poll(() => cancel.isEnabled(), { interval: 10 }).toBe(true);
      expect(await page.locator('#status').getAttribute('data-status')).toBe('IN_QUEUE');
      await cancel.click();

      await expect.poll(() => page.locator('#status').getAttribute('data-status'), { timeout: 10_000 }).toBe('CANCELLED');
      const message = await page.locator('#message').innerText();
      expect(message).toMatch(/Cancelled/);
      expect(message).toMatch(/no images were produced/);
      const logs = await page.locator('#logs').innerText();
      expect(logs).toContain('CANCELLATION_REQUESTED');
      expect(logs).not.toContain('IN_PROGRESS');
      expect(await cancel.isDisabled()).toBe(true);
      expect(await page.getByRole('button', { name: 'Generate' }).isEnabled()).toBe(true);
      const requestId = (await page.locator('#request-id').innerText()).trim();
      const calls = upstreamCalls(slow);
      expect(calls.filter((r) => r.method === 'PUT' && r.path.endsWith(`/requests/${requestId}/cancel`))).toHaveLength(1);
      // A cancelled job has no result to fetch: the page does not ask for one.
      expect(calls.some((r) => r.method === 'GET' && r.path.endsWith(`/requests/${requestId}`))).toBe(false);
      await page.waitForTimeout(1_000);
      expect(await page.locator('#results img').count()).toBe(0);
      await page.screenshot({ path: `${ARTIFACTS}playground-cancelled.png`, fullPage: true });
      expect(problems).toEqual([]);
    } finally {
      await slow.close();
    }
  });

  it('shows a clear 401 message for a wrong key, without queuing anything', { timeout: 30_000 }, async () => {
    const page = await openPlayground();
    const before = submits().length;
    await page.getByLabel('API key or browser token').fill('not-a-real-key');
    await page.getByRole('button', { name: 'Generate' }).click();
    await expect.poll(() => page.locator('#status').getAttribute('data-status')).toBe('ERROR');
    const message = await page.locator('#message').innerText();
    expect(message).toContain('Not authorized (401)');
    expect(message).toMatch(/did not accept this key/);
    expect(await page.locator('#message').getAttribute('role')).toBe('alert');
    expect(await page.getByLabel('API key or browser token').getAttribute('aria-invalid')).toBe('true');
    expect(await page.locator('#results img').count()).toBe(0);
    expect(submits()).toHaveLength(before);
    // The 401 itself is the only thing Chromium reports.
    await page.screenshot({ path: `${ARTIFACTS}playground-401.png`, fullPage: true });
    expect(problems.filter((p) => !/status of 401/.test(p))).toEqual([]);
  });

  it("shows a 422's problems per field", { timeout: 30_000 }, async () => {
    const page = await openPlayground();
    await page.getByLabel('API key or browser token').fill(stack.keys['team-a']!);
    await page.getByRole('spinbutton', { name: 'Strength' }).fill('3');
    await page.getByLabel('Prompt').fill('');
    await page.getByRole('button', { name: 'Generate' }).click();
    await expect.poll(() => page.locator('#status').getAttribute('data-status')).toBe('ERROR');
    const message = await page.locator('#message').innerText();
    expect(message).toContain('The request was rejected (422)');
    expect(message).toMatch(/Strength: .*between 0\.01 and 1/);
    expect(message).toMatch(/Prompt: /);
    expect(await page.locator('#strength-error').innerText()).toMatch(/between 0\.01 and 1/);
    expect(await page.getByRole('spinbutton', { name: 'Strength' }).getAttribute('aria-invalid')).toBe('true');
    expect(await page.getByLabel('Prompt').getAttribute('aria-invalid')).toBe('true');
    await page.screenshot({ path: `${ARTIFACTS}playground-422.png`, fullPage: true });
    expect(problems.filter((p) => !/status of 422/.test(p))).toEqual([]);
  });

  it('falls back to polling status_url when the status stream fails', { timeout: 30_000 }, async () => {
    const page = await openPlayground();
    await page.route('**/status/stream**', (route) => route.abort('failed'));
    await page.getByLabel('API key or browser token').fill(stack.keys['team-a']!);
    await page.getByRole('button', { name: 'Generate' }).click();
    await waitForImages(page, 1);
    const logs = await page.locator('#logs').innerText();
    expect(logs).toContain('polling every 500 ms');
    expect(logs).toMatch(/Step \d+\/28/);
    const requestId = (await page.locator('#request-id').innerText()).trim();
    const polls = upstreamCalls(stack).filter((r) => r.path.endsWith(`/requests/${requestId}/status?logs=1`));
    expect(polls.length).toBeGreaterThan(1);
    // The seed request's URL went upstream as given.
    expect(submits().at(-1)!.body).toMatchObject({ image_url: SEED_REQUEST.image_url, prompt: SEED_REQUEST.prompt });
    expect(problems.filter((p) => !/ERR_FAILED/.test(p))).toEqual([]);
  });

  it('shows a 429 with its Retry-After', { timeout: 30_000 }, async () => {
    const page = await openPlayground();
    await page.getByLabel('API key or browser token').fill(stack.keys.thrifty!);
    await page.getByRole('button', { name: 'Generate' }).click();
    await expect.poll(() => page.locator('#status').getAttribute('data-status'), { timeout: 10_000 }).toMatch(/^(COMPLETED|ERROR)$/);
    expect(await page.locator('#status').getAttribute('data-status')).toBe('COMPLETED');
    await page.getByRole('button', { name: 'Generate' }).click();
    await expect.poll(() => page.locator('#status').getAttribute('data-status')).toBe('ERROR');
    const message = await page.locator('#message').innerText();
    expect(message).toContain('Rate limit reached (429)');
    expect(message).toMatch(/Try again in \d+ s\./);
    expect(message).toContain('error_type: rate_limited');
    // The previous images are cleared and the form is ready again.
    expect(await page.locator('#results img').count()).toBe(0);
    expect(await page.getByRole('button', { name: 'Generate' }).isEnabled()).toBe(true);
    expect(problems.filter((p) => !/status of 429/.test(p))).toEqual([]);
  });

  it('fits a phone-width screen', { timeout: 30_000 }, async () => {
    const page = await openPlayground({ width: 390, height: 844 });
    const width = await page.evaluate('document.documentElement.scrollWidth');
    expect(width).toBeLessThanOrEqual(390);
    await page.screenshot({ path: `${ARTIFACTS}playground-phone.png`, fullPage: true });
    expect(problems).toEqual([]);
  });
});
