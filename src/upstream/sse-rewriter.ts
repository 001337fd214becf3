/** A line end as server-sent events have it: CRLF, LF, or a CR alone. */
const LINE_END = /\r\n|\r(?!\n)|\n/;
/** Two line ends in a row: the end of an event. */
const EVENT_END = new RegExp(`(?:${LINE_END.source})(?:${LINE_END.source})`);

/**
 * Re-writes a server-sent-events stream event by event: each event's `data` (a fal status
 * object) goes through `rewrite`, which may also drop the event (undefined); comments
 * (keep-alives) and other fields (`id:`, `event:`, `retry:`) pass as they came, unless
 * `dataOnly`: then only data goes out, and an event of comments only becomes one `: keep-alive`.
 * Lines may end in CRLF, LF or a lone CR, as the format allows. Bytes are buffered only up to the
 * end of the current event.
 */
export class SseRewriter {
  private pending = '';
  private readonly decoder = new TextDecoder();
  /** An event ended at a CR last in its chunk: an LF first in the next one is the rest of that CRLF. */
  private skipLf = false;

  constructor(
    private readonly rewrite: (data: string) => string | undefined,
    /** An upstream that never ends an event must not grow this buffer without bound. */
    private readonly maxEventBytes = 1024 * 1024,
    /** Leave out every field but `data:` (and comments): what fal's clients read of a status event. */
    private readonly dataOnly = false,
  ) {}

  /** Feeds bytes; returns the complete events they finish, rewritten. */
  push(chunk: Uint8Array): string {
    const out = this.take(this.decoder.decode(chunk, { stream: true }));
    if (this.pending.length > this.maxEventBytes) throw new Error(`upstream event larger than ${this.maxEventBytes} bytes`);
    return out;
  }

  /**
   * The events still to come when the stream ends. An unterminated last event is passed on
   * terminated, as the status it holds is taken for one (a COMPLETED cut short of its blank line).
   */
  flush(): string {
    let out = this.take(this.decoder.decode());
    const rest = this.pending;
    this.pending = '';
    const kept = rest === '' ? undefined : this.transform(rest);
    if (kept !== undefined) out += `${kept}\n\n`;
    return out;
  }

  /** Adds decoded text; returns the events it completes, each written with LF line ends. */
  private take(text: string): string {
    if (this.skipLf && text !== '') {
      if (text.startsWith('\n')) text = text.slice(1);
      this.skipLf = false;
    }
    this.pending += text;
    let out = '';
    for (let match = EVENT_END.exec(this.pending); match; match = EVENT_END.exec(this.pending)) {
      const event = this.pending.slice(0, match.index);
      const end = match.index + match[0].length;
      // Ended at a CR with nothing after it yet: that CR may be the first half of a CRLF.
      if (end === this.pending.length && this.pending.endsWith('\r')) this.skipLf = true;
      this.pending = this.pending.slice(end);
      const kept = this.transform(event);
      if (kept !== undefined) out += `${kept}\n\n`;
    }
    return out;
  }

  /** The event rewritten, or undefined to leave it out. */
  private transform(event: string): string | undefined {
    const lines = event.split(LINE_END);
    const data = lines.filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, ''));
    if (data.length === 0) {
      if (!this.dataOnly) return lines.join('\n');
      return lines.some((l) => l.startsWith(':')) ? ': keep-alive' : undefined;
    }
    const rewritten = this.rewrite(data.join('\n'));
    if (rewritten === undefined) return undefined;
    const others = this.dataOnly ? [] : lines.filter((l) => !l.startsWith('data:'));
    // Each line of the (rewritten) data is its own data: line, as the format requires.
    return [...others, ...rewritten.split('\n').map((line) => `data: ${line}`)].join('\n');
  }
}
