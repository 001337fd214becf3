import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { json, SEED_REQUEST, startStack, type Stack } from './helpers.js';
import { freePort, redisAvailable, REDIS_URL, skipReason, uniquePrefix } from './support/redis.js';

/**
 * deploy/nginx.conf run by a real nginx in front of two real gateway replicas (the compose
 * service names replaced by their local ports). Debian's nginx-light; .ci/run installs it.
 */
const nginx = ['/usr/sbin/nginx', '/usr/bin/nginx'].find((path) => spawnSync(path, ['-v']).status === 0);

describe.skipIf(!nginx || !redisAvailable)(`deploy/nginx.conf in front of two replicas sharing Redis${nginx ? '' : ' (skipped: no nginx; apt-get install nginx-light)'}${skipReason}`, () => {
  let stack: Stack;
  let dir: string;
  let proxy: ChildProcess;
  let lb: string;
  beforeAll(async () => {
    // As in deploy/docker-compose.yml: TRUST_PROXY, one Redis, metrics without a token.
    const env = { TRUST_PROXY: '1', METRICS_ENABLED: 'true', REDIS_URL, REDIS_KEY_PREFIX: uniquePrefix() };
    stack = await startStack({ env });
    const { url: second } = await stack.addReplica();
    const port = await freePort();
    dir = await mkdtemp(join(tmpdir(), 'fal-gateway-nginx-'));
    const site = (await readFile(new URL('../deploy/nginx.conf', import.meta.url), 'utf8'))
      .replace('gateway-a:3000', new URL(stack.url).host)
      .replace('gateway-b:3000', new URL(second).host)
      .replace('listen 8080;', `listen 127.0.0.1:${port};`);
    await writeFile(join(dir, 'site.conf'), site);
    await writeFile(
      join(dir, 'nginx.conf'),
      `pid ${dir}/nginx.pid;\nerror_log ${dir}/error.log;\nevents {}\nhttp {\n  access_log off;\n  client_body_temp_path ${dir}/body;\n  proxy_temp_path ${dir}/proxy;\n  include ${dir}/site.conf;\n}\n`,
    );
    proxy = spawn(nginx!, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;'], { stdio: 'ignore' });
    lb = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 10_000;
    while ((await fetch(`${lb}/healthz`).catch(() => undefined))?.status !== 200) {
      if (Date.now() > deadline) throw new Error(`nginx did not start: ${await readFile(join(dir, 'error.log'), 'utf8').catch(() => '')}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }, 30_000);
  afterAll(async () => {
    proxy?.kill('SIGTERM');
    await stack?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('never lets /metrics through, however it is spelled', async () => {
    // The replicas serve it (no METRICS_TOKEN in the compose file)...
    expect((await fetch(`${stack.url}/metrics/`)).status).toBe(200);
    // ...the load balancer does not.
    for (const path of ['/metrics', '/metrics/', '/metrics?x=1', '//metrics', '/%6Detrics', '/./metrics']) {
      expect((await fetch(`${lb}${path}`)).status, path).toBe(404);
    }
  });

  it("serves the API through both replicas, with queue URLs on the load balancer's own address", async () => {
    const res = await fetch(`${lb}/v1/image-to-image`, { method: 'POST', headers: { ...json, ...stack.bearer('team-a') }, body: JSON.stringify(SEED_REQUEST) });
    expect(res.status).toBe(200);
    const job = (await res.json()) as { status_url: string };
    expect(job.status_url.startsWith(`${lb}/v1/requests/`)).toBe(true);
    // Round robin: both replicas answer in turn, and both know the job (ownership in Redis).
    for (let i = 0; i < 4; i++) expect([200, 202]).toContain((await fetch(job.status_url, { headers: stack.bearer('team-a') })).status);
  });
});
