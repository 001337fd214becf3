import { writeFile } from 'node:fs/promises';
import { gatewayModule as dist } from './bench-dist.js';
import { serveTarget } from './bench-ipc.js';

const { buildApp } = (await import(dist('app'))) as typeof import('../src/app.js');
const { parseConfig } = (await import(dist('config'))) as typeof import('../src/config.js');
const { digestKey } = (await import(dist('tenants/registry'))) as typeof import('../src/tenants/registry.js');
const { createLogDestination } = (await import(dist('log-destination'))) as typeof import('../src/log-destination.js');
const { loadTenantsFile } = (await import(dist('tenants/tenants-file'))) as typeof import('../src/tenants/tenants-file.js');

/**
 * The gateway as the benchmark measures it, in a process of its own, built as it ships: the real configuration
 * (parseConfig) and tenants file (loadTenantsFile), tenant keys, validation, per-tenant rate
 * limits set too high to trigger, image host checks, rewritten queue URLs, the in-memory job
 * store, browser tokens, docs, and every request logged at info to a file, the way pino writes
 * to stdout in production (batched, asynchronously: see src/log-destination.ts).
 *
 * Environment from the bench: BENCH_UPSTREAM_URL, BENCH_UPSTREAM_TOKEN, BENCH_TENANT_ID,
 * BENCH_TENANT_KEY, BENCH_TENANTS_FILE (written here), BENCH_LOG_FILE, BENCH_PUBLIC_BASE_URL,
 * and optionally BENCH_DIST.
 */

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

/** Limits that a benchmark never reaches, so every request pays for the check and none is refused. */
const NEVER = { max: 1_000_000_000, timeWindow: '1 minute' };

await serveTarget(async () => {
  const tenantsFile = required('BENCH_TENANTS_FILE');
  await writeFile(
    tenantsFile,
    JSON.stringify({
      tenants: [
        {
          id: required('BENCH_TENANT_ID'),
          keys: [digestKey(required('BENCH_TENANT_KEY'))],
          limits: { submit: NEVER, read: NEVER },
          imageHosts: ['storage.googleapis.com', '*.fal.media'],
          allowedOrigins: ['https://app.example.com'],
        },
        { id: 'other-team', keys: [digestKey('another-tenant-key-never-used-by-the-bench')] },
      ],
    }),
  );
  const config = parseConfig({
    NODE_ENV: 'production',
    HOST: '127.0.0.1',
    PORT: '0',
    LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'info',
    UPSTREAM_BASE_URL: required('BENCH_UPSTREAM_URL'),
    UPSTREAM_TOKEN: required('BENCH_UPSTREAM_TOKEN'),
    TENANTS_FILE: tenantsFile,
    PUBLIC_BASE_URL: required('BENCH_PUBLIC_BASE_URL'),
    TOKEN_SECRET: `bench-token-secret-${'x'.repeat(32)}`,
    DOCS_ENABLED: 'true',
    TENANTS_WATCH: 'false',
  });
  const tenants = await loadTenantsFile(config.TENANTS_FILE);
  const { stream: logStream } = createLogDestination(required('BENCH_LOG_FILE'));
  const app = await buildApp({ config, tenants, logStream });
  process.once('SIGTERM', () => {
    void app.close().finally(() => process.exit(0));
  });
  return app.listen({ port: config.PORT, host: config.HOST });
});
