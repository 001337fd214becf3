import { errors } from '../errors.js';

// Failures before a connection exists: nothing reached the upstream.
const UNAVAILABLE = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_CLOSED', 'UND_ERR_DESTROYED']);
const TIMEOUT = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT']);

/** Errors after which the upstream cannot have received the request (a submit is safe to retry). */
export function nothingWasSent(err: unknown): boolean {
  const code = (err as { code?: string } | null)?.code;
  // FGW_UPSTREAM_MISCONFIGURED comes out of a call only when undici refused to build the request.
  return code === 'FGW_UPSTREAM_UNAVAILABLE' || code === 'FGW_UPSTREAM_CIRCUIT_OPEN' || code === 'FGW_UPSTREAM_MISCONFIGURED';
}

function codeOf(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && !code.startsWith('FGW_')) return code;
  }
  return undefined;
}

/** Maps a transport failure to the gateway error the caller sees, keeping the cause for the log. */
export function mapTransportError(err: unknown): Error {
  const own = (err as { code?: unknown } | null)?.code;
  if (err instanceof Error && typeof own === 'string' && own.startsWith('FGW_')) return err;
  const code = codeOf(err);
  // Our own total deadline (an abort with a TimeoutError) surfaces as an abort.
  const name = (err as { name?: string } | null)?.name;
  if (name === 'TimeoutError' || code === 'UND_ERR_ABORTED' || name === 'AbortError') return new errors.UpstreamTimeout({ cause: err });
  if (code && TIMEOUT.has(code)) return new errors.UpstreamTimeout({ cause: err });
  if (code && UNAVAILABLE.has(code)) return new errors.UpstreamUnavailable({ cause: err });
  // Thrown while undici builds the request, before any byte is written (its message names the
  // bad argument, never a header's value).
  if (code === 'UND_ERR_INVALID_ARG') return new errors.UpstreamRequestInvalid((err as Error).message, { cause: err });
  return new errors.UpstreamConnectionError({ cause: err });
}
