import { join } from 'node:path';
import { MODEL_ID, SEED_REQUEST } from '../src/model.js';
import type { LoadSpec } from './bench-load.js';

/** What `npm run bench` and `npm run bench:ab` share: the gateway target's setup and the submit load. */

export const PUBLIC_BASE_URL = 'https://gateway.bench.example';
export const TENANT_ID = 'bench-tenant';
export const SUBMIT_PATH = `/${MODEL_ID}`;
/** Any single load run is stopped after this long, whatever it has done. */
export const RUN_DEADLINE_MS = 600_000;

/** The environment of a gateway target (scripts/bench-gateway.ts), its files under `work`, named after `name`. */
export function gatewayEnv(upstream: { url: string; token: string }, work: string, tenantKey: string, name = 'gateway'): Record<string, string> {
  return {
    BENCH_UPSTREAM_URL: upstream.url,
    BENCH_UPSTREAM_TOKEN: upstream.token,
    BENCH_TENANT_ID: TENANT_ID,
    BENCH_TENANT_KEY: tenantKey,
    BENCH_LOG_FILE: join(work, `${name}.log`),
    BENCH_TENANTS_FILE: join(work, `${name}-tenants.json`),
    BENCH_PUBLIC_BASE_URL: PUBLIC_BASE_URL,
  };
}

/** `amount` submits of the seed request; an answer counts when it names a job and points `status_url` at `statusUrlBase`. */
export function submitLoad(url: string, headers: Record<string, string>, statusUrlBase: string, amount: number, connections: number): LoadSpec {
  const marker = `"status_url":"${statusUrlBase}`;
  return {
    url,
    connections,
    amount,
    method: 'POST',
    headers: { ...headers, 'content-type': 'application/json' },
    body: JSON.stringify(SEED_REQUEST),
    paths: [SUBMIT_PATH],
    accept: (body) => body.includes('"request_id"') && body.includes(marker),
    deadlineMs: RUN_DEADLINE_MS,
  };
}
