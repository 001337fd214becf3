import type { IncomingHttpHeaders } from 'node:http';
import type { UpstreamClient, UpstreamResponse } from './client.js';
import { rewriteQueueUrls } from './queue-urls.js';
import { SseRewriter } from './sse-rewriter.js';

/**
 * Shares one upstream status stream (SSE) among every client watching the same job with the
 * same `logs` flag, so a popular job costs one upstream connection however many watch it.
 *
 * The first subscriber opens the stream; later ones join it. Each event is fanned out to every
 * subscriber with the queue URL fields rewritten for that subscriber's own public base URL, and
 * scrubbed of the upstream token. A subscriber that joins late first receives the most recent
 * status, then follows live. An event's `logs` holds only the lines since the previous event
 * (fal's clients add them up), so the late joiner's first status carries every line the stream
 * has brought so far instead: it ends up with the same logs as those who were there from the
 * start. When the last subscriber leaves,
 * the upstream stream is closed; when the upstream ends or fails, every subscriber is ended (cut
 * off, unless the stream brought COMPLETED: see closeSink). A
 * subscriber that stops reading is disconnected once its unsent bytes pass a bound, so it can
 * neither hold the others back nor make the gateway buffer without limit.
 */

/**
 * A stream that brought COMPLETED is over: it ends, as fal's does. One that stopped before (the
 * upstream connection dropped, the gateway is shutting down) is cut off instead: a clean end
 * would tell a client such as fal's own that the job is done, and it would then ask for a result
 * that does not exist yet. A broken stream makes it reconnect or poll.
 */
function closeSink(channel: Channel, sink: StatusSink): void {
  if (channel.latestStatus?.status === 'COMPLETED') sink.end();
  else sink.drop();
}

/** One upstream stream per job and `logs` flag. */
const channelKey = (requestId: string, logs: boolean) => `${requestId}:${logs ? 1 : 0}`;

/** Where one subscriber's events go (in the gateway, a hijacked HTTP response). */
export interface StatusSink {
  write(text: string): void;
  /** Bytes written but not yet delivered to the client. */
  readonly buffered: number;
  /** The upstream stream ended after COMPLETED: end the response. */
  end(): void;
  /** The subscriber fell too far behind, or the stream stopped before COMPLETED: disconnect it. */
  drop(): void;
}

export type StatusJoin =
  /** The upstream stream is open: attach a sink; resolves when this subscriber is done. */
  | { kind: 'stream'; headers: IncomingHttpHeaders; attach(sink: StatusSink, urlBase: string): Promise<void> }
  /** The upstream answered with something other than 200: relay it. */
  | { kind: 'response'; response: UpstreamResponse }
  /** The subscriber's signal fired before the stream opened. */
  | { kind: 'left' };

export interface StatusStreamHubOptions {
  upstream: Pick<UpstreamClient, 'openStatusStream' | 'scrubText'>;
  /** Largest single event accepted from upstream (bytes). */
  maxEventBytes: number;
  /** Unsent bytes a subscriber may accumulate before it is disconnected (default 1 MiB). */
  maxBufferedBytes?: number;
  /** Called once per upstream status event, whatever the number of subscribers, before any rewriting. */
  onStatus?: (requestId: string, status: Record<string, unknown>) => void;
  /**
   * Called once a stream brings COMPLETED, with the status as a poll with the same `logs` flag
   * would return it (every log line the stream carried, not only the last event's), URLs not yet
   * rewritten; called first, before onStatus. Not called when the stream carried more log lines
   * than it keeps.
   */
  onCompleted?: (requestId: string, logs: boolean, status: Record<string, unknown>) => void;
  /** Counts whether a subscription opened an upstream stream ('miss') or joined one ('shared'). */
  metrics?: { cache(kind: 'status', outcome: 'hit' | 'miss' | 'shared'): void };
  log?: { warn(details: Record<string, unknown>, message: string): void };
}

type OpenOutcome =
  | { kind: 'stream'; headers: IncomingHttpHeaders }
  | { kind: 'response'; response: UpstreamResponse }
  | { kind: 'failed'; error: unknown }
  | { kind: 'left' };

interface Member {
  sink?: StatusSink;
  urlBase?: string;
  signal: AbortSignal;
  onAbort: () => void;
  /** Resolves `done` (the promise `attach` returns). */
  finish: () => void;
  done: Promise<void>;
}

interface Channel {
  key: string;
  requestId: string;
  state: 'opening' | 'open' | 'ended';
  abort: AbortController;
  members: Set<Member>;
  opened: Promise<OpenOutcome>;
  /** The most recent status event as upstream sent it (URLs not yet rewritten). */
  latest?: string;
  /** The same status, parsed. */
  latestStatus?: Record<string, unknown>;
  /** Every log line the stream has carried so far (each event brings the new ones), bounded. */
  logs: unknown[];
  /** Whether lines were dropped from `logs` (the bound was reached). */
  logsTruncated: boolean;
  /** The stream's `logs` flag. */
  withLogs: boolean;
}

