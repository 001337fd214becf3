/**
 * Re-writes a server-sent-events stream event by event: each event's `data` (a fal status
 * object) goes through `rewrite`, which may also drop the event (undefined); comments
 * (keep-alives) pass as they came, and other fields (`id:`, `event:`, `retry:`) too unless
 * `dataOnly`. Bytes are buffered only up to the end of the current event.
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
      const [event, separator] = [this.pending.slice(0, end.index), this.pending.slice(end.index, end.index + end.length)];
      this.pending = this.pending.slice(end.index + end.length);
      const kept = this.transform(event);
      if (kept !== undefined) out += kept + separator;
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
    const match = /\r?\n\r?\n/.exec(this.pending);
    return match ? { index: match.index, length: match[0].length } : -1;
  }

  /** The event rewritten, or undefined to leave it out. */
  private transform(event: string): string | undefined {
    const lines = event.split(/\r?\n/);
    const data = lines.filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, ''));
    const others = lines.filter((l) => !l.startsWith('data:') && (!this.dataOnly || l.startsWith(':')));
    if (data.length === 0) return this.dataOnly && others.length === 0 ? undefined : others.join('\n');
    const rewritten = this.rewrite(data.join('\n'));
    if (rewritten === undefined) return undefined;
    // Each line of the (rewritten) data is its own data: line, as the format requires.
    return [...others, ...rewritten.split('\n').map((line) => `data: ${line}`)].join('\n');
  }
}
