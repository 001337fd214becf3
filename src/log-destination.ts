import pino from 'pino';

/** Characters gathered before they are written, and the longest a line waits for its batch (ms). */
const BATCH_CHARS = 16_384;
const MAX_DELAY_MS = 250;

export interface LogDestination {
  stream: { write(line: string): void };
  /** Writes whatever is still buffered, synchronously (before the process exits). */
  flushSync(): void;
}

/**
 * Where the server's log lines go (stdout, or a file for the benchmark): written asynchronously
 * and in batches of about 16 KiB, so under load one write carries some sixty lines instead of
 * one write per line. A line never waits more than 250 ms for its batch.
 *
 * Lines are gathered here and joined once per batch before SonicBoom (pino's destination)
 * writes them. Handed lines one by one, SonicBoom measures the byte length of its whole pending
 * buffer on every line, which under load cost more than making the line.
 */
export function createLogDestination(dest: number | string = 1): LogDestination {
  const sonic = pino.destination({ dest, sync: false, maxWrite: 4 * BATCH_CHARS });
  let lines: string[] = [];
  let size = 0;
  const handOn = () => {
    if (lines.length === 0) return;
    const text = lines.length === 1 ? lines[0]! : lines.join('');
    lines = [];
    size = 0;
    sonic.write(text);
  };
  const timer = setInterval(() => {
    try {
      handOn();
    } catch {
      // Already closed (shutting down): flushSync has written what it could.
    }
  }, MAX_DELAY_MS);
  timer.unref();
  return {
    stream: {
      write(line: string) {
        lines.push(line);
        size += line.length;
        if (size >= BATCH_CHARS) handOn();
      },
    },
    flushSync: () => {
      clearInterval(timer);
      handOn();
      try {
        sonic.flushSync();
      } catch {
        // Nothing buffered is left to lose when the destination is already gone.
      }
    },
  };
}
