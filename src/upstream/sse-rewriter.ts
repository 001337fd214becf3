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

  constructor(
    private readonly rewrite: (data: string) => string | undefined,
    /** An upstream that never ends an event must not grow this buffer without bound. */
    private readonly maxEventBytes = 1024 * 1024,
    /** Leave out every field but `data:` (and comments): what fal's clients read of a status event. */
    private readonly dataOnly = false,
  ) {}

  /** Feeds bytes; returns the complete events they finish, rewritten. */
  push(chunk: Uint8Array): string {
    this.pending += this.decoder.decode(chunk, { stream: true });
    let out = '';
    for (let end = this.eventEnd(); end !== -1; end = this.eventEnd()) {
      const event = this.pending.slice(0, end.index);
      this.pending = this.pending.slice(end.index + end.length);
      const kept = this.transform(event);
      // Written with LF line ends, whatever the upstream used.
      if (kept !== undefined) out += `${kept}\n\n`;
    }
    if (this.pending.length > this.maxEventBytes) throw new Error(`upstream event larger than ${this.maxEventBytes} bytes`);
    return out;
  }

  /** Whatever is left when the stream ends (an unterminated last event). */
  flush(): string {
    const rest = this.pending + this.decoder.decode();
    this.pending = '';
    return rest === '' ? '' : (this.transform(rest) ?? '');
  }

  private eventEnd(): { index: number; length: number } | -1 {
    const match = EVENT_END.exec(this.pending);
    if (!match) return -1;
    const end = match.index + match[0].length;
    // A CR last in what has arrived may be the first half of a CRLF still on its way.
    if (end === this.pending.length && this.pending.endsWith('\r')) return -1;
    return { index: match.index, length: match[0].length };
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
