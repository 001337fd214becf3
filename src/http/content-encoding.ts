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

/** Charsets a JSON body may be declared in: UTF-8, and US-ASCII, which is a subset of it. */
const READABLE_CHARSET = /^(utf-?8|us-ascii)$/i;

/**
 * The `charset` parameter of a Content-Type, read as RFC 9110 writes parameters (`; name=token`
 * or `; name="quoted string"`), so a `charset=` inside another parameter's quoted value is not
 * taken for it. Undefined when there is none.
 */
export function charsetOf(contentType: string): string | undefined {
  let i = contentType.indexOf(';');
  while (i !== -1 && i < contentType.length) {
    const rest = /^;[ \t]*([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]*=[ \t]*/.exec(contentType.slice(i));
    if (!rest) return undefined;
    const name = rest[1]!.toLowerCase();
    let j = i + rest[0].length;
    let value = '';
    if (contentType[j] === '"') {
      for (j++; j < contentType.length && contentType[j] !== '"'; j++) value += contentType[j] === '\\' ? contentType[++j] ?? '' : contentType[j];
      j++;
    } else {
      for (; j < contentType.length && contentType[j] !== ';' && contentType[j] !== ' ' && contentType[j] !== '\t'; j++) value += contentType[j];
    }
    if (name === 'charset') return value;
    i = contentType.indexOf(';', j);
  }
  return undefined;
}

/**
 * JSON is UTF-8 (RFC 8259), and the gateway reads it so. A body declared in another charset
 * (`application/json; charset=utf-16le`) would be read as the wrong characters: refused.
 */
export function unsupportedCharset(headers: IncomingHttpHeaders): Error | undefined {
  const type = headers['content-type'] ?? '';
  // The common case, a bare `application/json`, costs one scan for a parameter.
  if (!type.includes(';')) return undefined;
  const charset = charsetOf(type);
  if (charset === undefined || charset === '' || READABLE_CHARSET.test(charset)) return undefined;
  return new errors.UnsupportedCharset(charset.slice(0, 64));
}
