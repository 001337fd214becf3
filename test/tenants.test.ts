import { execFile } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { newKey } from '../src/cli/key.js';
import { presentedKey } from '../src/tenants/auth.js';
import { digestKey, TenantRegistry } from '../src/tenants/registry.js';
import { DEFAULT_LIMITS, jsonErrorAt, loadTenantsFile, parseTenants, TenantsFileError } from '../src/tenants/tenants-file.js';

const run = promisify(execFile);
const digest = (n: number) => n.toString(16).padStart(64, '0');

async function tempFile(content: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'tenants-'));
  const file = join(dir, 'tenants.json');
  await writeFile(file, content);
  return file;
}

function problemsOf(json: unknown): string[] {
  try {
    parseTenants(json);
  } catch (err) {
    return (err as TenantsFileError).problems;
  }
  return [];
}

describe('tenants file', () => {
  it('reads the documented shape, with limits given in ms or as durations', async () => {
    const file = await tempFile(
      JSON.stringify({
        tenants: [
          {
            id: 'team-a',
            keys: [digest(1).toUpperCase()],
            limits: { submit: { max: 10, timeWindow: '1 minute' }, read: { max: 600, timeWindow: 60000 } },
          },
        ],
      }),
    );
    expect(await loadTenantsFile(file)).toEqual([
      {
        id: 'team-a',
        keyDigests: [digest(1)],
        limits: { submit: { max: 10, timeWindowMs: 60_000 }, read: { max: 600, timeWindowMs: 60_000 } },
      },
    ]);
  });

  it('applies file-wide defaults, then built-in defaults, where limits are left out', () => {
    const [a, b] = parseTenants({
      defaults: { limits: { submit: { max: 5, timeWindow: '30s' } } },
      tenants: [
        { id: 'a', keys: [digest(1)] },
        { id: 'b', keys: [digest(2)], limits: { read: { max: 7, timeWindow: '1 hour' } } },
      ],
    });
    expect(a!.limits).toEqual({ submit: { max: 5, timeWindowMs: 30_000 }, read: DEFAULT_LIMITS.read });
    expect(b!.limits).toEqual({ submit: { max: 5, timeWindowMs: 30_000 }, read: { max: 7, timeWindowMs: 3_600_000 } });
  });

  it.each([
    ['a plain key instead of its digest', { tenants: [{ id: 'a', keys: ['fgw_plainkey'] }] }, /tenants\.0\.keys\.0: must be the SHA-256 hex digest/],
    ['a duplicate tenant id', { tenants: [{ id: 'a', keys: [] }, { id: 'a', keys: [] }] }, /tenants\.1\.id: duplicate tenant id "a"/],
    ['one key for two tenants', { tenants: [{ id: 'a', keys: [digest(1)] }, { id: 'b', keys: [digest(1)] }] }, /already listed for tenant "a"/],
    ['a bad duration', { tenants: [{ id: 'a', keys: [], limits: { submit: { max: 1, timeWindow: 'soon' } } }] }, /"soon" is not a duration/],
    ['a duration in "M" (a minute to the parser, a month to some)', { tenants: [{ id: 'a', keys: [], limits: { submit: { max: 1, timeWindow: '1M' } } }] }, /"1M" is ambiguous/],
    ['a window under a millisecond (a window of 0)', { tenants: [{ id: 'a', keys: [], limits: { submit: { max: 1, timeWindow: '0.5ms' } } }] }, /"0\.5ms" is not a duration/],
    ['a negative max', { tenants: [{ id: 'a', keys: [], limits: { read: { max: -1, timeWindow: 1000 } } }] }, /limits\.read\.max/],
    ['an unknown field', { tenants: [{ id: 'a', keys: [], key: 'x' }] }, /Unrecognized key/],
    ['a bad id', { tenants: [{ id: 'team a!', keys: [] }] }, /tenants\.0\.id: must be 1-64 characters/],
    ['no tenants list', {}, /tenants:/],
  ])('rejects %s with a clear message', (_name, json, message) => {
    expect(problemsOf(json).join('\n')).toMatch(message);
  });

  it('rejects unreadable and non-JSON files with the file name', async () => {
    await expect(loadTenantsFile('/nonexistent/t.json')).rejects.toThrow(/Invalid tenants file \/nonexistent\/t\.json:\n {2}- cannot be read: ENOENT, there is no file at \/nonexistent\/t\.json$/);
    // A relative path says where it was looked for.
    await expect(loadTenantsFile('missing-tenants.json')).rejects.toThrow(
      `cannot be read: ENOENT, there is no file at ${resolve('missing-tenants.json')} (missing-tenants.json from the working directory ${process.cwd()})`,
    );
    await expect(loadTenantsFile(tmpdir())).rejects.toThrow(`cannot be read: EISDIR, ${tmpdir()} is a directory; name the file in it`);
    const file = await tempFile('{"tenants": [');
    await expect(loadTenantsFile(file)).rejects.toThrow(/is not valid JSON/);
  });

  it('says where the JSON breaks without quoting the file, which may hold a pasted key', async () => {
    const key = newKey();
    const cases: Array<[string, string]> = [
      // A plain key pasted without quotes: V8's own message would quote the text around it.
      [`{"tenants": [\n  {"id": "a", "keys": ["${'a'.repeat(64)}", ${key}]}\n]}`, 'unexpected character (line 2, column '],
      [`{"tenants": [\n  {"id": "a", "keys": ["${key}",]}\n]}`, '(line 2, column '],
      [`{"tenants": [{"id": "a", "keys": ["${key}"`, 'is not valid JSON: '],
    ];
    for (const [text, expected] of cases) {
      const file = await tempFile(text);
      const error = await loadTenantsFile(file).then(
        () => undefined,
        (err: Error) => err,
      );
      expect(error?.message).toContain(expected);
      expect(error?.message).not.toContain(key.slice(0, 6));
      expect(error?.message).not.toContain(key.slice(-6));
    }
    // The column is the pasted key's first character.
    const pasted = `{"tenants": [{"id": "a", "keys": [${key}]}]}`;
    expect(jsonErrorAt(pasted)).toBe(`unexpected character (line 1, column ${pasted.indexOf(key) + 1})`);
  });
});

