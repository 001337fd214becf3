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
 */
export interface AnswerCache {
  readonly kind: 'memory' | 'redis';
  get(key: string): Promise<CachedAnswer | undefined>;
  set(key: string, answer: CachedAnswer): Promise<void>;
  close(): Promise<void>;
}

/** Bytes an answer is charged in memory: its body plus a fixed allowance for the rest. */
const sizeOf = (answer: CachedAnswer) => answer.body.length + 256;

/**
 * In-process cache bounded by bytes and age. Every entry lives for the same TTL, so insertion
 * order is expiry order: expired and, past the byte budget, oldest entries leave from the front.
 */
export class MemoryAnswerCache implements AnswerCache {
  readonly kind = 'memory' as const;
  private readonly entries = new Map<string, { answer: CachedAnswer; expiresAt: number }>();
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

  async set(key: string, answer: CachedAnswer): Promise<void> {
    if (this.options.ttlMs <= 0 || sizeOf(answer) > this.options.maxBytes) return;
    this.remove(key);
    const now = this.now();
    this.entries.set(key, { answer, expiresAt: now + this.options.ttlMs });
    this.bytes += sizeOf(answer);
    for (const [oldest, entry] of this.entries) {
      if (this.bytes <= this.options.maxBytes && entry.expiresAt > now) break;
      this.remove(oldest);
    }
  }

  get size(): number {
    return this.entries.size;
  }

  get usedBytes(): number {
    return this.bytes;
  }

  async close(): Promise<void> {
    this.entries.clear();
    this.bytes = 0;
  }

  private remove(key: string): void {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.entries.delete(key);
    this.bytes -= sizeOf(entry.answer);
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
    if (this.ttlMs <= 0) return;
    const head = JSON.stringify({ statusCode: answer.statusCode, contentType: answer.contentType ?? null, headers: answer.headers });
    await this.redis.set(`cache:${key}`, Buffer.concat([Buffer.from(`${head}\n`), answer.body]), 'PX', this.ttlMs);
  }

  async close(): Promise<void> {
    // The shared connection is closed by the app.
  }
}
