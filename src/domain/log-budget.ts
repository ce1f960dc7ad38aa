/**
 * Log budgets: a `Logger` decorator that bounds how many lines one connection (or one
 * listener, or one endpoint) may write, so that a peer repeating a cheap message
 * cannot turn each few bytes it sends into a log line (floods of the log, and of the
 * event loop that formats and writes them; docs/security.md).
 *
 * A budget is a token bucket: `burst` lines at once, `perSecond` earned back. Past it
 * a line is counted, not written — unless it is the first line with that message on
 * this budget (a connection's "opened", "protocol error", "closed" lines are each
 * written once however spent the budget is; only repetitions are suppressed). While
 * lines are being suppressed, one summary line ("log lines suppressed for this
 * connection", with the count and the most frequent messages) is written once the
 * budget has had time to refill, and by `close()` (the connection ended).
 *
 * Lines at a level the logger does not write (debug at --log-level info) cost nothing
 * and spend nothing. Child loggers share their parent's budget.
 *
 * Lazy fields (domain/logger.ts `LazyFields`) pass through as they are: a function is
 * called by the logger underneath when the line is written, and never for a line the
 * budget suppresses (nor for one below the level).
 */
import { OnDemandLogger, type LazyFields, type LogFields, type LogLevel, type Logger } from './logger.js';

export interface LogBudget {
  /** Lines earned back per second. */
  readonly perSecond: number;
  /** Lines that may be written at once (and the most a budget saves up); at least 1. */
  readonly burst: number;
}

/**
 * One connection's lines (a VM connection, a console client, a broker connection, a
 * maintained source's endpoint): 20 at once, then 2 a second. A real ESXi host writes
 * fewer than 10 lines as it connects and identifies, a vMotion 3 to 5, a console client 2
 * to 4; a peer repeating a message gets 20 lines and then one every half second, and
 * a summary every 10 s.
 */
export const CONNECTION_LOG_BUDGET: LogBudget = Object.freeze({ perSecond: 2, burst: 20 });

/**
 * A listener's warnings that any connection causes once, at will (a person or a scanner
 * on the VM port: "not an ESXi host"; TLS on a plain port, or plain text on a TLS port;
 * refused admin requests): 50 at once, then 5 a second, shared by every connection of
 * the listener, with a summary every 10 s. A connection's own record (opened, closed and
 * why, at info) is not on this budget: one line per TCP connection is the connection's
 * cost, and the limits on unidentified connections bound how many there are at once.
 */
export const LISTENER_LOG_BUDGET: LogBudget = Object.freeze({ perSecond: 5, burst: 50 });

/** What a summary line says the budget was for. */
export type LogBudgetScope = 'connection' | 'listener' | 'endpoint';

export interface RateLimitOptions {
  /** Named in the summary line: "log lines suppressed for this <scope>". Default `connection`. */
  scope?: LogBudgetScope;
  /** The clock in ms (monotonic). Default `performance.now`. */
  now?: () => number;
  /** ms between summaries while lines are suppressed. Default: the time the budget takes to refill (burst / perSecond), at least 1 s. */
  summaryIntervalMs?: number;
}

/** A logger with a budget: `close()` writes what is left to summarise and lifts the budget. */
export interface BudgetedLogger extends Logger {
  /** Lines suppressed and not summarised yet. */
  readonly suppressed: number;
  /** Lines suppressed over the budget's life. */
  readonly suppressedTotal: number;
  /** The connection ended: write the summary now (if lines were suppressed); later lines are written as they come. Idempotent. */
  close(): void;
  child(fields: LazyFields): BudgetedLogger;
}

type Level = LogLevel;
const SEVERITY: Record<Level, number> = { error: 0, warn: 1, info: 2, debug: 3 };

/** Distinct messages remembered as "written once already"; past this every message is a repetition. */
const MAX_KINDS = 64;
/** Distinct messages counted by name in a summary; the rest are counted as `(other)`. */
const MAX_SUMMARY_MESSAGES = 8;

function emit(target: Logger, level: Level, message: string, fields: LazyFields | undefined): void {
  if (fields === undefined) target[level](message);
  else target[level](message, fields);
}

const monotonic = (): number => performance.now();

/** The state one budget's loggers (a logger and its children) share. */
class Budget {
  private tokens: number;
  private at: number;
  // Made on first use: a connection that writes a line or two (most) costs no Set or Map.
  private seen: Set<string> | null = null;
  private counts: Map<string, number> | null = null;
  private worst: Level | null = null;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  suppressed = 0;
  suppressedTotal = 0;
  private readonly now: () => number;
  private readonly intervalMs: number;
  private readonly scope: LogBudgetScope;

  constructor(
    private readonly root: Logger,
    private readonly budget: LogBudget,
    options: RateLimitOptions,
  ) {
    this.now = options.now ?? monotonic;
    this.scope = options.scope ?? 'connection';
    const refillMs = budget.perSecond > 0 ? (Math.max(1, budget.burst) / budget.perSecond) * 1000 : 10_000;
    this.intervalMs = options.summaryIntervalMs ?? Math.max(1000, refillMs);
    this.tokens = Math.max(1, budget.burst);
    this.at = this.now();
  }

