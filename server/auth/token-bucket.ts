/**
 * A token bucket: `rate` tokens a second, holding at most `burst`. Time is read from `now`
 * (milliseconds) so the arithmetic does not depend on timers.
 */
export class TokenBucket {
  #tokens: number;
  #at: number;

  constructor(
    readonly rate: number,
    readonly burst: number,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.#tokens = burst;
    this.#at = now();
  }

  /** Takes `n` tokens and returns 0, or takes nothing and returns the milliseconds until `n` are there. */
  take(n = 1): number {
    const now = this.now();
    this.#tokens = Math.min(this.burst, this.#tokens + ((now - this.#at) / 1000) * this.rate);
    this.#at = now;
    if (this.#tokens >= n) {
      this.#tokens -= n;
      return 0;
    }
    return Math.ceil(((n - this.#tokens) / this.rate) * 1000);
  }
}
