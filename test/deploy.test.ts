import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { parseTenants } from '../src/tenants/tenants-file.js';

/** Docker Compose cannot run here: check that the example speaks the gateway's real configuration. */
const read = (path: string) => readFileSync(new URL(`../deploy/${path}`, import.meta.url), 'utf8');

describe('deploy/docker-compose.yml', () => {
  const compose = parse(read('docker-compose.yml')) as {
    services: Record<string, { environment?: Record<string, string>; build?: string; image?: string; volumes?: string[]; stop_grace_period?: string }>;
  };

  it('runs two gateway replicas sharing one Redis, with a configuration the gateway accepts', () => {
    const gateways = Object.entries(compose.services).filter(([name]) => name.startsWith('gateway'));
    expect(gateways).toHaveLength(2);
    for (const [, service] of gateways) {
      const env = { ...service.environment, UPSTREAM_TOKEN: 'placeholder' };
      const config = parseConfig(env);
      expect(config.REDIS_URL).toBe('redis://redis:6379/0');
      expect(config.NODE_ENV).toBe('production');
      expect(service.build).toBe('..');
      // One image, named, that both replicas run.
      expect(service.image).toBe('fal-gateway:local');
    }
    expect(compose.services.redis).toBeDefined();
    // Docker must not kill a replica before its own shutdown budget has run out.
    for (const [, service] of gateways) {
      const budget = parseConfig({ ...service.environment, UPSTREAM_TOKEN: 'placeholder' }).SHUTDOWN_GRACE_MS;
      expect(Number(/^(\d+)s$/.exec(service.stop_grace_period ?? '')?.[1]) * 1000).toBeGreaterThan(budget);
    }
    expect(read('nginx.conf')).toMatch(/server gateway-a:3000[\s\S]*server gateway-b:3000/);
  });

  it('keeps /metrics off the load balancer: it is open without METRICS_TOKEN, and per replica', () => {
    const gateways = Object.entries(compose.services).filter(([name]) => name.startsWith('gateway'));
    for (const [, service] of gateways) expect(service.environment?.METRICS_TOKEN).toBeUndefined();
    expect(read('nginx.conf')).toMatch(/location ~ \^\/metrics\(\/\|\$\) \{\s*return 404;\s*\}/);
  });

  it('lets nginx wait longer than the replicas wait for fal, so a slow submit ends in the gateway\'s own answer', () => {
    // nginx's 504 would be retried by fal's clients (a second paid job); the gateway's own
    // deadline answers 500 submit_outcome_unknown, which they do not retry.
    const gateways = Object.entries(compose.services).filter(([name]) => name.startsWith('gateway'));
    const readTimeouts = [...read('nginx.conf').matchAll(/proxy_read_timeout (\d+)s;/g)].map((m) => Number(m[1]) * 1000);
    expect(readTimeouts.length).toBeGreaterThan(0);
    for (const [, service] of gateways) {
      const deadline = parseConfig({ ...service.environment, UPSTREAM_TOKEN: 'placeholder' }).UPSTREAM_REQUEST_TIMEOUT_MS;
      for (const timeout of readTimeouts) expect(timeout).toBeGreaterThan(deadline);
    }
  });

  it('mounts an example tenants file the gateway accepts', () => {
    expect(parseTenants(JSON.parse(read('tenants.example.json')))).toHaveLength(1);
  });
});
