import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';
import { jsonSchemaTransform, jsonSchemaTransformObject } from 'fastify-type-provider-zod';
import { addErrorExamples } from '../http/openapi-examples.js';
import { tidyOpenApi } from '../http/openapi-tidy.js';
import { APP_ID, MODEL_ID } from '../model.js';

const DESCRIPTION = `
Self-hosted gateway in front of fal's queue for \`${MODEL_ID}\`.

**Authorize** with your tenant key (any one of the schemes), then expand an operation and press **Execute** (operations open ready to try):
1. \`POST /v1/image-to-image\` with the example body: you get a \`request_id\` and gateway URLs.
2. \`GET /v1/requests/{request_id}/status\` until it answers 200 \`COMPLETED\` (202 before).
3. \`GET /v1/requests/{request_id}\` for the images.

The *fal-compatible* routes are the same operations on fal's own queue paths
(\`/${MODEL_ID}\`, \`/${APP_ID}/requests/{request_id}...\`), so code written for fal or a reseller
works by changing only its base URL and key. Errors use fal's shape:
\`{"detail": "..." | [{"loc", "msg", "type"}], "error_type": "..."}\`.
`.trim();

/** Registers the OpenAPI document (built from the zod route schemas) before any route exists. */
export async function registerOpenApi(app: FastifyInstance, version: string): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'fal gateway', version, description: DESCRIPTION },
      tags: [
        { name: 'Image to image', description: 'The gateway\'s own routes.' },
        { name: 'fal-compatible', description: 'The same operations on fal\'s queue paths.' },
        { name: 'Browser access', description: 'Short-lived tokens for frontends that must not hold a key.' },
        { name: 'Operations', description: 'Health checks for load balancers and orchestrators, Prometheus metrics, and usage per tenant.' },
      ],
      components: {
        securitySchemes: {
          bearerAuth: { type: 'http', scheme: 'bearer', description: 'Your tenant key: `Authorization: Bearer <key>`.' },
          apiKeyHeader: { type: 'apiKey', in: 'header', name: 'x-api-key', description: 'Your tenant key in `x-api-key`.' },
          falKey: {
            type: 'apiKey',
            in: 'header',
            name: 'Authorization',
            description: 'fal\'s convention: enter `Key <your key>`, with the word Key. Authorize one scheme only: this one and bearerAuth both write the Authorization header.',
          },
        },
      },
    },
    transform: jsonSchemaTransform,
    transformObject: (document) =>
      addErrorExamples(tidyOpenApi(jsonSchemaTransformObject(document) as Record<string, unknown>)) as ReturnType<typeof jsonSchemaTransformObject>,
  });
}

/** Swagger UI at /docs and the raw document at /openapi.json. */
export async function registerDocsUi(app: FastifyInstance): Promise<void> {
  const SWAGGER_UI_INLINE_STYLE = "'sha256-RL3ie0nH+Lzz2YNqQN83mnU0J1ot4QL7b99vMdIX99w='";
  await app.register(swaggerUi, {
    routePrefix: '/docs',
    // Not persisted: Swagger UI would keep the tenant key in localStorage, in plain text, for good.
    uiConfig: { persistAuthorization: false, tryItOutEnabled: true, displayRequestDuration: true },
    // Swagger UI's own CSP (its scripts and styles from the gateway only), minus the upgrade to https, which would
    // break a gateway served over plain http on an internal network.
    staticCSP: true,
    transformStaticCSP: (header) =>
      header
        .replace(/\s*upgrade-insecure-requests;?/, '')
        // The one inline style Swagger UI's bundle applies, allowed by its hash (not 'unsafe-inline'),
        // so the page loads without a CSP error in the console.
        .replace(/style-src 'self' https:/, `style-src 'self' https: ${SWAGGER_UI_INLINE_STYLE}`),
  });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
}
