import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ImageCache } from './image-cache.js';
import { JobStore } from './jobs.js';
import type { OutputSpec } from './output.js';
import type { ValidationDetail } from './validation.js';

export interface SimulatorOptions {
  /** The only upstream token accepted. */
  token: string;
  /** Scheme required in Authorization (default 'Key', as fal; resellers use 'Bearer'). */
  authScheme?: 'Key' | 'Bearer';
  /** How long a job waits in the queue (default 1000 ms). */
  queueMs?: number;
  /** How long a job runs once picked up (default 2000 ms). */
  runMs?: number;
  /** Origin written into status_url/response_url/cancel_url; default: the simulator's own. */
  urlBase?: string;
  /** Clock in ms since the epoch (default Date.now); inject one to move time in tests. */
  now?: () => number;
  /** Jobs kept before the oldest are forgotten (default 10000). */
  maxJobs?: number;
  /**
   * How long a job is kept after it COMPLETED, as fal keeps results: 1 hour by default, and
   * `largeResultRetentionMs` (6 minutes) for a result of 10 KB or more, which the simulator's are
   * when they inline their images (sync_mode). Then its status, result and cancel are 404; its
   * files still load (until maxJobs newer jobs push the job out).
   */
  resultRetentionMs?: number;
  largeResultRetentionMs?: number;
  /**
   * fal's per-account concurrency limit: a submit while this many jobs are queued or running is
   * refused with 429 (and `Retry-After`), queuing nothing. Default: no limit.
   */
  accountConcurrency?: number;
  /** startSimulator only (defaults 0 = any free port, and 127.0.0.1). */
  port?: number;
  host?: string;
  logger?: boolean;
  /** Recorded requests kept, newest last (default 10000); older ones are dropped. */
  maxRecordedRequests?: number;
  /** How often the SSE status stream re-reads the clock (default 100 ms of real time). */
  streamPollMs?: number;
}

export interface RecordedRequest {
  method: string;
  /** Path and query string, as received. */
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body?: unknown;
}

/** What the model decided about a job's input, fixed at submit time. */
export type JobPayload =
  | { kind: 'accepted'; spec: OutputSpec }
  | { kind: 'rejected'; detail: ValidationDetail[] };

/** Shared state handed to every route module. */
export interface SimulatorContext {
  options: SimulatorOptions;
  queueMs: number;
  runMs: number;
  store: JobStore<JobPayload>;
  images: ImageCache;
  requests: RecordedRequest[];
  /** Where the simulator really answers: image URLs use it so they load. */
  ownOrigin(request: FastifyRequest): string;
  /** Origin for the queue URLs in bodies (urlBase when configured). */
  urlBase(request: FastifyRequest): string;
}

/** fal keeps a result 1 hour after completion, 6 minutes if it is 10 KB or more (the spec's figures). */
export const RESULT_RETENTION_MS = 60 * 60 * 1000;
export const LARGE_RESULT_RETENTION_MS = 6 * 60 * 1000;

export function createContext(app: FastifyInstance, options: SimulatorOptions): SimulatorContext {
  const queueMs = Math.max(0, options.queueMs ?? 1000);
  const runMs = Math.max(0, options.runMs ?? 2000);
  const now = options.now ?? Date.now;
  const ownOrigin = (request: FastifyRequest): string => {
    // Prefer the socket we listen on; a wildcard bind (0.0.0.0, ::) says nothing a client can
    // dial, so fall back to the Host the client used.
    const address = app.server.listening ? app.server.address() : null;
    if (address && typeof address === 'object' && !['0.0.0.0', '::'].includes(address.address)) {
      const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
      return `http://${host}:${address.port}`;
    }
    return `${request.protocol}://${request.host}`;
  };
  const base = options.urlBase?.replace(/\/+$/, '');
  return {
    options,
    queueMs,
    runMs,
    store: new JobStore<JobPayload>({
      queueMs,
      runMs,
      now,
      maxJobs: options.maxJobs ?? 10_000,
      retentionMs: ({ payload }) => {
        // Inlined images (data URIs) make a result of well over 10 KB; URLs keep it small.
        const large = payload.kind === 'accepted' && payload.spec.syncMode;
        return large ? (options.largeResultRetentionMs ?? LARGE_RESULT_RETENTION_MS) : (options.resultRetentionMs ?? RESULT_RETENTION_MS);
      },
    }),
    images: new ImageCache(),
    requests: [],
    ownOrigin,
    urlBase: (request) => base ?? ownOrigin(request),
  };
}
