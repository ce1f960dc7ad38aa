/**
 * Failed SSH authentications per source address: a token bucket each, `burst`
 * failures deep, one token back every `refillMs`. An address whose bucket is empty is
 * refused at accept (before key exchange, so a flood costs vspc almost nothing and
 * slows no one else) until a token is back. Successful logins cost nothing. Pure: the
 * clock comes in as `now`.
 */
export interface BucketOptions {
  burst: number;
  refillMs: number;
  /** Addresses tracked at most; past this the fullest are forgotten first (a full bucket is no different from none). */
  maxAddresses?: number;
}

interface Bucket {
  tokens: number;
  /** When `tokens` was last brought up to date. */
  at: number;
}

export class FailureBuckets {
  private readonly buckets = new Map<string, Bucket>();
  private readonly maxAddresses: number;

  constructor(private readonly o: BucketOptions) {
    this.maxAddresses = o.maxAddresses ?? 100_000;
  }

  get size(): number {
    return this.buckets.size;
  }

  /** Whether the address may try (it has a token left). */
  allows(address: string, now = Date.now()): boolean {
    const b = this.buckets.get(address);
    return !b || this.refill(b, now) >= 1;
  }

  /** Counts a failure; returns false when that emptied the bucket (the address is now refused). */
  fail(address: string, now = Date.now()): boolean {
    let b = this.buckets.get(address);
    if (!b) {
      if (this.buckets.size >= this.maxAddresses) this.prune(now);
      b = { tokens: this.o.burst, at: now };
      this.buckets.set(address, b);
    }
    this.refill(b, now);
    b.tokens = Math.max(0, b.tokens - 1);
    return b.tokens >= 1;
  }

  /** Gives back `n` tokens (a connection that failed with other keys, then logged in). */
  refund(address: string, n: number, now = Date.now()): void {
    const b = this.buckets.get(address);
    if (!b || n <= 0) return;
    this.refill(b, now);
    b.tokens = Math.min(this.o.burst, b.tokens + n);
  }

  /** ms until the address may try again (0: now). */
  retryAfter(address: string, now = Date.now()): number {
    const b = this.buckets.get(address);
    if (!b || this.refill(b, now) >= 1) return 0;
    return Math.ceil((1 - b.tokens) * this.o.refillMs);
  }

  /** Forgets addresses whose bucket is full again; if still too many, the oldest. */
  prune(now = Date.now()): void {
    for (const [a, b] of this.buckets) if (this.refill(b, now) >= this.o.burst) this.buckets.delete(a);
    while (this.buckets.size >= this.maxAddresses) {
      const oldest = this.buckets.keys().next();
      if (oldest.done) break;
      this.buckets.delete(oldest.value);
    }
  }

  private refill(b: Bucket, now: number): number {
    if (now > b.at) {
      b.tokens = Math.min(this.o.burst, b.tokens + (now - b.at) / this.o.refillMs);
      b.at = now;
    }
    return b.tokens;
  }
}
