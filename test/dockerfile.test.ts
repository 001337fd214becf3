import { execFile, spawn } from 'node:child_process';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

/**
 * Docker cannot run here, so this replays the Dockerfile's production steps as written in it:
 * the build stage's compile, the runtime stage's production-only install, its CMD, and its
 * HEALTHCHECK command against the running server. A step that only works with dev dependencies,
 * or a CMD that points at nothing, fails here.
 */
const run = promisify(execFile);
const root = new URL('..', import.meta.url).pathname;

interface Stage {
  name: string;
  from: string;
  lines: string[];
}

function parseDockerfile(text: string): Stage[] {
  const logical = text.replace(/\\\n/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  const stages: Stage[] = [];
  for (const line of logical) {
    const from = /^FROM\s+(\S+)(?:\s+AS\s+(\S+))?/i.exec(line);
    if (from) stages.push({ from: from[1]!, name: from[2] ?? String(stages.length), lines: [] });
    else stages.at(-1)?.lines.push(line);
  }
  return stages;
}

const execForm = (line: string): string[] => JSON.parse(line.slice(line.indexOf('[')).trim()) as string[];
const shellForm = (line: string) => line.replace(/^RUN\s+/, '');

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

describe('Dockerfile', async () => {
  const stages = parseDockerfile(await readFile(join(root, 'Dockerfile'), 'utf8'));
  const runtime = stages.at(-1)!;
  const build = stages.find((s) => s.name === 'build')!;
  let dir: string | undefined;
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('is multi-stage on Node 24 LTS slim, runs as a non-root user, exposes the port and checks health', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    for (const stage of stages) expect(stage.from).toMatch(/^node:24(\.\d+)*-slim$/);
    expect(runtime.lines).toContain('USER node');
    expect(runtime.lines).toContain('EXPOSE 3000');
    expect(runtime.lines.some((l) => l.startsWith('HEALTHCHECK') && l.includes('/healthz'))).toBe(true);
    expect(runtime.lines).toContain('COPY --from=build /app/dist ./dist');
    expect(runtime.lines.filter((l) => l.startsWith('RUN')).map(shellForm).join(' ')).toContain('npm ci --omit=dev');
  });

  it('builds, installs production dependencies only, starts, passes its HEALTHCHECK and stops cleanly on SIGTERM', async () => {
    dir = await mkdtemp(join(tmpdir(), 'fal-gateway-image-'));
    // Build stage: the compile step it runs (`npm run build`), writing into the "image".
    expect(build.lines).toContain('RUN npm run build');
    await run('npx', ['tsc', '-p', 'tsconfig.build.json', '--outDir', join(dir, 'dist')], { cwd: root });
    // Runtime stage: its COPY of the manifests and its RUN lines, verbatim.
    for (const file of ['package.json', 'package-lock.json']) await cp(join(root, file), join(dir, file));
    // With engine-strict: the production dependencies must install on the Node running this
    // test too (the oldest supported one in CI), not only on the image's Node 24.
    for (const line of runtime.lines.filter((l) => l.startsWith('RUN'))) {
      await run('bash', ['-c', shellForm(line)], {
        cwd: dir,
        env: { ...process.env, NODE_ENV: 'production', npm_config_prefer_offline: 'true', npm_config_engine_strict: 'true' },
      });
    }
    await expect(readFile(join(dir, 'node_modules', 'vitest', 'package.json'))).rejects.toThrow();
    await expect(readFile(join(dir, 'node_modules', 'fastify', 'package.json'))).resolves.toBeDefined();

    const tenants = join(dir, 'tenants.json');
    await writeFile(tenants, JSON.stringify({ tenants: [] }));
    const port = await freePort();
    const env = { PATH: process.env.PATH, NODE_ENV: 'production', PORT: String(port), UPSTREAM_TOKEN: 'image-test', TENANTS_FILE: tenants, LOG_LEVEL: 'info' };
    const cmd = execForm(runtime.lines.find((l) => l.startsWith('CMD'))!);
    const health = execForm(runtime.lines.find((l) => l.startsWith('HEALTHCHECK'))!);
    /** The image's CMD, started with `serverEnv`, once it says it is ready. */
    const start = async (serverEnv: Record<string, string | undefined>) => {
      const server = spawn(cmd[0]!, cmd.slice(1), { cwd: dir, env: serverEnv });
      const started = { server, output: '', exited: new Promise<number | null>((resolve) => server.on('exit', (code) => resolve(code))) };
      server.stdout.on('data', (d) => (started.output += d));
      server.stderr.on('data', (d) => (started.output += d));
      const deadline = Date.now() + 15_000;
      while (!started.output.includes('fal gateway ready')) {
        if (Date.now() > deadline || server.exitCode !== null) {
          server.kill('SIGTERM');
          throw new Error(`server did not start:\n${started.output}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      return started;
    };
    const image = await start(env);
    try {
      await expect(run(health[0]!, health.slice(1), { cwd: dir, env })).resolves.toBeDefined();
      const docs = await fetch(`http://127.0.0.1:${port}/docs/`);
      expect(docs.status).toBe(200);
    } finally {
      image.server.kill('SIGTERM');
    }
    expect(await image.exited).toBe(0);
    expect(image.output).toContain('shutting down');
    expect(image.output).not.toContain('image-test');
    // Listening on one address only (HOST), the container is still healthy: the check asks there.
    const oneEnv = { ...env, PORT: String(await freePort()), HOST: '127.0.0.2' };
    const one = await start(oneEnv);
    try {
      await expect(run(health[0]!, health.slice(1), { cwd: dir, env: oneEnv })).resolves.toBeDefined();
    } finally {
      one.server.kill('SIGTERM');
    }
    expect(await one.exited).toBe(0);

    // Outside the image, the same install runs `npm start`. A supervisor signals npm's own pid:
    // the server must get the SIGTERM and shut down, not be left running without its parent.
    const npmEnv = { ...env, PORT: String(await freePort()) };
    const viaNpm = spawn('npm', ['start'], { cwd: dir, env: npmEnv, detached: true });
    let npmOutput = '';
    viaNpm.stdout.on('data', (d) => (npmOutput += d));
    viaNpm.stderr.on('data', (d) => (npmOutput += d));
    const npmExited = new Promise<void>((resolve) => viaNpm.on('exit', () => resolve()));
    const answers = () => fetch(`http://127.0.0.1:${npmEnv.PORT}/healthz`).then((r) => r.ok, () => false);
    try {
      await expect.poll(answers, { timeout: 15_000, interval: 100 }).toBe(true);
      viaNpm.kill('SIGTERM');
      await expect.poll(() => npmOutput.includes('shutting down'), { timeout: 10_000 }).toBe(true);
      await expect.poll(answers, { timeout: 15_000, interval: 100 }).toBe(false);
      await npmExited;
    } finally {
      // Whatever happened, nothing of it outlives the test.
      try {
        process.kill(-viaNpm.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    // The key tool, built, on the production install (tsx is not there).
    const { stdout } = await run('node', ['dist/cli/key.js', 'team-a'], { cwd: dir, env });
    expect(stdout).toMatch(/^New key for tenant "team-a"/);
    expect(stdout).toMatch(/"[0-9a-f]{64}"/);
    const usage = await run('node', ['dist/cli/key.js'], { cwd: dir, env }).catch((err: { stderr: string; code: number }) => err);
    expect(usage).toMatchObject({ code: 2, stderr: expect.stringMatching(/^usage: node dist\/cli\/key\.js <tenant-id>/) });
  }, 240_000);
});