describe('tenant registry and keys', () => {
  const keyA = newKey();
  const registry = new TenantRegistry(
    parseTenants({ tenants: [{ id: 'a', keys: [digestKey(keyA)] }, { id: 'b', keys: [digestKey(newKey())] }] }),
  );

  it('finds a tenant by its key and nothing by another string', () => {
    expect(registry.findByKey(keyA)?.id).toBe('a');
    expect(registry.findByKey(`${keyA}x`)).toBeUndefined();
    expect(registry.findByKey(digestKey(keyA))).toBeUndefined();
    expect(registry.findByKey('')).toBeUndefined();
  });

  it('makes long random keys', () => {
    const keys = new Set(Array.from({ length: 100 }, newKey));
    expect(keys.size).toBe(100);
    for (const key of keys) expect(key).toMatch(/^fgw_[A-Za-z0-9_-]{43}$/);
  });

  it.each([
    [{ authorization: 'Bearer k1' }, 'k1'],
    [{ authorization: 'Key k2' }, 'k2'],
    [{ authorization: 'bearer   k3 ' }, 'k3'],
    [{ 'x-api-key': ' k4 ' }, 'k4'],
    [{ authorization: 'Basic abc', 'x-api-key': 'k5' }, 'k5'],
    [{ authorization: 'Bearer a b' }, undefined],
    [{ authorization: 'k6' }, undefined],
    [{}, undefined],
  ])('reads the key from %j', (headers, expected) => {
    expect(presentedKey(headers)).toBe(expected);
  });

  it('npm run key prints a key whose digest it prints too', async () => {
    const { stdout } = await run(process.execPath, ['--import', 'tsx', 'src/cli/key.ts', 'team-x'], { cwd: new URL('..', import.meta.url) });
    const key = /^\s+(fgw_\S+)$/m.exec(stdout)?.[1];
    expect(key).toBeDefined();
    expect(stdout).toContain(`"${digestKey(key!)}"`);
    expect(stdout).toContain(`{"id":"team-x","keys":["${digestKey(key!)}"]}`);
    // The printed entry is a valid tenants-file entry.
    const entry = JSON.parse(/^\s+(\{"id".*\})$/m.exec(stdout)![1]!);
    expect(new TenantRegistry(parseTenants({ tenants: [entry] })).findByKey(key!)?.id).toBe('team-x');
  });

  it('the key program runs however it is named: with or without its extension, by a relative path', async () => {
    for (const path of ['src/cli/key', './src/cli/../cli/key.ts']) {
      const { stdout } = await run(process.execPath, ['--import', 'tsx', path, 'team-y'], { cwd: new URL('..', import.meta.url) });
      expect(stdout, path).toContain('New key for tenant "team-y"');
    }
  });

  it('npm run key refuses a missing or bad tenant id', async () => {
    await expect(run(process.execPath, ['--import', 'tsx', 'src/cli/key.ts'], { cwd: new URL('..', import.meta.url) })).rejects.toMatchObject({
      code: 2,
      stderr: expect.stringContaining('usage: npm run key -- <tenant-id>'),
    });
  });
});
