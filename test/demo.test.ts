import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newKey } from '../src/cli/key.js';
import { json, SEED_REQUEST } from './helpers.js';

/** `npm run demo` as a user starts it: the real program, its banner, its pages and its demo tenant. */
describe('npm run demo', () => {
  const key = newKey();
  const output = { stdout: '', stderr: '' };
  let demo: ReturnType<typeof spawn>;
  let base: string;
  let exited: Promise<number | null>;

  beforeAll(async () => {
    demo = spawn(process.execPath, ['--import', 'tsx', 'src/demo.ts'], {
      cwd: new URL('..', import.meta.url),
      env: { PATH: process.env.PATH, PORT: '0', DEMO_KEY: key, DEMO_QUEUE_MS: '50', DEMO_RUN_MS: '100', DEMO_ALLOWED_ORIGINS: 'http://localhost:5173/, http://dev.example:8080' },
    });
    demo.stdout!.on('data', (d) => (output.stdout += d));
    demo.stderr!.on('data', (d) => (output.stderr += d));
    exited = new Promise((resolve) => demo.on('exit', (code) => resolve(code)));
    const deadline = Date.now() + 20_000;
    for (;;) {
      const found = /Swagger UI:\s+(http:\/\/\S+)\/docs/.exec(output.stdout);
      if (found) {
        base = found[1]!;
        break;
      }
      if (Date.now() > deadline || demo.exitCode !== null) throw new Error(`the demo did not start:\n${output.stdout}${output.stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }, 30_000);
  afterAll(() => {
    demo?.kill('SIGKILL');
  });

  it('prints the demo key and the origins its pages may call it from (a trailing slash taken as the origin)', () => {
    expect(output.stdout).toContain(`Demo tenant key:  ${key}`);
    expect(output.stdout).toContain('Pages allowed:    http://localhost:5173, http://dev.example:8080');
  });

  it('serves the docs and runs a job for the demo key against the simulated queue', async () => {
    expect((await fetch(`${base}/docs`)).status).toBe(200);
    const submitted = await fetch(`${base}/v1/image-to-image`, { method: 'POST', headers: { ...json, authorization: `Bearer ${key}` }, body: JSON.stringify(SEED_REQUEST) });
    expect(submitted.status).toBe(200);
    const job = (await submitted.json()) as { status_url: string; response_url: string };
    const deadline = Date.now() + 10_000;
    for (;;) {
      const status = (await (await fetch(job.status_url, { headers: { authorization: `Bearer ${key}` } })).json()) as { status: string };
      if (status.status === 'COMPLETED') break;
      if (Date.now() > deadline) throw new Error(`job not completed: ${JSON.stringify(status)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const result = (await (await fetch(job.response_url, { headers: { authorization: `Bearer ${key}` } })).json()) as { images: unknown[] };
    expect(result.images).toHaveLength(1);
  });

  it("lets a local dev server's page call it (fal's client in proxy mode), and no other page", async () => {
    const preflight = (origin: string) =>
      fetch(`${base}/api/fal/proxy`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type, x-fal-target-url' } });
    const allowed = await preflight('http://dev.example:8080');
    expect(allowed.status).toBe(204);
    expect(allowed.headers.get('access-control-allow-origin')).toBe('http://dev.example:8080');
    expect((await preflight('http://localhost:5173')).status).toBe(204);
    expect((await preflight('https://elsewhere.example')).status).toBe(403);
  });

  it('stops on SIGTERM, exit code 0', async () => {
    demo.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(output.stderr).toBe('');
  });
});

describe('npm run demo with settings it cannot use', () => {
  it('refuses to start, naming each one and what it takes', async () => {
    const demo = spawn(process.execPath, ['--import', 'tsx', 'src/demo.ts'], {
      cwd: new URL('..', import.meta.url),
      env: { PATH: process.env.PATH, PORT: '0', DEMO_QUEUE_MS: '2s', DEMO_RUN_MS: '99999999999', DEMO_ALLOWED_ORIGINS: 'http://localhost:5173, localhost:3001', DEMO_ACCOUNT_CONCURRENCY: '0' },
    });
    let stdout = '';
    let stderr = '';
    demo.stdout.on('data', (d) => (stdout += d));
    demo.stderr.on('data', (d) => (stderr += d));
    const code = await new Promise<number | null>((resolve) => demo.on('exit', resolve));
    expect(code).toBe(1);
    expect(stdout).toBe('');
    expect(stderr).toContain('DEMO_QUEUE_MS: must be a whole number of milliseconds');
    expect(stderr).toContain('DEMO_RUN_MS: must be at most 2147483647');
    expect(stderr).toContain('DEMO_ALLOWED_ORIGINS: "localhost:3001" is not an origin such as http://localhost:5173');
    expect(stderr).toContain('DEMO_ACCOUNT_CONCURRENCY: must be a whole number of jobs from 1 to 999999');
  }, 30_000);
});
