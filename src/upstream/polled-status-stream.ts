import { errors } from '../errors.js';
import type { UpstreamResponse } from './client.js';
import { rewriteQueueUrls } from './queue-urls.js';
import { parseJsonObject } from './relay.js';
import type { StatusJoin, StatusSink } from './stream-hub.js';

export interface PolledStreamOptions {
  /** One status read, as a poll of status_url makes it (shared and cached per job). */
  read: () => Promise<UpstreamResponse>;
  requestId: string;
  /** Removes the upstream token from outgoing text. */
  scrub: (text: string) => string;
  /** Fires when the subscriber leaves or the gateway shuts down. */
  signal: AbortSignal;
  /** Between two reads (asked before each wait: it may change while the stream runs). */
  intervalMs: () => number;
  /** A comment line after this long without an event, so proxies keep the connection. */
  keepAliveMs: number;
  /** Reads that may fail in a row (an upstream hiccup) before the stream is cut off. */
  maxFailures: number;
  /** Unsent bytes after which a subscriber that stopped reading is cut off. */
  maxBufferedBytes: number;
}

const isStatus = (response: UpstreamResponse) => response.statusCode === 200 || response.statusCode === 202;

/** A status answer's body, or undefined for one that is not a JSON object (counted as a failed read). */
function statusOf(response: UpstreamResponse): Record<string, unknown> | undefined {
  try {
    return parseJsonObject(response);
  } catch {
    return undefined;
  }
}

/** Resolves after `ms`, or at once when `signal` fires. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

/**
 * A status stream served by polling instead of by an upstream stream: the same events a client
 * of fal's stream sees (each status when it changes, `logs` holding only the lines since the
 * previous event, the end after COMPLETED), made from the status reads every poller shares. It
 * holds no upstream connection, so it is what a tenant gets past its share of upstream streams.
 *
 * The first read decides the answer: a status opens the stream, anything else (404, an upstream
 * error) is relayed as a poll would be. After that, a read that fails is tried again; a stream
 * whose reads keep failing is cut off (not ended), so the client reconnects or polls.
 */
export async function pollingJoin(options: PolledStreamOptions): Promise<StatusJoin> {
  const first = await options.read();
  if (options.signal.aborted) return { kind: 'left' };
  if (!isStatus(first)) return { kind: 'response', response: first };
  // A status that is not a JSON object: a bad answer (502), as a poll or an upstream stream gets.
  if (!statusOf(first)) throw new errors.UpstreamBadResponse();
  return {
    kind: 'stream',
    headers: first.headers,
    attach: (sink, urlBase) => follow(options, first, sink, urlBase),
  };
}

async function follow(options: PolledStreamOptions, first: UpstreamResponse, sink: StatusSink, urlBase: string): Promise<void> {
  const { signal } = options;
  let previous: string | undefined;
  let logsSent = 0;
  let lastWrite = Date.now();
  let failures = 0;
  let response: UpstreamResponse | undefined = first;
  for (;;) {
    const status = response && isStatus(response) ? statusOf(response) : undefined;
    if (status) {
      failures = 0;
      const logs = Array.isArray(status.logs) ? (status.logs as unknown[]) : undefined;
      // What makes a new event: anything but the logs changed, or new log lines came.
      const { logs: _logs, ...rest } = status;
      const shape = JSON.stringify(rest);
      const newLogs = logs && logs.length > logsSent ? logs.slice(logsSent) : [];
      if (shape !== previous || newLogs.length > 0) {
        if (logs) {
          status.logs = logs.length < logsSent ? logs : newLogs;
          logsSent = logs.length;
        }
        rewriteQueueUrls(status, urlBase, options.requestId);
        sink.write(options.scrub(`data: ${JSON.stringify(status)}\n\n`));
        previous = shape;
        lastWrite = Date.now();
        if (sink.buffered > options.maxBufferedBytes) return sink.drop();
      }
      if (status.status === 'COMPLETED') return sink.end();
    } else if (++failures > options.maxFailures) {
      return sink.drop();
    }
    if (Date.now() - lastWrite >= options.keepAliveMs) {
      sink.write(': keep-alive\n\n');
      lastWrite = Date.now();
    }
    await pause(options.intervalMs(), signal);
    // Left, or shutting down: the route ends or cuts off the response.
    if (signal.aborted) return;
    response = await options.read().catch(() => undefined);
  }
}
