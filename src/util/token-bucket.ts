/**
 * Token buckets keyed by a string (a source address): each key may spend `burst`
 * tokens at once and earns `ratePerSecond` back, up to `burst`. Pure: time enters as
 * the `now` argument (ms on any monotonic clock). Importable from every layer.
 */

export interface TokenBucketOptions {
  /** Tokens earned per second; 0 = none after the burst. */
  ratePerSecond: number;
  /** Most tokens a key holds (and what a new key starts with); at least 1. */
  burst: number;
  /**
   * Most keys remembered. A key whose bucket has refilled is the same as a key never
   * seen, so those are dropped first; past the bound the least recently used go too
   * (they then start full again: a bound on memory, not on what a flood can spend).
   */
  maxKeys?: number;
}

interface Bucket {
  tokens: number;
  /** `now` of the last refill. */
  at: number;
}

export class TokenBuckets {
  private readonly buckets = new Map<string, Bucket>();
  private readonly maxKeys: number;

  constructor(private readonly options: TokenBucketOptions) {
    this.maxKeys = options.maxKeys ?? 10_000;
  }

  /** Spend one token of `key` at `now` (ms). False when its bucket is empty (nothing is spent). */
  take(key: string, now: number): boolean {
    const { ratePerSecond, burst } = this.options;
    let b = this.buckets.get(key);
    if (b) {
      this.buckets.delete(key); // re-inserted below: Map order is least recently used first
      b.tokens = Math.min(burst, b.tokens + (Math.max(0, now - b.at) * ratePerSecond) / 1000);
      b.at = now;
    } else {
      b = { tokens: burst, at: now };
    }
    const ok = b.tokens >= 1;
    if (ok) b.tokens -= 1;
    this.buckets.set(key, b);
    if (this.buckets.size > this.maxKeys) this.prune(now);
    return ok;
  }

  /** Gives back a token `take` spent on `key` (the thing it paid for turned out free); never past `burst`. */
  refund(key: string): void {
    const b = this.buckets.get(key);
    if (b) b.tokens = Math.min(this.options.burst, b.tokens + 1);
  }

  /** Keys remembered (for tests and metrics). */
  get size(): number {
    return this.buckets.size;
  }

  private prune(now: number): void {
    const { ratePerSecond, burst } = this.options;
    for (const [k, b] of this.buckets) {
      if (b.tokens + (Math.max(0, now - b.at) * ratePerSecond) / 1000 >= burst) this.buckets.delete(k);
    }
    for (const k of this.buckets.keys()) {
      if (this.buckets.size <= this.maxKeys) break;
      this.buckets.delete(k);
    }
  }
}
