import { createHash } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import type { FastifyBaseLogger } from 'fastify';
import type { GatewayApp } from '../app.js';
import { TenantRegistry } from './registry.js';
import { parseTenantsText, TenantsFileError, unreadable, type Tenant } from './tenants-file.js';

/**
 * Reloads the tenants file while the gateway runs: on demand (SIGHUP) and, optionally, when the
 * file changes on disk. A valid file replaces every tenant in one swap (the new registry is built
 * first); an invalid or unreadable one is rejected with one error line and the tenants in force
 * stay. Content identical to what is in force is not applied again.
 *
 * The directory is watched, not the file: editors and Kubernetes ConfigMaps replace a file by
 * renaming another over it (ConfigMaps swap a `..data` symlink), which a watch on the file itself
 * stops seeing after the first replacement. Events are debounced, and a file missing for a moment
 * while it is being replaced is read again once before it is rejected.
 */

export type ReloadTrigger = 'signal' | 'watch' | 'manual';

export type ReloadResult =
  /** `applied` is false when the file's content was already in force. */
  | { ok: true; applied: boolean; tenants: readonly Tenant[] }
  | { ok: false; problems: string[] };

/** What the reloader swaps tenants in: the running app, or anything holding a registry. */
export interface TenantsTarget {
  tenants(): TenantRegistry;
  replaceTenants(next: TenantRegistry): void;
}

export type ReloadLogger = Pick<FastifyBaseLogger, 'debug' | 'info' | 'warn' | 'error'>;

export interface TenantsReloaderOptions {
  file: string;
  target: TenantsTarget;
  log: ReloadLogger;
  /** Reload when the file changes on disk. */
  watch: boolean;
  /** Quiet time after the last change before reading the file (ms); also the wait before re-reading a missing file. */
  debounceMs?: number;
  /** Digest of the content already in force (from readTenantsSnapshot), so an unchanged file is not applied again. */
  appliedDigest?: string;
  /** Counts reloads applied and rejected. */
  metrics?: { tenantsReload(outcome: 'applied' | 'rejected'): void };
}

export interface TenantsSnapshot {
  tenants: Tenant[];
  /** SHA-256 of the file's bytes. */
  digest: string;
}

type SnapshotRead = ({ ok: true } & TenantsSnapshot) | { ok: false; problems: string[]; missing: boolean };

export const DEFAULT_DEBOUNCE_MS = 200;

/** Names in the watched directory whose change may mean a new tenants file (`..data`: ConfigMap volumes). */
const CONFIGMAP_DATA_LINK = '..data';

async function readSnapshot(file: string): Promise<SnapshotRead> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { ok: false, problems: [unreadable(file, err)], missing: code === 'ENOENT' };
  }
  try {
    const tenants = parseTenantsText(bytes.toString('utf8'), file);
    return { ok: true, tenants, digest: createHash('sha256').update(bytes).digest('hex') };
  } catch (err) {
    return { ok: false, problems: err instanceof TenantsFileError ? err.problems : [String(err)], missing: false };
  }
}

/** Reads and validates the tenants file, keeping the digest of its bytes; throws TenantsFileError. */
export async function readTenantsSnapshot(file: string): Promise<TenantsSnapshot> {
  const read = await readSnapshot(file);
  if (!read.ok) throw new TenantsFileError(file, read.problems);
  return { tenants: read.tenants, digest: read.digest };
}

/** Tenant ids added, removed and changed (any field: keys, limits, origins, hosts) between two lists. */
export function diffTenants(before: readonly Tenant[], after: readonly Tenant[]): { added: string[]; removed: string[]; changed: string[] } {
  const old = new Map(before.map((t) => [t.id, t]));
  const next = new Map(after.map((t) => [t.id, t]));
  return {
    added: [...next.keys()].filter((id) => !old.has(id)),
    removed: [...old.keys()].filter((id) => !next.has(id)),
    changed: [...next.entries()].filter(([id, t]) => old.has(id) && !isDeepStrictEqual(old.get(id), t)).map(([id]) => id),
  };
}

