import { buildApp } from './app.js';
import { parseConfig } from './config.js';

/**
 * The OpenAPI document exactly as the gateway serves it at /openapi.json, rendered as the
 * committed files `openapi/openapi.json` and `openapi/openapi.yaml`. The placeholders never
 * reach the document: it depends only on the routes and their schemas.
 */
export async function renderOpenApi(): Promise<{ json: string; yaml: string }> {
  const config = parseConfig({ UPSTREAM_TOKEN: 'document-only', TENANTS_FILE: 'document-only', LOG_LEVEL: 'silent' });
  const app = await buildApp({ config, tenants: [], logger: false });
  try {
    await app.ready();
    return { json: `${JSON.stringify(app.swagger(), null, 2)}\n`, yaml: app.swagger({ yaml: true }) };
  } finally {
    await app.close();
  }
}
