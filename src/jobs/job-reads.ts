import type { UpstreamClient, UpstreamResponse } from '../upstream/client.js';
import { pickRelayedHeaders } from '../upstream/headers.js';
import { isJsonObjectAnswer } from '../upstream/relay.js';
import type { AnswerCache, CachedAnswer } from './answer-cache.js';

export type CacheOutcome = 'hit' | 'miss' | 'shared';

export interface JobReadsOptions {
  upstream: UpstreamClient;
  /** Final answers (COMPLETED status, result): memory or Redis. */
  cache: AnswerCache;
  /** How long any status answer is reused locally (ms); 0: every read not in flight goes upstream. */
  statusTtlMs: number;
  /** Largest result body kept in `cache` (bytes). */
  maxResultBytes: number;
  now?: () => number;
  /** Each status object fetched from upstream (not from a cache), once per upstream call. */
  onStatus?: (requestId: string, status: Record<string, unknown>) => void;
  /** A final result (a JSON 200 or 422) fetched from upstream: the job has ended. */
  onFinalResult?: (requestId: string) => void;
  onLookup?: (kind: 'status' | 'result', outcome: CacheOutcome) => void;
  onCacheError?: (operation: 'get' | 'set', err: unknown) => void;
  /** The tenant a job belongs to, so a bounded cache can share its room fairly among tenants. */
  ownerOf?: (requestId: string) => Promise<string | undefined>;
}

/** Most status answers reused at once (jobs polled within one STATUS_CACHE_MS). */
const MAX_FRESH = 50_000;

/** Result codes that are final: the images, or the model's verdict on the input. */
const FINAL_RESULT = new Set([200, 422]);

/**
 * Status and result reads with as few upstream calls as correctness allows. Concurrent reads of
 * the same thing share one upstream call (single flight); any status is reused for a short
 * while (clients poll every few hundred milliseconds); a COMPLETED status and a final result
 * never change, so they are kept for the retention period and served without asking fal again,
 * even after fal has dropped them.
 */
export class JobReads {
  private readonly fresh = new Map<string, { response: UpstreamResponse; expiresAt: number }>();
  private readonly inFlight = new Map<string, Promise<UpstreamResponse>>();
  private readonly now: () => number;

  constructor(private readonly options: JobReadsOptions) {
    this.now = options.now ?? Date.now;
  }

  status(requestId: string, logs: boolean): Promise<UpstreamResponse> {
    const key = `status:${requestId}:${logs ? 1 : 0}`;
    const now = this.now();
    const fresh = this.fresh.get(key);
    if (fresh && fresh.expiresAt > now) {
      this.options.onLookup?.('status', 'hit');
      return Promise.resolve(fresh.response);
    }
    return this.shared(key, 'status', async (current) => {
      const kept = await this.cached(key);
      this.options.onLookup?.('status', kept ? 'hit' : 'miss');
      const response = kept ?? (await this.fetchStatus(requestId, logs, key));
      // A read that began before forget() must not put its older answer back.
      if (current() && (response.statusCode === 200 || response.statusCode === 202)) this.remember(key, response);
      return response;
    });
  }

  result(requestId: string): Promise<UpstreamResponse> {
    const key = `result:${requestId}`;
    const fresh = this.fresh.get(key);
    if (fresh && fresh.expiresAt > this.now()) {
      this.options.onLookup?.('result', 'hit');
      return Promise.resolve(fresh.response);
    }
    return this.shared(key, 'result', async (current) => {
      const kept = await this.cached(key);
      this.options.onLookup?.('result', kept ? 'hit' : 'miss');
      if (kept) return kept;
      const response = await this.options.upstream.result(requestId);
      // Final only when it is what it says: a bad answer is relayed as a 502 and asked again.
      if (FINAL_RESULT.has(response.statusCode) && isJsonObjectAnswer(response)) {
        if (response.body.length <= this.options.maxResultBytes) await this.keep(key, requestId, response);
        this.options.onFinalResult?.(requestId);
      } else if (response.statusCode >= 400 && response.statusCode < 500 && current() && isJsonObjectAnswer(response)) {
        // Not ready yet (fal's "still in progress"): reused as briefly as a status, so code that
        // polls response_url until it stops failing costs the upstream no more than status polling.
        this.remember(key, response);
      }
      return response;
    });
  }

