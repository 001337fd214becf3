import type { Dispatcher } from 'undici';
import { errors } from '../errors.js';
import type { UpstreamOperation } from '../metrics.js';
import { upstreamPaths } from '../model.js';
import type { CircuitBreaker } from './circuit-breaker.js';
import { mapTransportError } from './error-mapping.js';
import { backoffDelay, isRetryableError, parseRetryAfter, RETRYABLE_STATUS, type RetryPolicy } from './retry.js';

export interface UpstreamClientOptions {
  baseUrl: string;
  token: string;
  authScheme: 'Key' | 'Bearer';
  dispatcher: Dispatcher;
  /** Pool for status streams, which hold a connection for a whole job; defaults to `dispatcher`. */
  streamDispatcher?: Dispatcher;
  maxResponseBytes: number;
  /** Upper bound on one upstream call, body included: a trickling upstream cannot hold a request. */
  requestTimeoutMs: number;
  readRetry: RetryPolicy;
  breaker?: CircuitBreaker;
  userAgent?: string;
  onRetry?: (info: { path: string; attempt: number; delayMs: number; reason: string }) => void;
  /** Called once per upstream attempt (retries included), for metrics. */
  onCall?: (info: UpstreamCallInfo) => void;
}

export interface UpstreamCallInfo {
  operation: UpstreamOperation;
  /** HTTP status class ('2xx', '4xx', '5xx', ...) or an error kind: timeout, connection, circuit_open, too_large, error. */
  outcome: string;
  seconds: number;
}

/** A bounded label for an answered call: its status class. */
export function statusClass(statusCode: number): string {
  return statusCode >= 100 && statusCode <= 599 ? `${Math.floor(statusCode / 100)}xx` : 'other';
}

/** A bounded label for a failed call: the kind of failure. */
export function errorKind(err: unknown): string {
  switch ((err as { code?: unknown } | null)?.code) {
    case 'FGW_UPSTREAM_CIRCUIT_OPEN':
      return 'circuit_open';
    case 'FGW_UPSTREAM_TIMEOUT':
      return 'timeout';
    case 'FGW_UPSTREAM_UNAVAILABLE':
    case 'FGW_UPSTREAM_CONNECTION_ERROR':
      return 'connection';
    case 'FGW_UPSTREAM_RESPONSE_TOO_LARGE':
      return 'too_large';
    default:
      return 'error';
  }
}

/**
 * fal's answer to a job that did not start within the caller's own X-Fal-Request-Timeout: the
 * caller's deadline, not a fault, and final (fal's clients never retry it).
 */
function isUserTimeout(response: { statusCode: number; headers: Record<string, string | string[] | undefined> }): boolean {
  return response.statusCode === 504 && response.headers['x-fal-request-timeout-type'] === 'user';
}

/**
 * What an answer tells the circuit breaker. Below 500, the upstream is up: success. A queue
 * answer (submit, status, cancel) with a 5xx: failure. A result's 5xx is the model's own answer
 * about one job (500 "CUDA out of memory"), and a user start timeout is the caller's own
 * deadline: neither says whether fal is up, so they are neutral. Counting them as failures let
 * one tenant's failing jobs open the circuit for every tenant; counting them as successes would
 * reset the count, or close an open circuit, while fal is down.
 */
function breakerVerdict(operation: UpstreamOperation, response: UpstreamResponse): 'success' | 'failure' | 'neutral' {
  if (response.statusCode < 500) return 'success';
  if (operation === 'result' || isUserTimeout(response)) return 'neutral';
  return 'failure';
}

export interface UpstreamResponse {
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
  contentType: string | undefined;
  body: Buffer;
  /** Removes the upstream token from text derived from this answer (e.g. re-serialised JSON). */
  redact(text: string): string;
}

type Method = 'GET' | 'POST' | 'PUT';

/**
 * Talks to fal's queue (or a reseller's copy of it). Every URL is built here from the configured
 * base URL and a validated request id, never taken from a client or an upstream body. The
 * token is added here and nowhere else. Reads (status, result) are retried within a deadline;
 * a submit or a cancel is sent exactly once. A circuit breaker fails fast while the upstream
 * keeps failing.
 */
export class UpstreamClient {
  private readonly origin: string;
  private readonly basePath: string;
  private readonly authorization: string;
  private readonly tokenBytes: Buffer;
  /**
   * The token as JSON writes it inside a string, when that differs (a token holding `"` or `\`):
   * a JSON body carries it so, and a caller's parser turns it back into the token.
   */
  private readonly escapedToken: string | undefined;
  private readonly escapedTokenBytes: Buffer | undefined;
  /**
   * Calls under way (submit, status, result, cancel; not streams), for abandonAll(): a list linked
   * through the exchanges themselves. (A Set of them measured about a tenth more CPU per submit
   * in npm run bench:ab.)
   */
  private readonly inFlight: CallList = { first: undefined };
  private readonly userAgent: string;

