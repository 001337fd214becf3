/**
 * Runner logs for `?logs=1`. They are a fixed script laid out over the run, so a poller sees
 * entries appear as time passes (as with a real runner) while tests still get the same entries
 * for the same clock readings.
 */

export interface LogEntry {
  message: string;
  level: 'INFO';
  source: 'USER';
  timestamp: string;
}

export interface LogScript {
  /** When the runner picked the job up. */
  startedAt: number;
  /** Planned duration of the run. */
  runMs: number;
  /** Logs stop here: the current time, or the cancel time if earlier. */
  until: number;
  /** Denoising steps of the run (the input's num_inference_steps, default 28). */
  steps: number;
  /** The model rejected the input: it stops right after looking at it. */
  rejected: boolean;
}

export function runnerLogs({ startedAt, runMs, until, steps, rejected }: LogScript): LogEntry[] {
  const script: [fraction: number, message: string][] = rejected
    ? [
        [0, 'Validating input'],
        [1, 'Input validation failed'],
      ]
    : [
        [0, 'Loading LoRA weights'],
        [0.1, `Starting inference with ${steps} steps`],
        ...[0.25, 0.5, 0.75, 1].map(
          (q): [number, string] => [0.1 + 0.8 * q, `Step ${Math.max(1, Math.round(steps * q))}/${steps}`],
        ),
        [1, 'Inference finished'],
      ];
  const entries: LogEntry[] = [];
  let last = '';
  for (const [fraction, message] of script) {
    const at = startedAt + Math.round(runMs * fraction);
    if (at > until) break;
    // Few steps can round two quarter marks onto the same step: log it once.
    if (message === last) continue;
    last = message;
    entries.push({ message, level: 'INFO', source: 'USER', timestamp: new Date(at).toISOString() });
  }
  return entries;
}
