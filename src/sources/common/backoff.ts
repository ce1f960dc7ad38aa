/**
 * Capped exponential backoff with jitter, for every endpoint vspc maintains.
 *
 * delay(n) = min(maxMs, initialMs * factor^n) * (1 - jitter * U),  U uniform in [0, 1)
 *
 * The defaults and why:
 * - `initialMs` 100: a QEMU restart removes and re-creates its socket within a second
 *   or so; the first retries are cheap (a failed unix connect costs microseconds) and
 *   short, so a console is back almost as soon as its socket is.
 * - `factor` 2: a dead endpoint reaches the cap after six attempts (~3 s).
 * - `maxMs` 5000: the bound on the gap between an endpoint reappearing and vspc's
 *   next attempt. The target is "2,000 QEMU endpoints restarting at once (hypervisor
 *   restart) all stream again within 5 s of reappearing": jitter only ever *shortens*
 *   a delay, so no delay exceeds the cap, and the cap is the worst case. At the cap a
 *   dead endpoint costs one attempt per 2.5–5 s: 2,000 of them about 530 failed
 *   connects per second, which a unix socket shrugs off.
 * - `jitter` 0.5: delays at the cap spread over [2.5 s, 5 s], so 2,000 endpoints that
 *   failed together do not retry in lock-step (a thundering herd on the hypervisor's
 *   freshly started daemons).
 * - `resetAfterMs` 10000: a connection that lived at least 10 s was real; the next
 *   outage starts again at 100 ms. One that dies sooner (a peer that accepts and closes
 *   at once, a QEMU crashing in a loop) does not reset the delay, so such a peer is
 *   retried ever more slowly up to the cap instead of in a tight loop.
 *
 * A watcher that sees a socket file appear can skip the wait (EndpointRunner.kick()).
 */

export interface BackoffOptions {
  initialMs: number;
  factor: number;
  maxMs: number;
  /** Fraction of a delay that jitter may take away, 0 (none) to 1. */
  jitter: number;
  /** A connection that lived at least this long resets the delay. */
  resetAfterMs: number;
}

export const DEFAULT_BACKOFF: Readonly<BackoffOptions> = Object.freeze({
  initialMs: 100,
  factor: 2,
  maxMs: 5000,
  jitter: 0.5,
  resetAfterMs: 10_000,
});

/** Fills defaults and checks the numbers; throws RangeError on nonsense (the config layer validates first). */
export function backoffOptions(partial: Partial<BackoffOptions> = {}): BackoffOptions {
  const o = { ...DEFAULT_BACKOFF, ...partial };
  if (!(o.initialMs > 0) || !Number.isFinite(o.initialMs)) throw new RangeError(`backoff initialMs must be > 0 (got ${o.initialMs})`);
  if (!(o.factor >= 1) || !Number.isFinite(o.factor)) throw new RangeError(`backoff factor must be >= 1 (got ${o.factor})`);
  if (!(o.maxMs >= o.initialMs) || !Number.isFinite(o.maxMs)) throw new RangeError(`backoff maxMs must be >= initialMs (got ${o.maxMs})`);
  if (!(o.jitter >= 0 && o.jitter <= 1)) throw new RangeError(`backoff jitter must be within 0..1 (got ${o.jitter})`);
  if (!(o.resetAfterMs >= 0)) throw new RangeError(`backoff resetAfterMs must be >= 0 (got ${o.resetAfterMs})`);
  return o;
}

/** The checked options of each `Partial<BackoffOptions>` given: every runner of a manager shares one. */
const checked = new WeakMap<Partial<BackoffOptions>, Readonly<BackoffOptions>>();

function sharedOptions(partial: Partial<BackoffOptions> | undefined): Readonly<BackoffOptions> {
  if (!partial) return DEFAULT_BACKOFF;
  let o = checked.get(partial);
  if (!o) {
    o = Object.freeze(backoffOptions(partial));
    checked.set(partial, o);
  }
  return o;
}

export class Backoff {
  readonly options: Readonly<BackoffOptions>;
  private failures = 0;

  constructor(
    options?: Partial<BackoffOptions>,
    private readonly random: () => number = Math.random,
  ) {
    this.options = sharedOptions(options);
  }

  /** Consecutive delays handed out since the last reset. */
  get attempts(): number {
    return this.failures;
  }

  /** The un-jittered delay the next call to `next()` starts from. */
  get base(): number {
    const o = this.options;
    // Capped before it can overflow: factor^n grows without bound for a long outage.
    const exp = Math.min(this.failures, 64);
    return Math.min(o.maxMs, o.initialMs * Math.pow(o.factor, exp));
  }

  /** The next delay in ms (never above maxMs, never below base * (1 - jitter)). */
  next(): number {
    const base = this.base;
    this.failures++;
    const u = Math.min(Math.max(this.random(), 0), 1);
    return Math.max(1, Math.round(base * (1 - this.options.jitter * u)));
  }

  reset(): void {
    this.failures = 0;
  }
}