  constructor(private readonly options: UpstreamClientOptions) {
    const base = new URL(options.baseUrl);
    this.origin = base.origin;
    this.basePath = base.pathname.replace(/\/+$/, '');
    this.authorization = `${options.authScheme} ${options.token}`;
    this.tokenBytes = Buffer.from(options.token);
    const escaped = JSON.stringify(options.token).slice(1, -1);
    this.escapedToken = escaped === options.token ? undefined : escaped;
    this.escapedTokenBytes = this.escapedToken === undefined ? undefined : Buffer.from(this.escapedToken);
    this.userAgent = options.userAgent ?? 'fal-gateway';
  }

  /**
   * Ends every call still under way (at the end of the shutdown budget, before the process is
   * gone): each fails as its own deadline would, so its caller gets an answer and its log line
   * (a submit that was sent: 500 submit_outcome_unknown; one never sent: 503) rather than a
   * connection closed without a word.
   */
  abandonAll(reason: string): number {
    const calls: BufferedExchange[] = [];
    for (let call = this.inFlight.first; call; call = call.next) calls.push(call);
    for (const exchange of calls) exchange.abandon(reason);
    return calls.length;
  }

  submit(body: string, headers: Record<string, string>): Promise<UpstreamResponse> {
    return this.call('submit', 'POST', upstreamPaths.submit(), headers, body);
  }

  status(requestId: string, logs: boolean): Promise<UpstreamResponse> {
    return this.read('status', `${upstreamPaths.status(requestId)}?logs=${logs ? 1 : 0}`);
  }

  result(requestId: string): Promise<UpstreamResponse> {
    return this.read('result', upstreamPaths.result(requestId));
  }

  cancel(requestId: string): Promise<UpstreamResponse> {
    return this.call('cancel', 'PUT', upstreamPaths.cancel(requestId), {});
  }

  /**
   * Opens fal's status stream (SSE) without buffering it. A non-200 answer is read whole and
   * returned as `response` for the usual relay. The stream has no total deadline (a job may run
   * for minutes); the idle body timeout still applies, and fal sends keep-alives every 15 s.
   */
  async openStatusStream(
    requestId: string,
    logs: boolean,
    signal: AbortSignal,
  ): Promise<{ stream: AsyncIterable<Buffer>; headers: Dispatcher.ResponseData['headers'] } | { response: UpstreamResponse }> {
    const started = performance.now();
    let probe: boolean;
    try {
      probe = this.options.breaker?.before() ?? false;
    } catch (err) {
      this.reportCall('stream', errorKind(err), started);
      throw err;
    }
    let response: Dispatcher.ResponseData;
    try {
      response = await (this.options.streamDispatcher ?? this.options.dispatcher).request({
        origin: this.origin,
        path: `${this.basePath}${upstreamPaths.statusStream(requestId)}?logs=${logs ? 1 : 0}`,
        method: 'GET',
        headers: { accept: 'text/event-stream', 'user-agent': this.options.userAgent ?? 'fal-gateway', authorization: this.authorization },
        signal,
      });
    } catch (err) {
      const mapped = mapTransportError(err);
      // Every subscriber left while it was opening: the upstream did nothing wrong. Counting
      // that as a failure would let any caller open the circuit for everyone by hanging up.
      if (signal.aborted) {
        this.options.breaker?.release(probe);
        this.reportCall('stream', 'aborted', started);
        throw mapped;
      }
      if (isRetryableError(mapped)) this.options.breaker?.failure();
      else this.options.breaker?.release(probe);
      this.reportCall('stream', errorKind(mapped), started);
      throw mapped;
    }
    // Timed to the answer's head: the stream itself lasts as long as the job.
    this.reportCall('stream', statusClass(response.statusCode), started);
    if (response.statusCode >= 500) this.options.breaker?.failure();
    else this.options.breaker?.success();
    if (response.statusCode !== 200) {
      const body = this.scrub(await this.readBody(response));
      return {
        response: {
          statusCode: response.statusCode,
          headers: this.scrubHeaders(response.headers),
          contentType: this.contentTypeOf(response.headers),
          body,
          redact: (text: string) => this.scrubText(text),
        },
      };
    }
    // A 200 that is not an event stream (a proxy's page, a JSON body) cannot be relayed as one:
    // hijacked, the caller's connection would close without a status line.
    const type = response.headers['content-type'];
    if (typeof type !== 'string' || type.split(';')[0]!.trim().toLowerCase() !== 'text/event-stream') {
      // Dropped unread: its abort must not surface as an unhandled stream error.
      response.body.on('error', () => undefined).destroy();
      throw new errors.UpstreamBadResponse();
    }
    return { stream: response.body as AsyncIterable<Buffer>, headers: this.scrubHeaders(response.headers) };
  }

