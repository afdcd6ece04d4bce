/**
 * Reconnect delays: exponential growth up to a ceiling, with jitter so that
 * many clients cut off by the same gateway restart do not all come back in
 * the same instant.
 */

export interface BackoffOptions {
  /** Delay before the first retry, in ms. */
  initialMs: number;
  /** Ceiling for any delay, in ms. */
  maxMs: number;
  /** Growth per failed attempt. */
  factor: number;
  /**
   * Share of each delay that is randomised, 0..1. With 0.5 a nominal delay d
   * becomes a value in [d/2, d].
   */
  jitter: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 500, maxMs: 10_000, factor: 2, jitter: 0.5 };

export class Backoff {
  private attempt = 0;

  constructor(
    private readonly options: BackoffOptions = DEFAULT_BACKOFF,
    private readonly random: () => number = Math.random,
  ) {}

  /** How many delays were handed out since the last reset. */
  get attempts(): number {
    return this.attempt;
  }

  /** The delay before the next attempt; each call grows the following one. */
  next(): number {
    const { initialMs, maxMs, factor, jitter } = this.options;
    const nominal = Math.min(maxMs, initialMs * factor ** this.attempt);
    this.attempt += 1;
    return Math.round(nominal * (1 - jitter * this.random()));
  }

  /** Called once a connection is established, so the next outage starts small again. */
  reset(): void {
    this.attempt = 0;
  }
}
