import type { Redis } from 'ioredis';

/** An upstream answer kept by the gateway: enough to relay it again exactly as fal sent it. */
export interface CachedAnswer {
  statusCode: number;
  contentType: string | undefined;
  /** The upstream headers a caller may see (already picked and scrubbed). */
  headers: Record<string, string>;
  body: Buffer;
}

/**
 * Where final answers (a COMPLETED status, a result) are kept for `ttlMs`: in memory for one
 * process, or in Redis so every replica serves them and they outlive fal's own retention.
 * A cache is an optimisation: a failing one is a miss, never an error for the caller.
 * `owner` (the job's tenant) lets a bounded cache share its room fairly among tenants.
 */
export interface AnswerCache {
  readonly kind: 'memory' | 'redis';
  get(key: string): Promise<CachedAnswer | undefined>;
  set(key: string, answer: CachedAnswer, owner?: string): Promise<void>;
  close(): Promise<void>;
}

/** Bytes an answer is charged in memory: its body plus a fixed allowance for the rest. */
const sizeOf = (answer: CachedAnswer) => answer.body.length + 256;

interface Entry {
  answer: CachedAnswer;
  expiresAt: number;
  owner: string;
}

/**
 * In-process cache bounded by bytes and age. Every entry lives for the same TTL, so insertion
 * order is expiry order: expired entries leave from the front. Past the byte budget, the owner
 * holding the most bytes gives up its oldest answer first, so a tenant keeping many large
 * results (sync_mode images are data URIs of megabytes) pushes out its own, never the few that
 * other tenants keep.
 */
export class MemoryAnswerCache implements AnswerCache {
  readonly kind = 'memory' as const;
  private readonly entries = new Map<string, Entry>();
  /** Per owner: its keys, oldest first, and the bytes they hold. */
  private readonly owners = new Map<string, { keys: Set<string>; bytes: number }>();
  private bytes = 0;

  constructor(
    private readonly options: { ttlMs: number; maxBytes: number; now?: () => number },
  ) {}

  private now(): number {
    return this.options.now?.() ?? Date.now();
  }

  async get(key: string): Promise<CachedAnswer | undefined> {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= this.now()) {
      this.remove(key);
      return undefined;
    }
    return entry.answer;
  }

  async set(key: string, answer: CachedAnswer, owner = ''): Promise<void> {
    if (this.options.ttlMs <= 0 || sizeOf(answer) > this.options.maxBytes) return;
    this.remove(key);
    const now = this.now();
    this.entries.set(key, { answer, expiresAt: now + this.options.ttlMs, owner });
    let own = this.owners.get(owner);
    if (!own) this.owners.set(owner, (own = { keys: new Set(), bytes: 0 }));
    own.keys.add(key);
    own.bytes += sizeOf(answer);
    this.bytes += sizeOf(answer);
    for (const [oldest, entry] of this.entries) {
      if (entry.expiresAt > now) break;
      this.remove(oldest);
    }
    while (this.bytes > this.options.maxBytes) this.remove(this.oldestOfLargestOwner());
  }

  get size(): number {
    return this.entries.size;
  }

  get usedBytes(): number {
    return this.bytes;
  }

  /** Bytes kept for one owner. */
  bytesOf(owner: string): number {
    return this.owners.get(owner)?.bytes ?? 0;
  }

  async close(): Promise<void> {
    this.entries.clear();
    this.owners.clear();
    this.bytes = 0;
  }

  /** Owners are tenants: few enough to look through. */
  private oldestOfLargestOwner(): string {
    let largest: { keys: Set<string>; bytes: number } | undefined;
    for (const own of this.owners.values()) if (!largest || own.bytes > largest.bytes) largest = own;
    return largest!.keys.values().next().value!;
  }

  private remove(key: string): void {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.entries.delete(key);
    this.bytes -= sizeOf(entry.answer);
    const own = this.owners.get(entry.owner)!;
    own.keys.delete(key);
    own.bytes -= sizeOf(entry.answer);
    if (own.keys.size === 0) this.owners.delete(entry.owner);
  }
}

/**
 * Answers in Redis as one string each: a JSON head line (status, type, headers), a newline, and
 * the body bytes. Keys live under the app's prefix as `cache:<key>`, with the TTL set atomically.
 */
export class RedisAnswerCache implements AnswerCache {
  readonly kind = 'redis' as const;

  constructor(
    private readonly redis: Redis,
    private readonly ttlMs: number,
  ) {}

  async get(key: string): Promise<CachedAnswer | undefined> {
    const raw = await this.redis.getBuffer(`cache:${key}`);
    if (!raw) return undefined;
    const newline = raw.indexOf(10);
    if (newline < 0) return undefined;
    const head = JSON.parse(raw.subarray(0, newline).toString('utf8')) as Omit<CachedAnswer, 'body'> & { contentType: string | null };
    return {
      statusCode: head.statusCode,
      contentType: head.contentType ?? undefined,
      headers: head.headers,
      body: Buffer.from(raw.subarray(newline + 1)),
    };
  }

  async set(key: string, answer: CachedAnswer): Promise<void> {
    // Redis bounds its memory itself (maxmemory and its eviction policy), not per owner.
    if (this.ttlMs <= 0) return;
    const head = JSON.stringify({ statusCode: answer.statusCode, contentType: answer.contentType ?? null, headers: answer.headers });
    await this.redis.set(`cache:${key}`, Buffer.concat([Buffer.from(`${head}\n`), answer.body]), 'PX', this.ttlMs);
  }

  async close(): Promise<void> {
    // The shared connection is closed by the app.
  }
}
