import { errors } from '../errors.js';

export type CircuitState = 'closed' | 'open' | 'half_open';

export interface CircuitBreakerOptions {
  /** Consecutive failures that open the circuit. */
  threshold: number;
  /** How long an open circuit fails fast before letting one probe through (ms). */
  cooldownMs: number;
  now?: () => number;
  onStateChange?: (state: CircuitState) => void;
}

/**
 * Stops piling requests onto an upstream that keeps failing: after `threshold` consecutive
 * failures every call fails fast (503 with Retry-After) for `cooldownMs`, then a single probe is
 * let through; its success closes the circuit, its failure opens it for another cool-down.
 */
export class CircuitBreaker {
  private failures = 0;
  private openedAt: number | undefined;
  private probing = false;
  private readonly now: () => number;

  constructor(private readonly options: CircuitBreakerOptions) {
    this.now = options.now ?? Date.now;
  }

  get state(): CircuitState {
    if (this.openedAt === undefined) return 'closed';
    return this.now() - this.openedAt >= this.options.cooldownMs ? 'half_open' : 'open';
  }

  /**
   * Throws the fail-fast error when the call must not go upstream. Returns whether this call is
   * the half-open probe (what `release` needs to know).
   */
  before(): boolean {
    if (this.openedAt === undefined) return false;
    const remaining = this.openedAt + this.options.cooldownMs - this.now();
    if (remaining > 0 || this.probing) {
      throw Object.assign(new errors.UpstreamCircuitOpen(), {
        headers: { 'retry-after': String(Math.max(1, Math.ceil(remaining / 1000))) },
      });
    }
    this.probing = true;
    this.options.onStateChange?.('half_open');
    return true;
  }

  success(): void {
    const wasOpen = this.openedAt !== undefined;
    this.failures = 0;
    this.openedAt = undefined;
    this.probing = false;
    if (wasOpen) this.options.onStateChange?.('closed');
  }

  /**
   * The call ended without saying anything about the upstream's health (the caller left while it
   * was opening, the request could not be built, the answer was over the size limit). If it was
   * the probe (`before` returned true), the next call may probe again; a call that started
   * before the circuit opened frees nobody's probe. Nothing else changes.
   */
  release(wasProbe: boolean): void {
    if (wasProbe) this.probing = false;
  }

  failure(): void {
    this.failures++;
    if (this.probing || (this.openedAt === undefined && this.failures >= this.options.threshold)) {
      this.openedAt = this.now();
      this.probing = false;
      this.options.onStateChange?.('open');
    }
  }
}
