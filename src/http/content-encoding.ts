import type { IncomingHttpHeaders } from 'node:http';
import { errors } from '../errors.js';

/**
 * The gateway reads request bodies as sent: a compressed one (Content-Encoding: gzip, br, ...)
 * would be parsed as garbage and answered with a confusing JSON error quoting binary bytes.
 * It is refused instead, with a 415 that says what to do.
 */
export function unsupportedEncoding(headers: IncomingHttpHeaders): Error | undefined {
  const encoding = headers['content-encoding'];
  if (encoding === undefined || /^\s*(identity)?\s*$/i.test(encoding)) return undefined;
  return new errors.UnsupportedEncoding(encoding.slice(0, 64));
}

/**
 * JSON is UTF-8 (RFC 8259), and the gateway reads it so. A body declared in another charset
 * (`application/json; charset=utf-16le`) would be read as the wrong characters: refused.
 */
export function unsupportedCharset(headers: IncomingHttpHeaders): Error | undefined {
  const type = headers['content-type'] ?? '';
  // The common case, a bare `application/json`, costs one scan for a parameter.
  if (!type.includes(';')) return undefined;
  const charset = /;\s*charset\s*=\s*"?([^";\s]*)/i.exec(type)?.[1];
  if (charset === undefined || /^utf-?8$/i.test(charset)) return undefined;
  return new errors.UnsupportedCharset(charset.slice(0, 64));
}