  write(target: Logger, level: Level, message: string, fields: LazyFields | undefined): void {
    if (this.closed) {
      emit(target, level, message, fields);
      return;
    }
    // A line the logger would drop anyway costs nothing and spends nothing.
    if (!target.isLevelEnabled(level)) return;
    const seen = (this.seen ??= new Set());
    const fresh = !seen.has(message);
    if (this.take() || (fresh && seen.size < MAX_KINDS)) {
      if (fresh && seen.size < MAX_KINDS) seen.add(message);
      emit(target, level, message, fields);
      return;
    }
    this.suppressed++;
    this.suppressedTotal++;
    if (this.worst === null || SEVERITY[level] < SEVERITY[this.worst]) this.worst = level;
    const counts = (this.counts ??= new Map());
    const key = counts.has(message) || counts.size < MAX_SUMMARY_MESSAGES ? message : '(other)';
    counts.set(key, (counts.get(key) ?? 0) + 1);
    if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = null;
        this.summarise();
      }, this.intervalMs);
      this.timer.unref?.();
    }
  }

  close(): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.summarise();
    this.closed = true;
  }

  private take(): boolean {
    const now = this.now();
    const burst = Math.max(1, this.budget.burst);
    this.tokens = Math.min(burst, this.tokens + (Math.max(0, now - this.at) * this.budget.perSecond) / 1000);
    this.at = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  private summarise(): void {
    if (this.suppressed === 0) return;
    const fields: LogFields = {
      suppressed: this.suppressed,
      suppressedTotal: this.suppressedTotal,
      messages: Object.fromEntries(this.counts ?? []),
      budget: { perSecond: this.budget.perSecond, burst: this.budget.burst },
    };
    // As visible as the lines it stands for (warn for warn and error lines).
    const level: Level = this.worst === 'error' ? 'warn' : (this.worst ?? 'info');
    this.suppressed = 0;
    this.worst = null;
    this.counts?.clear();
    this.root[level](`log lines suppressed for this ${this.scope}`, fields);
  }
}

class BudgetedView implements BudgetedLogger {
  constructor(
    private readonly state: Budget,
    private readonly target: Logger,
  ) {}

  get suppressed(): number {
    return this.state.suppressed;
  }

  get suppressedTotal(): number {
    return this.state.suppressedTotal;
  }

  error(message: string, fields?: LazyFields): void {
    this.state.write(this.target, 'error', message, fields);
  }

  warn(message: string, fields?: LazyFields): void {
    this.state.write(this.target, 'warn', message, fields);
  }

  info(message: string, fields?: LazyFields): void {
    this.state.write(this.target, 'info', message, fields);
  }

  debug(message: string, fields?: LazyFields): void {
    this.state.write(this.target, 'debug', message, fields);
  }

  isLevelEnabled(level: LogLevel): boolean {
    return this.target.isLevelEnabled(level);
  }

  child(fields: LazyFields): BudgetedLogger {
    return new BudgetedView(this.state, this.target.child(fields));
  }

  close(): void {
    this.state.close();
  }
}

/** `logger` with a budget of lines (see the top of this file). Summaries go to `logger` itself. */
export function rateLimitedLogger(logger: Logger, budget: LogBudget, options: RateLimitOptions = {}): BudgetedLogger {
  return new BudgetedView(new Budget(logger, budget, options), logger);
}

/**
 * A budgeted logger made only when a line is written at an enabled level: until then
 * it is this one object (children: one more each). A VM connection made and closed
 * without a line at the configured level (a vMotion destination at `warn`, an idle VM
 * serial port) never makes its budget, its child loggers or their fields.
 */
class DeferredLogger extends OnDemandLogger<BudgetedLogger> implements BudgetedLogger {
  private real: BudgetedLogger | null = null;
  private closed = false;

  constructor(
    protected readonly levels: Logger,
    private readonly make: (() => BudgetedLogger) | LoggerMaker | null,
    private readonly parent: DeferredLogger | null,
    private readonly fields: LazyFields | null,
  ) {
    super();
  }

  protected target(): BudgetedLogger {
    if (this.real) return this.real;
    if (this.parent) {
      this.real = this.parent.target().child(this.fields ?? {});
    } else {
      const make = this.make!;
      this.real = typeof make === 'function' ? make() : make.makeLogger();
      // Closed before its first line: the line is written as it comes (see BudgetedLogger.close).
      if (this.closed) this.real.close();
    }
    return this.real;
  }

  get suppressed(): number {
    return this.real ? this.real.suppressed : (this.parent?.suppressed ?? 0);
  }

  get suppressedTotal(): number {
    return this.real ? this.real.suppressedTotal : (this.parent?.suppressedTotal ?? 0);
  }

  child(fields: LazyFields): BudgetedLogger {
    return new DeferredLogger(this.levels, null, this, fields);
  }

  close(): void {
    if (this.parent) {
      this.parent.close();
      return;
    }
    this.closed = true;
    this.real?.close();
  }
}

/**
 * What makes a deferred logger's real one, as an object: an owner that has the method
 * already (a VM connection) costs no closure per instance.
 */
export interface LoggerMaker {
  makeLogger(): BudgetedLogger;
}

/**
 * `make()` (a budgeted logger) called on the first line at a level `levels` has
 * enabled, not before; the same lines, budget and summaries as `make()`'s logger.
 */
export function deferredLogger(levels: Logger, make: (() => BudgetedLogger) | LoggerMaker): BudgetedLogger {
  return new DeferredLogger(levels, make, null, null);
}
