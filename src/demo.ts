import { randomBytes } from 'node:crypto';
import { buildApp } from './app.js';
import { newKey } from './cli/key.js';
import { parseConfig } from './config.js';
import { SEED_REQUEST } from './model.js';
import { startSimulator } from './simulator/index.js';
import { digestKey } from './tenants/registry.js';

/**
 * `npm run demo`: the gateway in front of its built-in simulated fal queue, with one demo
 * tenant. Nothing leaves the machine. The simulator's token is random and never shown: the
 * caller only ever holds the demo tenant's key, exactly as in production.
 */
const env = process.env;
const upstreamToken = randomBytes(24).toString('hex');
const demoKey = env.DEMO_KEY ?? newKey();
/**
 * Pages of a local dev server may call the demo (fal's client in proxy mode, say): the usual
 * ports of Vite, Next.js and Create React App by default, or DEMO_ALLOWED_ORIGINS (comma-separated).
 */
const DEFAULT_DEV_ORIGINS = ['http://localhost:5173', 'http://127.0.0.1:5173', 'http://localhost:3001', 'http://localhost:8080'];
const allowedOrigins = env.DEMO_ALLOWED_ORIGINS
  ? env.DEMO_ALLOWED_ORIGINS.split(',').map((origin) => origin.trim()).filter((origin) => origin !== '')
  : DEFAULT_DEV_ORIGINS;

const sim = await startSimulator({
  token: upstreamToken,
  queueMs: Number(env.DEMO_QUEUE_MS ?? 1_500),
  runMs: Number(env.DEMO_RUN_MS ?? 3_000),
});
const config = parseConfig({
  PORT: env.PORT ?? '3000',
  HOST: env.HOST ?? '127.0.0.1',
  LOG_LEVEL: env.LOG_LEVEL ?? 'info',
  UPSTREAM_BASE_URL: sim.url,
  UPSTREAM_TOKEN: upstreamToken,
  TENANTS_FILE: '(demo: built in)',
  PUBLIC_BASE_URL: env.PUBLIC_BASE_URL,
  // Browser tokens work in the demo too (POST /v1/tokens); the secret lives as long as the process.
  TOKEN_SECRET: randomBytes(32).toString('base64url'),
});
const app = await buildApp({
  config,
  tenants: [
    {
      id: 'demo',
      keyDigests: [digestKey(demoKey)],
      limits: { submit: { max: 30, timeWindowMs: 60_000 }, read: { max: 1_200, timeWindowMs: 60_000 } },
      allowedOrigins,
    },
  ],
});

const shutdown = async () => {
  app.startDraining();
  await app.close();
  await sim.close();
  process.exit(0);
};
process.once('SIGINT', shutdown);
process.once('SIGTERM', shutdown);

const address = await app.listen({ port: config.PORT, host: config.HOST });
const base = address.replace('0.0.0.0', '127.0.0.1');
process.stdout.write(`
  fal gateway demo: the gateway in front of a simulated fal queue (no network needed)

  Demo tenant key:  ${demoKey}
  Swagger UI:       ${base}/docs      ("Authorize" with the key, open an operation, "Execute")
  Playground:       ${base}/playground  (paste the key, upload an image, watch it run)
  OpenAPI:          ${base}/openapi.json
  Metrics:          ${base}/metrics
  Usage:            curl -s ${base}/v1/usage -H 'Authorization: Bearer ${demoKey}'
  Pages allowed:    ${allowedOrigins.join(', ')}  (DEMO_ALLOWED_ORIGINS; fal's client: proxyUrl ${base}/api/fal/proxy)

  Submit the seed request:

    curl -s ${base}/v1/image-to-image \\
      -H 'Authorization: Bearer ${demoKey}' \\
      -H 'Content-Type: application/json' \\
      -d '${JSON.stringify(SEED_REQUEST)}'

  then follow the status_url and response_url it returns with the same Authorization header.
  Ctrl+C stops both.

`);
