/** A line end as server-sent events have it: CRLF, LF, or a CR alone. */
const LINE_END = /\r\n|\r(?!\n)|\n/;
/** Two line ends in a row: the end of an event (searched from `lastIndex`). */
const EVENT_END = new RegExp(`(?:${LINE_END.source})(?:${LINE_END.source})`, 'g');
/** The longest event end (CRLF CRLF) less one: how far back a new chunk may complete one. */
const EVENT_END_OVERLAP = 3;

/**
 * Re-writes a server-sent-events stream event by event: each event's `data` (a fal status
 * object) goes through `rewrite`, which may also drop the event (undefined); comments
 * (keep-alives) and other fields (`id:`, `event:`, `retry:`) pass as they came, unless
 * `dataOnly`: then only data goes out, and an event of comments only becomes one `: keep-alive`.
 * Lines may end in CRLF, LF or a lone CR, as the format allows. Bytes are buffered only up to the
 * end of the current event.
 */
export class SseRewriter {
  /**
   * The current event's text so far, in the pieces it came in (holding no event end): joined only
   * once the event ends, so an event in many chunks costs one pass over it, not one per chunk.
   */
  private pieces: string[] = [];
  private pendingLength = 0;
  /** The last few characters of the pending text, where an event end may begin. */
  private tail = '';
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
    if (this.pendingLength > this.maxEventBytes) throw new Error(`upstream event larger than ${this.maxEventBytes} bytes`);
    return out;
  }

  /**
   * The events still to come when the stream ends. An unterminated last event is passed on
   * terminated, as the status it holds is taken for one (a COMPLETED cut short of its blank line).
   */
  flush(): string {
    let out = this.take(this.decoder.decode());
    const rest = this.pieces.join('');
    this.pieces = [];
    this.pendingLength = 0;
    this.tail = '';
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
    if (text === '') return '';
    // The pending text holds no event end: one can only end in the new text, beginning at most
    // EVENT_END_OVERLAP characters before it.
    const probe = this.tail + text;
    EVENT_END.lastIndex = 0;
    if (!EVENT_END.test(probe)) {
      this.pieces.push(text);
      this.pendingLength += text.length;
      this.tail = probe.slice(-EVENT_END_OVERLAP);
      return '';
    }
    let pending = this.pieces.join('') + text;
    let from = Math.max(0, this.pendingLength - EVENT_END_OVERLAP);
    this.pieces = [];
    this.pendingLength = 0;
    this.tail = '';
    let out = '';
    for (;;) {
      EVENT_END.lastIndex = from;
      const match = EVENT_END.exec(pending);
      if (!match) break;
      const event = pending.slice(0, match.index);
      const end = match.index + match[0].length;
      // Ended at a CR with nothing after it yet: that CR may be the first half of a CRLF.
      if (end === pending.length && pending.endsWith('\r')) this.skipLf = true;
      pending = pending.slice(end);
      from = 0;
      const kept = this.transform(event);
      if (kept !== undefined) out += `${kept}\n\n`;
    }
    if (pending !== '') {
      this.pieces.push(pending);
      this.pendingLength = pending.length;
      this.tail = pending.slice(-EVENT_END_OVERLAP);
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
