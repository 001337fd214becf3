/**
 * Re-writes a server-sent-events stream event by event: each event's `data` (a fal status
 * object) goes through `rewrite`; comments (keep-alives) and other fields pass as they came.
 * Bytes are buffered only up to the end of the current event.
 */
export class SseRewriter {
  private pending = '';
  private readonly decoder = new TextDecoder();

  constructor(
    private readonly rewrite: (data: string) => string,
    /** An upstream that never ends an event must not grow this buffer without bound. */
    private readonly maxEventBytes = 1024 * 1024,
  ) {}

  /** Feeds bytes; returns the complete events they finish, rewritten. */
  push(chunk: Uint8Array): string {
    this.pending += this.decoder.decode(chunk, { stream: true });
    let out = '';
    for (let end = this.eventEnd(); end !== -1; end = this.eventEnd()) {
      const [event, separator] = [this.pending.slice(0, end.index), this.pending.slice(end.index, end.index + end.length)];
      this.pending = this.pending.slice(end.index + end.length);
      out += this.transform(event) + separator;
    }
    if (this.pending.length > this.maxEventBytes) throw new Error(`upstream event larger than ${this.maxEventBytes} bytes`);
    return out;
  }

  /** Whatever is left when the stream ends (an unterminated last event). */
  flush(): string {
    const rest = this.pending + this.decoder.decode();
    this.pending = '';
    return rest === '' ? '' : this.transform(rest);
  }

  private eventEnd(): { index: number; length: number } | -1 {
    const match = /\r?\n\r?\n/.exec(this.pending);
    return match ? { index: match.index, length: match[0].length } : -1;
  }

  private transform(event: string): string {
    const lines = event.split(/\r?\n/);
    const data = lines.filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, ''));
    if (data.length === 0) return event;
    const others = lines.filter((l) => !l.startsWith('data:'));
    // Each line of the (rewritten) data is its own data: line, as the format requires.
    const rewritten = this.rewrite(data.join('\n')).split('\n').map((line) => `data: ${line}`);
    return [...others, ...rewritten].join('\n');
  }
}
