import { buildApp, type AppOptions, type GatewayApp } from '../src/app.js';
import { parseConfig } from '../src/config.js';
import { newKey } from '../src/cli/key.js';
import { startSimulator, type Simulator, type SimulatorOptions } from '../src/simulator/index.js';
import { digestKey } from '../src/tenants/registry.js';
import type { Quota, RateLimitPolicy, Tenant } from '../src/tenants/tenants-file.js';

export { SEED_REQUEST } from '../src/model.js';

/** A long, distinctive upstream token, so a scan for it in responses and logs cannot miss. */
export const UPSTREAM_TOKEN = `sim-upstream-${'9f3a'.repeat(8)}`;

export interface TenantSpec {
  id: string;
  submit?: RateLimitPolicy;
  read?: RateLimitPolicy;
  imageHosts?: string[];
  allowedOrigins?: string[];
  quota?: Quota;
  maxConcurrentJobs?: number;
}

export interface Stack {
  sim: Simulator;
  app: GatewayApp;
  /** Gateway origin, e.g. http://127.0.0.1:PORT */
  url: string;
  /** Plain key of each tenant (the gateway only knows their digests). */
  keys: Record<string, string>;
  /** Every log line the gateway wrote, as emitted. */
  logs: string[];
  bearer(tenantId: string): Record<string, string>;
  /** Another gateway replica: same upstream, tenants and configuration (plus `env`), its own port. */
  addReplica(env?: Record<string, string>): Promise<{ app: GatewayApp; url: string; logs: string[] }>;
  close(): Promise<void>;
}

export interface StackOptions {
  tenants?: TenantSpec[];
  sim?: Partial<SimulatorOptions>;
  env?: Record<string, string>;
  app?: Partial<AppOptions>;
  /** Listen on a real port (default true); false for app.inject-only tests. */
  listen?: boolean;
}

const DEFAULT_TENANTS: TenantSpec[] = [{ id: 'team-a' }, { id: 'team-b' }];
const GENEROUS = { max: 10_000, timeWindowMs: 60_000 };

/** The simulated fal queue and a gateway in front of it, both on real ports. */
export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const sim = await startSimulator({ token: UPSTREAM_TOKEN, queueMs: 50, runMs: 100, ...options.sim });
  const keys: Record<string, string> = {};
  const tenants: Tenant[] = (options.tenants ?? DEFAULT_TENANTS).map((spec) => {
    keys[spec.id] = newKey();
    return {
      id: spec.id,
      keyDigests: [digestKey(keys[spec.id]!)],
      limits: {
        submit: spec.submit ?? GENEROUS,
        read: spec.read ?? GENEROUS,
        ...(spec.quota ? { quota: spec.quota } : {}),
        ...(spec.maxConcurrentJobs !== undefined ? { maxConcurrentJobs: spec.maxConcurrentJobs } : {}),
      },
      ...(spec.imageHosts ? { imageHosts: spec.imageHosts } : {}),
      ...(spec.allowedOrigins ? { allowedOrigins: spec.allowedOrigins } : {}),
    };
  });
  const env = { UPSTREAM_TOKEN, UPSTREAM_BASE_URL: sim.url, TENANTS_FILE: 'unused-in-tests', LOG_LEVEL: 'info', ...options.env };
  const logs: string[] = [];
  const app = await buildApp({ config: parseConfig(env), tenants, logStream: { write: (line) => void logs.push(line) }, ...options.app });
  const url = options.listen === false ? '' : await app.listen({ port: 0, host: '127.0.0.1' });
  const replicas: GatewayApp[] = [];
  return {
    sim,
    app,
    url,
    keys,
    logs,
    bearer: (id) => ({ authorization: `Bearer ${keys[id]}` }),
    addReplica: async (extra = {}) => {
      const replicaLogs: string[] = [];
      const replica = await buildApp({ config: parseConfig({ ...env, ...extra }), tenants, logStream: { write: (line) => void replicaLogs.push(line) } });
      replicas.push(replica);
      return { app: replica, url: await replica.listen({ port: 0, host: '127.0.0.1' }), logs: replicaLogs };
    },
    close: async () => {
      await Promise.all([app, ...replicas].map((a) => a.close()));
      await sim.close();
    },
  };
}

export const json = { 'content-type': 'application/json' };

/** Polls a status URL until COMPLETED (bounded). */
export async function waitForCompletion(statusUrl: string, headers: Record<string, string>, timeoutMs = 5_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const res = await fetch(statusUrl, { headers });
    const body = (await res.json()) as { status?: string };
    if (body.status === 'COMPLETED') return { res, body };
    if (Date.now() > deadline) throw new Error(`job not completed after ${timeoutMs} ms: ${JSON.stringify(body)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Upstream calls the simulator received, excluding image downloads. */
export function upstreamCalls(stack: Stack) {
  return stack.sim.requests.filter((r) => !r.path.startsWith('/files/'));
}