/** undici's response body: iterable, and destroyed to release the connection. */
type UpstreamBody = AsyncIterable<Buffer> & { destroy?: () => void };

const DEFAULT_MAX_BUFFERED_BYTES = 1024 * 1024;
/** Log lines kept per stream for late joiners; a job that writes more keeps its latest lines. */
const MAX_LOG_HISTORY = 5_000;

export class StatusStreamHub {
  private readonly channels = new Map<string, Channel>();
  private readonly maxBufferedBytes: number;

  constructor(private readonly options: StatusStreamHubOptions) {
    this.maxBufferedBytes = options.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES;
  }

  /** Upstream streams open or opening. */
  get size(): number {
    return this.channels.size;
  }

  /** Whether the job's open stream has already brought COMPLETED (its upstream close still to come). */
  hasCompleted(requestId: string, logs: boolean): boolean {
    return this.channels.get(channelKey(requestId, logs))?.latestStatus?.status === 'COMPLETED';
  }

  /**
   * Subscribes to a job's status stream. Everyone who joins while the stream is opening shares
   * its outcome: the stream, the upstream's non-200 answer, or the thrown transport error.
   * `signal` is the subscriber leaving (client gone, shutdown); it may fire at any time.
   */
  async join(requestId: string, logs: boolean, signal: AbortSignal): Promise<StatusJoin> {
    if (signal.aborted) return { kind: 'left' };
    const key = channelKey(requestId, logs);
    let channel = this.channels.get(key);
    this.options.metrics?.cache('status', channel ? 'shared' : 'miss');
    if (!channel) {
      channel = this.open(key, requestId, logs);
      this.channels.set(key, channel);
    }
    const member = this.addMember(channel, signal);
    const left = new Promise<OpenOutcome>((resolve) => {
      if (signal.aborted) resolve({ kind: 'left' });
      else signal.addEventListener('abort', () => resolve({ kind: 'left' }), { once: true });
    });
    const outcome = await Promise.race([channel.opened, left]);
    if (signal.aborted || outcome.kind === 'left') return { kind: 'left' };
    if (outcome.kind === 'failed') throw outcome.error;
    if (outcome.kind === 'response') return outcome;
    const opened = channel;
    return { kind: 'stream', headers: outcome.headers, attach: (sink, urlBase) => this.attach(opened, member, sink, urlBase) };
  }

  private open(key: string, requestId: string, logs: boolean): Channel {
    const channel: Channel = {
      key,
      requestId,
      state: 'opening',
      abort: new AbortController(),
      members: new Set(),
      logs: [],
      logsTruncated: false,
      withLogs: logs,
      // Replaced just below: the outcome's handlers need the channel itself.
      opened: Promise.resolve({ kind: 'left' }),
    };
    channel.opened = this.options.upstream.openStatusStream(requestId, logs, channel.abort.signal).then(
      (opened): OpenOutcome => {
        if ('response' in opened) {
          if (channel.state === 'ended') return { kind: 'left' };
          this.end(channel);
          return { kind: 'response', response: opened.response };
        }
        const body = opened.stream as UpstreamBody;
        if (channel.state === 'ended') {
          // Everyone left while it was opening.
          body.destroy?.();
          return { kind: 'left' };
        }
        channel.state = 'open';
        void this.pump(channel, body);
        return { kind: 'stream', headers: opened.headers };
      },
      (error: unknown): OpenOutcome => {
        const wanted = channel.state !== 'ended';
        this.end(channel);
        return wanted ? { kind: 'failed', error } : { kind: 'left' };
      },
    );
    return channel;
  }

  private addMember(channel: Channel, signal: AbortSignal): Member {
    let finish = () => {};
    const done = new Promise<void>((resolve) => (finish = resolve));
    const member: Member = { signal, finish, done, onAbort: () => this.leave(channel, member) };
    channel.members.add(member);
    signal.addEventListener('abort', member.onAbort, { once: true });
    return member;
  }

  private attach(channel: Channel, member: Member, sink: StatusSink, urlBase: string): Promise<void> {
    if (channel.state === 'ended') {
      // Ended between opening and attaching: the last status (COMPLETED, usually), then the end.
      if (channel.latest && !member.signal.aborted) sink.write(this.render(channel, this.catchUp(channel), urlBase));
      closeSink(channel, sink);
      return Promise.resolve();
    }
    if (!channel.members.has(member)) return Promise.resolve();
    member.sink = sink;
    member.urlBase = urlBase;
    if (channel.latest) this.deliver(channel, member, this.render(channel, this.catchUp(channel), urlBase));
    return member.done;
  }

  /** What a subscriber joining now is sent first: the latest status, with all the logs so far. */
  private catchUp(channel: Channel): string {
    const status = channel.latestStatus;
    if (!status || !Array.isArray(status.logs)) return channel.latest!;
    return `data: ${JSON.stringify({ ...status, logs: channel.logs })}\n\n`;
  }

