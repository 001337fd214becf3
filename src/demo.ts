import { randomBytes } from 'node:crypto';
import { z } from 'zod';
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

/** An origin as a browser sends it; `http://localhost:5173/` (a URL's trailing slash) is taken as its origin. */
const demoOrigin = z.string().transform((value, ctx) => {
  try {
    const url = new URL(value);
    const bare = url.username === '' && url.password === '' && url.pathname === '/' && url.search === '' && url.hash === '';
    if ((url.protocol === 'http:' || url.protocol === 'https:') && bare) return url.origin;
  } catch {
    // Reported below.
  }
  ctx.addIssue({ code: 'custom', message: `"${value}" is not an origin such as http://localhost:5173 (scheme, host and port)` });
  return z.NEVER;
});
const milliseconds = (fallback: number) =>
  z
    .string()
    .regex(/^\d+$/, 'must be a whole number of milliseconds, such as 1500')
    .transform(Number)
    // A longer timer fires at once (Node's timers hold 32 bits): 24 days is plenty for a demo.
    .refine((ms) => ms <= 2_147_483_647, 'must be at most 2147483647 (about 24 days)')
    .default(fallback);
const DemoEnv = z.object({
  DEMO_QUEUE_MS: milliseconds(1_500),
  DEMO_RUN_MS: milliseconds(3_000),
  DEMO_ACCOUNT_CONCURRENCY: z
    .string()
    .regex(/^[1-9]\d{0,5}$/, 'must be a whole number of jobs from 1 to 999999, such as 2')
    .transform(Number)
    .optional(),
  DEMO_ALLOWED_ORIGINS: z
    .string()
    .transform((list) => list.split(',').map((origin) => origin.trim()).filter((origin) => origin !== ''))
    .pipe(z.array(demoOrigin))
    .optional(),
});
const demoEnv = DemoEnv.safeParse(env);
if (!demoEnv.success) {
  const lines = demoEnv.error.issues.map((issue) => `  ${issue.path[0] === undefined ? '' : `${String(issue.path[0])}: `}${issue.message}`);
  process.stderr.write(`demo: cannot start:\n${lines.join('\n')}\n`);
  process.exit(1);
}
const allowedOrigins = demoEnv.data.DEMO_ALLOWED_ORIGINS?.length ? demoEnv.data.DEMO_ALLOWED_ORIGINS : DEFAULT_DEV_ORIGINS;

const sim = await startSimulator({
  token: upstreamToken,
  queueMs: demoEnv.data.DEMO_QUEUE_MS,
  runMs: demoEnv.data.DEMO_RUN_MS,
  // fal's per-account concurrency limit, to see its 429 passed on (off unless asked for).
  ...(demoEnv.data.DEMO_ACCOUNT_CONCURRENCY !== undefined ? { accountConcurrency: demoEnv.data.DEMO_ACCOUNT_CONCURRENCY } : {}),
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