  private reportCall(operation: UpstreamOperation, outcome: string, started: number): void {
    this.options.onCall?.({ operation, outcome, seconds: (performance.now() - started) / 1000 });
  }

  /** Removes the upstream token from a piece of text (defence in depth, as for bodies). */
  scrubText(text: string): string {
    const scrubbed = text.includes(this.options.token) ? text.split(this.options.token).join('[redacted]') : text;
    const escaped = this.escapedToken;
    return escaped !== undefined && scrubbed.includes(escaped) ? scrubbed.split(escaped).join('[redacted]') : scrubbed;
  }

  private async read(operation: 'status' | 'result', path: string): Promise<UpstreamResponse> {
    const policy = this.options.readRetry;
    const deadline = Date.now() + policy.deadlineMs;
    for (let attempt = 0; ; attempt++) {
      let response: UpstreamResponse | undefined;
      let error: unknown;
      try {
        response = await this.call(operation, 'GET', path, {});
      } catch (err) {
        error = err;
      }
      const retryable = response ? RETRYABLE_STATUS.has(response.statusCode) && !isUserTimeout(response) : isRetryableError(error);
      const delay = parseRetryAfter(response?.headers['retry-after']) ?? backoffDelay(attempt, policy);
      if (!retryable || attempt >= policy.retries || Date.now() + delay >= deadline) {
        if (response) return response;
        throw error;
      }
      this.options.onRetry?.({ path, attempt: attempt + 1, delayMs: delay, reason: response ? `HTTP ${response.statusCode}` : String((error as Error).message) });
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }

  /** One upstream call through the circuit breaker, reported to `onCall`. */
  private async call(
    operation: UpstreamOperation,
    method: Method,
    path: string,
    extra: Record<string, string>,
    body?: string,
  ): Promise<UpstreamResponse> {
    const breaker = this.options.breaker;
    const started = performance.now();
    let response: UpstreamResponse;
    let probe: boolean;
    try {
      probe = breaker?.before() ?? false;
      try {
        response = await this.send(method, path, extra, body);
      } catch (err) {
        // Anything else (an answer over the size limit, a request that could not be built) says
        // nothing about the upstream being down, but must still end a half-open probe.
        if (isRetryableError(err)) breaker?.failure();
        else breaker?.release(probe);
        throw err;
      }
    } catch (err) {
      this.reportCall(operation, errorKind(err), started);
      throw err;
    }
    this.reportCall(operation, statusClass(response.statusCode), started);
    const verdict = breakerVerdict(operation, response);
    if (verdict === 'failure') breaker?.failure();
    else if (verdict === 'success') breaker?.success();
    else breaker?.release(probe);
    return response;
  }

  /**
   * One exchange, its answer read whole. undici's `dispatch` with a handler that collects the
   * body: no response stream, no async iterator and no AbortSignal per call (each costs more
   * than the rest of the call on the gateway's side). The total deadline is one timer, cleared
   * as soon as the answer is in.
   */
  private send(method: Method, path: string, extra: Record<string, string>, body?: string): Promise<UpstreamResponse> {
    return new Promise<UpstreamResponse>((resolve, reject) => {
      const exchange = new BufferedExchange(this.options.maxResponseBytes, this.options.requestTimeoutMs, (err, answer) => {
        exchange.unlink(this.inFlight);
        if (err) {
          reject(mapTransportError(err));
          return;
        }
        // Called from undici's parser: nothing may throw back into it.
        try {
          resolve(this.answer(answer!));
        } catch (failure) {
          reject(failure as Error);
        }
      });
      const headers: Record<string, string> = {
        ...extra,
        accept: 'application/json',
        'user-agent': this.userAgent,
        authorization: this.authorization,
      };
      if (body !== undefined) headers['content-type'] = 'application/json';
      exchange.link(this.inFlight);
      try {
        this.options.dispatcher.dispatch({ origin: this.origin, path: this.basePath + path, method, headers, body: body ?? null }, exchange);
      } catch (err) {
        exchange.fail(err as Error);
      }
    });
  }

  private answer({ statusCode, headers, body }: BufferedAnswer): UpstreamResponse {
    return {
      statusCode,
      headers: this.scrubHeaders(headers),
      contentType: this.contentTypeOf(headers),
      body: this.scrub(body),
      redact: (text) => this.scrubText(text),
    };
  }

  private async readBody(response: Dispatcher.ResponseData): Promise<Buffer> {
    const limit = this.options.maxResponseBytes;
    const declared = Number(response.headers['content-length']);
    if (Number.isFinite(declared) && declared > limit) {
      response.body.on('error', () => undefined).destroy();
      throw new errors.UpstreamResponseTooLarge(limit);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    try {
      for await (const chunk of response.body) {
        size += (chunk as Buffer).length;
        if (size > limit) {
          response.body.destroy();
          throw new errors.UpstreamResponseTooLarge(limit);
        }
        chunks.push(chunk as Buffer);
      }
    } catch (err) {
      throw mapTransportError(err);
    }
    return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
  }

  /** Defence in depth: an upstream that echoes our credentials must not hand them to a caller. */
  private scrub(body: Buffer): Buffer {
    if (!body.includes(this.tokenBytes) && (this.escapedTokenBytes === undefined || !body.includes(this.escapedTokenBytes))) return body;
    return Buffer.from(this.scrubText(body.toString('utf8')));
  }

  /**
   * The answer's content type, which is sent on with its body and may be logged: scrubbed like
   * the body (an echoed token in a parameter is replaced, the type itself kept).
   */
  private contentTypeOf(headers: Dispatcher.ResponseData['headers']): string | undefined {
    const contentType = headers['content-type'];
    if (typeof contentType !== 'string') return undefined;
    return contentType.includes(this.options.token) ? this.scrubText(contentType) : contentType;
  }

  private scrubHeaders(headers: Dispatcher.ResponseData['headers']): Dispatcher.ResponseData['headers'] {
    const token = this.options.token;
    const leaks = (value: string | string[] | undefined) => (Array.isArray(value) ? value.some((v) => v.includes(token)) : value?.includes(token) === true);
    let clean: Dispatcher.ResponseData['headers'] | undefined;
    for (const name in headers) {
      if (!leaks(headers[name])) continue;
      clean ??= { ...headers };
      delete clean[name];
    }
    return clean ?? headers;
  }

}

interface BufferedAnswer {
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/**
 * undici dispatch handler that reads an answer whole, within a byte limit and a total deadline,
 * and reports exactly once: the answer, or the error that ended the exchange.
 */
/** The head of a list of calls under way, linked through the calls themselves. */
interface CallList {
  first: BufferedExchange | undefined;
}

class BufferedExchange implements Dispatcher.DispatchHandler {
  /** Neighbours in the client's list of calls under way. */
  next: BufferedExchange | undefined = undefined;
  private previous: BufferedExchange | undefined = undefined;
  private controller: Dispatcher.DispatchController | undefined;
  private statusCode = 0;
  private headers: Record<string, string | string[] | undefined> = {};
  private chunks: Buffer[] = [];
  private size = 0;
  private done = false;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly limit: number,
    timeoutMs: number,
    private readonly report: (err: Error | undefined, answer?: BufferedAnswer) => void,
  ) {
    this.timer = setTimeout(() => this.abandon(`upstream call exceeded ${timeoutMs} ms`), timeoutMs);
  }

  link(list: CallList): void {
    this.next = list.first;
    if (list.first) list.first.previous = this;
    list.first = this;
  }

  unlink(list: CallList): void {
    if (this.previous) this.previous.next = this.next;
    else if (list.first === this) list.first = this.next;
    if (this.next) this.next.previous = this.previous;
    this.next = undefined;
    this.previous = undefined;
  }

  /**
   * Gives up on the exchange. Still waiting for a free connection (every one busy), nothing was
   * written, so nothing can have been queued: said so, a submit is refused as not sent, not as
   * "may exist". Once written, it ends as a timeout.
   */
  abandon(reason: string): void {
    if (this.controller === undefined) {
      this.fail(new errors.UpstreamUnavailable({ cause: new Error(`${reason} before an upstream connection became free`) }));
      return;
    }
    this.fail(new DOMException(reason, 'TimeoutError'));
  }

  /** Ends the exchange with `err` (and aborts it, if it is under way). */
  fail(err: Error): void {
    if (this.done) return;
    this.finish(err);
    this.controller?.abort(err);
  }

  /** Called as the request is about to be written on a connection (undici: just before its first byte). */
  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    // Ended before a connection was free (the deadline): abort it as it starts.
    if (this.done) controller.abort(new DOMException('upstream call abandoned', 'AbortError'));
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>): void {
    this.statusCode = statusCode;
    this.headers = headers;
    this.chunks = [];
    this.size = 0;
    const declared = Number(headers['content-length']);
    if (Number.isFinite(declared) && declared > this.limit) this.fail(new errors.UpstreamResponseTooLarge(this.limit));
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.done) return;
    this.size += chunk.length;
    if (this.size > this.limit) {
      this.fail(new errors.UpstreamResponseTooLarge(this.limit));
      return;
    }
    this.chunks.push(chunk);
  }

  onResponseEnd(): void {
    if (this.done) return;
    const { chunks, size } = this;
    this.finish(undefined, { statusCode: this.statusCode, headers: this.headers, body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size) });
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    this.finish(err);
  }

  private finish(err: Error | undefined, answer?: BufferedAnswer): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.timer);
    this.chunks = [];
    this.report(err, answer);
  }
}
