import pino from 'pino';

/** Bytes gathered before a write, and the longest a line waits for its batch (ms). */
const BATCH_BYTES = 4096;
const MAX_DELAY_MS = 250;

export interface LogDestination {
  stream: { write(line: string): void };
  /** Writes whatever is still buffered, synchronously (before the process exits). */
  flushSync(): void;
}

/**
 * Where the server's log lines go (stdout, or a file for the benchmark): written asynchronously
 * and in batches of about 4 KiB, so under load one write carries many lines instead of one
 * blocking write per line. A line never waits more than 250 ms for its batch.
 */
export function createLogDestination(dest: number | string = 1): LogDestination {
  const stream = pino.destination({ dest, sync: false, minLength: BATCH_BYTES });
  const timer = setInterval(() => {
    try {
      stream.flush();
    } catch {
      // Not open yet, or already closed: the next tick (or flushSync) writes it.
    }
  }, MAX_DELAY_MS);
  timer.unref();
  return {
    stream,
    flushSync: () => {
      clearInterval(timer);
      try {
        stream.flushSync();
      } catch {
        // Nothing buffered is left to lose when the destination is already gone.
      }
    },
  };
}