  /**
   * A COMPLETED status that arrived another way (a status stream): kept as one fetched by a poll
   * is, so later reads, and streams opened after fal has forgotten the job, are served from it;
   * and a "not ready yet" result answer reused from before is dropped at once (synchronously, before
   * the first await: a result read right after this call sees the job done).
   */
  async completedElsewhere(requestId: string, logs: boolean, status: Record<string, unknown>): Promise<void> {
    const key = `status:${requestId}:${logs ? 1 : 0}`;
    // A read already in flight (begun before COMPLETED) must not put its older answer back.
    for (const stale of [`result:${requestId}`, key]) {
      this.fresh.delete(stale);
      this.inFlight.delete(stale);
    }
    const upstream = this.options.upstream;
    const body = Buffer.from(JSON.stringify(status));
    await this.keep(key, requestId, { statusCode: 200, contentType: 'application/json', headers: {}, body, redact: (text) => upstream.scrubText(text) });
  }

  /** The job's COMPLETED status, when one is kept (never asks upstream), parsed; URLs as upstream sent them. */
  async keptCompleted(requestId: string, logs: boolean): Promise<Record<string, unknown> | undefined> {
    const kept = await this.cached(`status:${requestId}:${logs ? 1 : 0}`);
    if (!kept) return undefined;
    try {
      const status: unknown = JSON.parse(kept.body.toString('utf8'));
      return status && typeof status === 'object' && (status as { status?: unknown }).status === 'COMPLETED' ? (status as Record<string, unknown>) : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * Drops the short-lived status copies of a job whose state just changed (e.g. cancelled), and
   * detaches reads already in flight, so the next read asks upstream afresh.
   */
  forget(requestId: string): void {
    for (const key of [`status:${requestId}:0`, `status:${requestId}:1`, `result:${requestId}`]) {
      this.fresh.delete(key);
      this.inFlight.delete(key);
    }
  }

  private async fetchStatus(requestId: string, logs: boolean, key: string): Promise<UpstreamResponse> {
    const response = await this.options.upstream.status(requestId, logs);
    if (response.statusCode !== 200 && response.statusCode !== 202) return response;
    let status: Record<string, unknown> | undefined;
    try {
      const parsed: unknown = JSON.parse(response.body.toString('utf8'));
      if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) status = parsed as Record<string, unknown>;
    } catch {
      // Not a status object: relayed (and rejected) as it is, never cached.
    }
    if (!status) return response;
    if (status.status === 'COMPLETED') {
      // A "not ready yet" result answer reused from before is stale now.
      this.fresh.delete(`result:${requestId}`);
      await this.keep(key, requestId, response);
    }
    this.options.onStatus?.(requestId, status);
    return response;
  }

  /** Runs `load` once for every concurrent caller of `key`; `current()` says whether it is still the read others join. */
  private shared(key: string, kind: 'status' | 'result', load: (current: () => boolean) => Promise<UpstreamResponse>): Promise<UpstreamResponse> {
    const pending = this.inFlight.get(key);
    if (pending) {
      this.options.onLookup?.(kind, 'shared');
      return pending;
    }
    const self: { promise?: Promise<UpstreamResponse> } = {};
    const current = () => self.promise !== undefined && this.inFlight.get(key) === self.promise;
    const promise = load(current).finally(() => {
      if (current()) this.inFlight.delete(key);
    });
    self.promise = promise;
    this.inFlight.set(key, promise);
    return promise;
  }

  /** Reuses `response` for `key` during statusTtlMs. */
  private remember(key: string, response: UpstreamResponse): void {
    const ttl = this.options.statusTtlMs;
    if (ttl <= 0) return;
    const now = this.now();
    this.fresh.delete(key);
    this.fresh.set(key, { response, expiresAt: now + ttl });
    // Same TTL for every entry: insertion order is expiry order, so expired ones (and, past the
    // bound, the oldest) leave from the front.
    for (const [oldest, entry] of this.fresh) {
      if (entry.expiresAt > now && this.fresh.size <= MAX_FRESH) break;
      this.fresh.delete(oldest);
    }
  }

  private async cached(key: string): Promise<UpstreamResponse | undefined> {
    let answer: CachedAnswer | undefined;
    try {
      answer = await this.options.cache.get(key);
    } catch (err) {
      this.options.onCacheError?.('get', err);
      return undefined;
    }
    if (!answer) return undefined;
    const upstream = this.options.upstream;
    return {
      statusCode: answer.statusCode,
      contentType: answer.contentType,
      headers: answer.headers,
      body: answer.body,
      redact: (text) => upstream.scrubText(text),
    };
  }

  private async keep(key: string, requestId: string, response: UpstreamResponse): Promise<void> {
    try {
      const owner = await this.options.ownerOf?.(requestId);
      await this.options.cache.set(
        key,
        {
          statusCode: response.statusCode,
          contentType: response.contentType,
          headers: pickRelayedHeaders(response.headers),
          body: response.body,
        },
        owner,
      );
    } catch (err) {
      this.options.onCacheError?.('set', err);
    }
  }
}