  /** Reads the upstream stream once and fans each batch of complete events out. */
  private async pump(channel: Channel, body: UpstreamBody): Promise<void> {
    const observer = new SseRewriter((data) => {
      const status = parseStatus(data);
      if (status) {
        channel.latest = `${data
          .split('\n')
          .map((line) => `data: ${line}`)
          .join('\n')}\n\n`;
        channel.latestStatus = status;
        if (Array.isArray(status.logs) && status.logs.length > 0) {
          for (const line of status.logs as unknown[]) channel.logs.push(line);
          if (channel.logs.length > MAX_LOG_HISTORY) {
            channel.logs.splice(0, channel.logs.length - MAX_LOG_HISTORY);
            channel.logsTruncated = true;
          }
        }
        if (status.status === 'COMPLETED' && !channel.logsTruncated) this.completed(channel, status);
        this.notify(channel, status);
      }
      return data;
    }, this.options.maxEventBytes);
    try {
      for await (const chunk of body) {
        if (channel.state === 'ended') break;
        this.fanOut(channel, observer.push(chunk));
      }
      this.fanOut(channel, observer.flush());
    } catch (err) {
      if (!channel.abort.signal.aborted) this.options.log?.warn({ err: (err as Error).message, requestId: channel.requestId }, 'upstream status stream failed');
    } finally {
      // Releases the upstream connection even when the loop ended early.
      body.destroy?.();
      this.end(channel);
    }
  }

  private completed(channel: Channel, status: Record<string, unknown>): void {
    try {
      this.options.onCompleted?.(channel.requestId, channel.withLogs, Array.isArray(status.logs) ? { ...status, logs: [...channel.logs] } : status);
    } catch (err) {
      this.options.log?.warn({ err: (err as Error).message, requestId: channel.requestId }, 'status observer failed');
    }
  }

  private notify(channel: Channel, status: Record<string, unknown>): void {
    try {
      this.options.onStatus?.(channel.requestId, status);
    } catch (err) {
      this.options.log?.warn({ err: (err as Error).message, requestId: channel.requestId }, 'status observer failed');
    }
  }

  /** Renders the batch once per distinct public base URL, then writes it to every attached subscriber. */
  private fanOut(channel: Channel, batch: string): void {
    if (batch === '' || channel.state === 'ended') return;
    const rendered = new Map<string, string>();
    for (const member of [...channel.members]) {
      if (!member.sink || member.urlBase === undefined) continue;
      let text = rendered.get(member.urlBase);
      if (text === undefined) {
        text = this.render(channel, batch, member.urlBase);
        rendered.set(member.urlBase, text);
      }
      this.deliver(channel, member, text);
    }
  }

  private deliver(channel: Channel, member: Member, text: string): void {
    const sink = member.sink;
    if (!sink || text === '') return;
    sink.write(text);
    if (sink.buffered > this.maxBufferedBytes) {
      this.options.log?.warn({ requestId: channel.requestId, buffered: sink.buffered }, 'status stream subscriber too slow: disconnected');
      sink.drop();
      this.leave(channel, member);
    }
  }

  /**
   * Complete events (as upstream sent them) with the queue URLs pointing at `urlBase`, token
   * scrubbed. Only status objects go out, written anew (so no JSON escape can spell the token),
   * with keep-alive comments; any other data and every other field (`id:`, `event:`), which fal's
   * clients do not read, are left out.
   */
  private render(channel: Channel, events: string, urlBase: string): string {
    const rewriter = new SseRewriter(
      (data) => {
        const status = parseStatus(data);
        if (!status) return undefined;
        rewriteQueueUrls(status, urlBase, channel.requestId);
        return JSON.stringify(status);
      },
      Number.POSITIVE_INFINITY,
      true,
    );
    return this.options.upstream.scrubText(rewriter.push(Buffer.from(events)) + rewriter.flush());
  }

  private leave(channel: Channel, member: Member): void {
    if (!channel.members.delete(member)) return;
    member.signal.removeEventListener('abort', member.onAbort);
    member.finish();
    if (channel.members.size === 0 && channel.state !== 'ended') {
      this.forget(channel);
      channel.abort.abort();
    }
  }

  /** The upstream stream is over (ended, failed or answered non-200): every subscriber ends with it. */
  private end(channel: Channel): void {
    if (channel.state === 'ended') return;
    this.forget(channel);
    for (const member of channel.members) {
      member.signal.removeEventListener('abort', member.onAbort);
      if (member.sink) closeSink(channel, member.sink);
      member.finish();
    }
    channel.members.clear();
  }

  private forget(channel: Channel): void {
    channel.state = 'ended';
    if (this.channels.get(channel.key) === channel) this.channels.delete(channel.key);
  }
}

/** A `data:` payload that is a JSON object (a status), or undefined. */
function parseStatus(data: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(data);
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