const wait = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());

export class TenantsReloader {
  private readonly debounceMs: number;
  private appliedDigest: string | undefined;
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** Reloads run one after another, so an older read never lands after a newer one. */
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(private readonly options: TenantsReloaderOptions) {
    this.debounceMs = options.debounceMs ?? DEFAULT_DEBOUNCE_MS;
    this.appliedDigest = options.appliedDigest;
  }

  /** Starts watching when `watch` is set. The watcher never keeps the process alive. */
  start(): this {
    if (!this.options.watch || this.watcher || this.closed) return this;
    const { file, log } = this.options;
    const name = basename(file);
    try {
      this.watcher = watch(dirname(file), { persistent: false }, (_event, changed) => {
        if (changed === null || changed === name || changed === CONFIGMAP_DATA_LINK) this.schedule();
      });
    } catch (err) {
      log.warn({ file, err: (err as Error).message }, 'cannot watch the tenants file; it is reloaded on SIGHUP only');
      return this;
    }
    this.watcher.on('error', (err) => {
      log.warn({ file, err: err.message }, 'tenants file watch failed; it is reloaded on SIGHUP only');
      this.watcher?.close();
      this.watcher = undefined;
    });
    return this;
  }

  /** Reads the file now and applies it if valid and different from what is in force. Never throws. */
  reload(trigger: ReloadTrigger = 'manual'): Promise<ReloadResult> {
    const run = this.queue.then(() => this.apply(trigger));
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Stops watching; waits for a reload under way. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    this.watcher?.close();
    this.watcher = undefined;
    await this.queue;
  }

  private schedule(): void {
    if (this.closed) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.reload('watch');
    }, this.debounceMs).unref();
  }

  private async apply(trigger: ReloadTrigger): Promise<ReloadResult> {
    const { file, target, log } = this.options;
    let read = await readSnapshot(file);
    // Replacing a file by rename can leave it missing for a moment: look once more before rejecting.
    if (!read.ok && read.missing) {
      log.debug({ file, trigger, retryInMs: this.debounceMs }, 'tenants file missing; looking again shortly');
      await wait(this.debounceMs);
      read = await readSnapshot(file);
    }
    if (!read.ok) {
      this.options.metrics?.tenantsReload('rejected');
      log.error({ file, trigger, problems: read.problems }, 'tenants file rejected; keeping the previous tenants');
      return { ok: false, problems: read.problems };
    }
    if (read.digest === this.appliedDigest) {
      // Asked for by the operator (SIGHUP): say so. A watch sees editors touch files all day.
      log[trigger === 'signal' ? 'info' : 'debug']({ file, trigger }, 'tenants file unchanged; nothing to reload');
      return { ok: true, applied: false, tenants: target.tenants().tenants };
    }
    const next = new TenantRegistry(read.tenants);
    const diff = diffTenants(target.tenants().tenants, next.tenants);
    target.replaceTenants(next);
    this.appliedDigest = read.digest;
    this.options.metrics?.tenantsReload('applied');
    log.info({ file, trigger, tenants: next.tenants.length, ...diff }, 'tenants file reloaded');
    // Valid, and the same warning as at start: every call is now refused.
    if (next.tenants.length === 0) log.warn({ file, trigger }, 'the tenants file lists no tenant: every call will be 401');
    return { ok: true, applied: true, tenants: next.tenants };
  }
}

/**
 * A reloader for the app's tenants, started (watching when asked) and closed with the app.
 * Call before the app is ready (listen), as it adds an onClose hook.
 */
export function attachTenantsReloader(
  app: GatewayApp,
  options: Omit<TenantsReloaderOptions, 'target' | 'log'>,
): TenantsReloader {
  const reloader = new TenantsReloader({ ...options, target: app, log: app.log, metrics: app.metrics }).start();
  app.addHook('onClose', () => reloader.close());
  return reloader;
}
