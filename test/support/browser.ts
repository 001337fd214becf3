import { existsSync } from 'node:fs';
import { chromium, type Browser, type Page } from 'playwright-core';

/** Debian's Chromium, driven by playwright-core (no browser download). */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const hasChromium = existsSync(CHROMIUM);
/** Appended to a browser suite's name, so a skipped suite says why. */
export const chromiumSkipReason = hasChromium ? '' : ` (skipped: no Chromium at ${CHROMIUM}; apt-get install chromium)`;

/** Headless, with the background traffic this machine's closed network would refuse turned off. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
}

/** Swagger UI's "Authorize": the key under the first scheme (bearerAuth). */
export async function authorizeSwaggerUi(page: Page, key: string): Promise<void> {
  await page.locator('.opblock').first().waitFor();
  await page.locator('button.authorize').first().click();
  await page.locator('.modal-ux input').first().fill(key);
  await page.locator('.modal-ux .auth-btn-wrapper button.authorize').first().click();
  await page.locator('.modal-ux button.btn-done').first().click();
}
