import { mkdirSync } from 'node:fs';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderImage } from '../src/simulator/index.js';
import { startStack, upstreamCalls, type Stack } from './helpers.js';
import { authorizeSwaggerUi, chromiumSkipReason, hasChromium, launchChromium } from './support/browser.js';

/**
 * A person's path through the docs page: Authorize with a tenant key, then Execute on
 * submit, status (until COMPLETED) and result, in a real headless Chromium.
 */
const ARTIFACTS = new URL('../test-artifacts/', import.meta.url).pathname;

describe.skipIf(!hasChromium)(`Swagger UI in a browser${chromiumSkipReason}`, () => {
  let stack: Stack;
  let browser: Browser;
  let page: Page;
  /** Errors the page wrote to the console (a CSP violation shows up here), outside failed requests. */
  const consoleErrors: string[] = [];

  beforeAll(async () => {
    stack = await startStack();
    browser = await launchChromium();
    page = await browser.newPage({ viewport: { width: 1300, height: 1600 } });
    page.on('console', (message) => {
      if (message.type() === 'error') consoleErrors.push(message.text());
    });
  });
  afterAll(async () => {
    await browser?.close();
    await stack?.close();
  });

  async function execute(operation: string, params: Record<string, string> = {}, clear = true) {
    const op = page.locator(`#operations-${operation}`);
    if (!(await op.locator('.execute').isVisible())) await op.locator('.opblock-summary').click();
    for (const [name, value] of Object.entries(params)) {
      await op.locator(`tr[data-param-name="${name}"] input`).fill(value);
    }
    await op.locator('.execute').click();
    const status = op.locator('.live-responses-table tbody .response-col_status').first();
    await status.waitFor();
    const code = (await status.textContent())!.trim();
    const body = JSON.parse((await op.locator('.live-responses-table tbody .response-col_description pre').first().textContent())!);
    if (clear) await op.locator('.btn-clear').click();
    return { code, body };
  }

  it('authorizes with a tenant key and runs submit, status and result with Execute', { timeout: 90_000 }, async () => {
    await page.goto(`${stack.url}/docs`);
    await authorizeSwaggerUi(page, stack.keys['team-a']!);
    // The page loads clean: no CSP violation, no script error.
    expect(consoleErrors).toEqual([]);

    // The example body is the seed request, so Execute works as it stands.
    const submitted = await execute('Image_to_image-submit');
    expect(submitted.code).toBe('200');
    expect(submitted.body.status).toBe('IN_QUEUE');
    const id = submitted.body.request_id as string;
    expect(submitted.body.status_url).toBe(`${stack.url}/v1/requests/${id}/status`);

    let status = await execute('Image_to_image-getStatus', { request_id: id });
    for (let i = 0; i < 50 && status.body.status !== 'COMPLETED'; i++) {
      expect(status.code).toBe('202');
      await new Promise((r) => setTimeout(r, 50));
      status = await execute('Image_to_image-getStatus', { request_id: id });
    }
    expect(status.code).toBe('200');
    expect(status.body.status).toBe('COMPLETED');

    const result = await execute('Image_to_image-getResult', { request_id: id }, false);
    expect(result.code).toBe('200');
    expect(result.body.images).toHaveLength(1);
    expect(result.body.images[0].content_type).toBe('image/jpeg');

    // The key lives in the page only: nothing the browser keeps after the session holds it.
    const stored = String(await page.evaluate('JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + document.cookie'));
    expect(stored).not.toContain(stack.keys['team-a']!);

    mkdirSync(ARTIFACTS, { recursive: true });
    await page.locator('#operations-Image_to_image-getResult .live-responses-table').screenshot({ path: `${ARTIFACTS}swagger-ui-result.png` });
  });

  it("shows a 422 with fal's validation entries when the example is edited out of range", async () => {
    const op = page.locator('#operations-Image_to_image-submit');
    if (!(await op.locator('.execute').isVisible())) await op.locator('.opblock-summary').click();
    const editor = op.locator('textarea.body-param__text');
    const body = JSON.parse(await editor.inputValue());
    await editor.fill(JSON.stringify({ ...body, strength: 3 }));
    await op.locator('.execute').click();
    await op.locator('.live-responses-table tbody .response-col_status').first().waitFor();
    expect((await op.locator('.live-responses-table tbody .response-col_status').first().textContent())!.trim()).toBe('422');
    const error = JSON.parse((await op.locator('.live-responses-table tbody .response-col_description pre').first().textContent())!);
    expect(error.detail[0]).toMatchObject({ loc: ['body', 'strength'], type: 'less_than_equal' });
  });

  it('uploads an image from the multipart form, leaving seed and image_size to the model as the JSON example does', async () => {
    const op = page.locator('#operations-Image_to_image-submit');
    if (!(await op.locator('.execute').isVisible())) await op.locator('.opblock-summary').click();
    await op.locator('.opblock-section-request-body select').first().selectOption('multipart/form-data');
    await op.locator('input[type=file]').setInputFiles({ name: 'input.png', mimeType: 'image/png', buffer: renderImage({ width: 32, height: 32, format: 'png', seed: 3 }) });
    const before = upstreamCalls(stack).filter((c) => c.method === 'POST').length;
    await op.locator('.execute').click();
    const status = op.locator('.live-responses-table tbody .response-col_status').first();
    await status.waitFor();
    expect((await status.textContent())!.trim()).toBe('200');
    const posts = upstreamCalls(stack).filter((c) => c.method === 'POST');
    expect(posts).toHaveLength(before + 1);
    const sent = posts.at(-1)!.body as Record<string, unknown>;
    expect(sent.image_url).toMatch(/^data:image\/png;base64,/);
    // Not a fixed seed and a fixed square for every upload: left out, as in the JSON example.
    expect(sent).not.toHaveProperty('seed');
    expect(sent).not.toHaveProperty('image_size');
  });
});
