import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ConfigError, configSchema, describeConfig, parseConfig } from '../src/config.js';
import { dataUriBytes, largestFileFor } from '../src/tenants/input-policy.js';

const run = promisify(execFile);
const required = { UPSTREAM_TOKEN: 'secret-token', TENANTS_FILE: '/etc/tenants.json' };

/** Runs the real entry point with only `env` (and PATH), in `cwd`; it is expected to stop at start. */
function startServer(env: Record<string, string>, cwd: string | URL = new URL('..', import.meta.url)): Promise<{ code: number; stderr: string }> {
  // tsx by its own path: `--import tsx` resolves from the working directory, which may be elsewhere.
  const tsx = new URL('../node_modules/tsx/dist/loader.mjs', import.meta.url).href;
  return run(process.execPath, ['--import', tsx, fileURLToPath(new URL('../src/server.ts', import.meta.url))], {
    cwd,
    env: { PATH: process.env.PATH, ...env },
  }).then(
    () => ({ code: 0, stderr: '' }),
    (err: { code: number; stderr: string }) => err,
  );
}

describe('configuration', () => {
  it('applies the documented defaults', () => {
    const config = parseConfig(required);
    expect(config).toMatchObject({
      PORT: 3000,
      HOST: '0.0.0.0',
      LOG_LEVEL: 'info',
      UPSTREAM_BASE_URL: 'https://queue.fal.run',
      UPSTREAM_AUTH_SCHEME: 'Key',
      JOB_TTL_SECONDS: 86_400,
      BODY_LIMIT_BYTES: 10 * 1024 * 1024,
      DOCS_ENABLED: true,
    });
    expect(config.TRUST_PROXY).toBeUndefined();
    expect(config.PUBLIC_BASE_URL).toBeUndefined();
  });

  it('has no default for the upstream token or the tenants file', () => {
    const problems = (() => {
      try {
        parseConfig({});
      } catch (err) {
        return (err as ConfigError).problems;
      }
      return [];
    })();
    expect(problems).toEqual([
      expect.stringMatching(/^UPSTREAM_TOKEN: is required/),
      expect.stringMatching(/^TENANTS_FILE: is required/),
    ]);
  });

  it('reports one clear line per invalid variable', () => {
    try {
      parseConfig({ ...required, PORT: 'eighty', UPSTREAM_BASE_URL: 'ftp://x', UPSTREAM_AUTH_SCHEME: 'Basic', DOCS_ENABLED: 'maybe' });
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).problems).toEqual([
        'PORT: must be an integer from 0 to 65535',
        'UPSTREAM_BASE_URL: must be an http(s) URL',
        'UPSTREAM_AUTH_SCHEME: must be Key (fal) or Bearer (resellers)',
        'DOCS_ENABLED: must be true or false (1 or 0, yes or no also do)',
      ]);
    }
  });

  it("refuses a fal proxy path the gateway's own routes take", () => {
    for (const path of ['/healthz', '/v1/proxy', '/fal-ai/flux-lora/image-to-image', '/docs/proxy', '/metrics']) {
      expect(problemsOf({ FAL_PROXY_PATH: path }), path).toEqual([expect.stringMatching(/^FAL_PROXY_PATH: must not be a path the gateway serves itself \(\/v1, \/fal-ai, /)]);
    }
    for (const path of ['/api/fal/proxy', '/fal/proxy', '/v1proxy', '/healthz2']) expect(problemsOf({ FAL_PROXY_PATH: path }), path).toEqual([]);
  });

  it('reads a switch whatever its case, as its message says', () => {
    for (const [value, expected] of [['TRUE', true], ['False', false], ['1', true], ['no', false], [' yes ', true]] as const) {
      expect(parseConfig({ ...required, DOCS_ENABLED: value }).DOCS_ENABLED, value).toBe(expected);
    }
  });

  it.each([
    ['true', true],
    ['false', false],
    ['2', 2],
    ['10.0.0.0/8,127.0.0.1', '10.0.0.0/8,127.0.0.1'],
    ['loopback, fd00::/8, 10.0.0.0/255.0.0.0', 'loopback, fd00::/8, 10.0.0.0/255.0.0.0'],
  ])('parses TRUST_PROXY=%s', (value, expected) => {
    expect(parseConfig({ ...required, TRUST_PROXY: value }).TRUST_PROXY).toEqual(expected);
  });

  const problemsOf = (env: Record<string, string>): string[] => {
    try {
      parseConfig({ ...required, ...env });
      return [];
    } catch (err) {
      return (err as ConfigError).problems;
    }
  };

  it.each(['garbage', '10.0.0.0/33', '10.0.0.1,nginx', 'fd00::/129'])('reports TRUST_PROXY=%s as a line about the variable', (value) => {
    expect(problemsOf({ TRUST_PROXY: value })).toEqual([expect.stringMatching(/^TRUST_PROXY: must be true, false, a hop count, or a comma-separated list/)]);
  });

  it('reports a URL without a scheme as a line about its variable, with the other problems', () => {
    expect(problemsOf({ UPSTREAM_BASE_URL: 'queue.fal.run', PUBLIC_BASE_URL: 'gateway.example.com', PORT: 'x' })).toEqual([
      'PORT: must be an integer from 0 to 65535',
      'UPSTREAM_BASE_URL: must be an http(s) URL',
      'PUBLIC_BASE_URL: must be an http(s) URL',
    ]);
  });

  it('refuses a header credential with a line break or a space (a secret file read with its newline)', () => {
    for (const name of ['UPSTREAM_TOKEN', 'METRICS_TOKEN', 'ADMIN_TOKEN']) {
      const secret = `${'s'.repeat(40)}`;
      expect(problemsOf({ [name]: secret }), name).toEqual([]);
      // Characters no HTTP client can put in a header (undici refuses them) are refused too.
      for (const bad of [`${secret}\n`, `${secret}\r\n`, ` ${secret}`, `${secret.slice(0, 20)} ${secret.slice(20)}`, `${secret}\t`, `${secret}€`, `${secret}\u0085`, `${secret}é`]) {
        const problems = problemsOf({ [name]: bad });
        expect(problems, JSON.stringify(bad)).toEqual([expect.stringMatching(new RegExp(`^${name}: must be visible ASCII characters only`))]);
        // The message never repeats the secret.
        expect(problems.join('')).not.toContain(secret);
      }
    }
  });

  it('refuses a shutdown budget that does not outlast the drain delay', () => {
    expect(problemsOf({ SHUTDOWN_GRACE_MS: '1000' })).toEqual([
      'SHUTDOWN_GRACE_MS: must be larger than SHUTDOWN_DRAIN_DELAY_MS (2000): the shutdown budget covers the drain delay and then the requests in flight',
    ]);
    expect(problemsOf({ SHUTDOWN_GRACE_MS: '2000' })).toHaveLength(1);
    expect(problemsOf({ SHUTDOWN_GRACE_MS: '1000', SHUTDOWN_DRAIN_DELAY_MS: '0' })).toEqual([]);
    expect(problemsOf({ SHUTDOWN_GRACE_MS: '2001' })).toEqual([]);
  });

  it('takes a data URI cap the body limit cannot reach (the start warns of it: uploads.test)', () => {
    expect(dataUriBytes(10 * 1024 * 1024)).toBe(13_981_039);
    expect(largestFileFor(dataUriBytes(3 * 1000))).toBe(3 * 1000);
    expect(problemsOf({ IMAGE_DATA_URI_MAX_BYTES: '20000000' })).toEqual([]);
  });

  it('takes a REDIS_URL database only as a number', () => {
    for (const url of ['redis://h:6379', 'redis://h:6379/', 'redis://h:6379/0', 'rediss://:pw@h:6380/15', 'redis://h:6379?db=2']) expect(problemsOf({ REDIS_URL: url }), url).toEqual([]);
    for (const url of ['redis://h:6379/db1', 'redis://h:6379/0/x', 'redis://h:6379/-1', 'redis://h:6379?db=x', 'redis://h:6379/0?db=']) {
      expect(problemsOf({ REDIS_URL: url }), url).toEqual(['REDIS_URL: must name its database as a number, e.g. redis://host:6379/0']);
    }
    // Not a URL at all: one line, as for any other variable (not a crash).
    // Only digits are a number: Number() would read " " as 0 (a random port), "0x1086" as 4230.
    for (const value of [' ', '0x1086', '1e3', '-1', '30.5', '3000abc']) {
      expect(problemsOf({ PORT: value }), JSON.stringify(value)).toEqual(['PORT: must be an integer from 0 to 65535']);
    }
    expect(problemsOf({ STALE_JOB_CHECK_MS: ' ' })).toEqual([expect.stringMatching(/^STALE_JOB_CHECK_MS: must be an integer/)]);
    expect(parseConfig({ ...required, PORT: ' 8080 ' }).PORT).toBe(8080);
    expect(problemsOf({ REDIS_URL: 'not a url', PORT: 'x' })).toEqual(['PORT: must be an integer from 0 to 65535', 'REDIS_URL: must be a redis:// or rediss:// URL']);
  });

  it('trims a trailing slash from PUBLIC_BASE_URL and treats empty variables as unset', () => {
    expect(parseConfig({ ...required, PUBLIC_BASE_URL: 'https://gw.example.com/' }).PUBLIC_BASE_URL).toBe('https://gw.example.com');
    expect(parseConfig({ ...required, PORT: '' }).PORT).toBe(3000);
  });

  it('documents every variable in .env.example, with a comment, and nothing else', () => {
    const lines = readFileSync(new URL('../.env.example', import.meta.url), 'utf8').split('\n');
    const names = lines.flatMap((line, i) => {
      const match = /^([A-Z][A-Z0-9_]*)=/.exec(line);
      if (!match) return [];
      expect(lines[i - 1], `comment above ${match[1]}`).toMatch(/^# /);
      return [match[1]!];
    });
    expect(names.sort()).toEqual(Object.keys(configSchema.shape).sort());
  });

  it("lists every variable with its description in the README's configuration table", () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const rows = readme.split('\n');
    for (const v of describeConfig()) {
      const def = v.required ? '**required**' : v.default === undefined ? '(unset)' : `\`${String(v.default)}\``;
      const expected = `| \`${v.name}\` | ${def} | ${v.description} |`;
      expect(rows, `README.md needs this row in its configuration table:\n${expected}\n`).toContain(expected);
    }
  });

  it('stops the server at start with one line per problem and no stack trace', async () => {
    const result = await startServer({ PORT: 'x' });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('PORT: must be an integer');
    expect(result.stderr).toContain('UPSTREAM_TOKEN: is required');
    expect(result.stderr).not.toMatch(/\n\s+at /);
  });

  it('reads a .env in the working directory, the environment winning over it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'env-file-'));
    await writeFile(join(dir, '.env'), 'UPSTREAM_TOKEN=from-the-file\nTENANTS_FILE=/nonexistent/from-file.json\n');
    const result = await startServer({ TENANTS_FILE: '/nonexistent/from-env.json' }, dir);
    expect(result.code).toBe(1);
    // The token came from the file (no "is required"); the tenants file from the environment.
    expect(result.stderr).not.toContain('UPSTREAM_TOKEN');
    expect(result.stderr).toContain('Invalid tenants file /nonexistent/from-env.json');
  });

  it('stops the server at start when the tenants file is missing', async () => {
    const result = await startServer({ UPSTREAM_TOKEN: 'x', TENANTS_FILE: '/nonexistent/tenants.json' });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('Invalid tenants file /nonexistent/tenants.json');
    expect(result.stderr).toContain('cannot be read: ENOENT');
    expect(result.stderr).not.toMatch(/\n\s+at /);
  });
});
