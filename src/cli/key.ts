import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { digestKey } from '../tenants/registry.js';

/**
 * `npm run key -- <tenant-id>`: prints a new random key (shown once, give it to the team) and
 * the SHA-256 digest to add to that tenant's "keys" in the tenants file.
 */
export function newKey(): string {
  return `fgw_${randomBytes(32).toString('base64url')}`;
}

export function keyInstructions(tenantId: string, key: string): string {
  const digest = digestKey(key);
  const entry = JSON.stringify({ id: tenantId, keys: [digest] });
  return [
    `New key for tenant "${tenantId}" (shown once; hand it to the team, it is not stored anywhere):`,
    '',
    `  ${key}`,
    '',
    `Add this digest to the "keys" of "${tenantId}" in the tenants file:`,
    '',
    `  "${digest}"`,
    '',
    'or, for a new tenant, add this entry to "tenants":',
    '',
    `  ${entry}`,
    '',
  ].join('\n');
}

/** Run as a program (`node dist/cli/key.js`, `node dist/cli/key`, `tsx src/cli/key.ts`), not imported. */
const withoutExtension = (path: string) => path.replace(/\.[cm]?[jt]s$/, '');
const isMain = process.argv[1] !== undefined && withoutExtension(resolve(process.argv[1])) === withoutExtension(fileURLToPath(import.meta.url));
if (isMain) {
  const tenantId = process.argv[2];
  if (!tenantId || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(tenantId)) {
    // Named as it was run: `npm run key` needs the development install, the built file does not.
    const usage = import.meta.url.endsWith('.js') ? 'node dist/cli/key.js <tenant-id>' : 'npm run key -- <tenant-id>';
    process.stderr.write(`usage: ${usage}   (letters, digits, ".", "_", "-"; up to 64)\n`);
    process.exit(2);
  }
  process.stdout.write(keyInstructions(tenantId, newKey()));
}
