import { randomUUID } from 'node:crypto';
import { parseConfig } from '../src/config.js';
import { MemoryJobStore } from '../src/jobs/memory-job-store.js';
import { SEED_REQUEST } from '../src/model.js';
import { collectGarbage, serveMemoryProbe } from './bench-ipc.js';

/**
 * What one tracked job costs the gateway in memory. The job store is built exactly as buildApp
 * builds it without REDIS_URL (TTL and bound from the configuration's defaults), then filled
 * with BENCH_MEMORY_JOBS jobs under fresh uuid ids, all owned by one tenant whose id string is
 * shared, as the tenant registry shares it. Heap and RSS are read after full collections.
 * Runs in its own process with --expose-gc, started by the bench.
 *
 * Each id is taken from a parsed upstream answer, as submit takes it: a flat string of 36
 * bytes. (randomUUID() itself returns a string built of pieces, several times that size, which
 * the gateway never stores.)
 */

await serveMemoryProbe(async () => {
  const jobs = Number(process.env.BENCH_MEMORY_JOBS ?? 100_000);
  const tenantId = process.env.BENCH_TENANT_ID ?? 'bench-tenant';
  const config = parseConfig({ UPSTREAM_TOKEN: 'unused-by-the-probe', TENANTS_FILE: 'unused-by-the-probe' });
  if (jobs > config.JOB_STORE_MAX_ENTRIES) throw new Error(`BENCH_MEMORY_JOBS exceeds JOB_STORE_MAX_ENTRIES (${config.JOB_STORE_MAX_ENTRIES})`);
  const store = new MemoryJobStore({ ttlMs: config.JOB_TTL_SECONDS * 1000, maxEntries: config.JOB_STORE_MAX_ENTRIES });

  collectGarbage();
  const before = process.memoryUsage();
  for (let i = 0; i < jobs; i++) {
    const answer = JSON.parse(`{"status":"IN_QUEUE","request_id":"${randomUUID()}"}`) as { request_id: string };
    await store.record(answer.request_id, tenantId, SEED_REQUEST.num_images);
  }
  collectGarbage();
  const after = process.memoryUsage();
  if (store.size !== jobs) throw new Error(`the store holds ${store.size} jobs, not ${jobs}`);
  // Still referenced here, so the collections above could not take the store away.
  const kept = store.size;
  return {
    jobs: kept,
    heapBefore: before.heapUsed,
    heapAfter: after.heapUsed,
    rssBefore: before.rss,
    rssAfter: after.rss,
    measured: ['the job store entry and its place in the check schedule (MemoryJobStore, keyed by request id)'],
  };
});
