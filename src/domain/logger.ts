/**
 * vspc's own logging seam. The domain, sources and access methods log through this
 * small interface; `src/logging/logger.ts` implements it (around winston). Console
 * bytes never pass through a logger (they go to console log files).
 */

/** Structured fields of one log line. */
export type LogFields = Record<string, unknown>;

/**
 * Fields, or a function computing them: called only when a line is actually written
 * (not for a line below the level). Use the function form where building the fields
 * costs something (hex of a sequence number, a peer address) on a path that runs per
 * connection or per vMotion.
 */
export type LazyFields = LogFields | (() => LogFields);

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';

export interface Logger {
  error(message: string, fields?: LazyFields): void;
  warn(message: string, fields?: LazyFields): void;
  info(message: string, fields?: LazyFields): void;
  debug(message: string, fields?: LazyFields): void;
  /**
   * Whether a line at `level` would be written now. A log budget (log-budget.ts) uses
   * it so that lines below the level spend nothing.
   */
  isLevelEnabled(level: LogLevel): boolean;
  /**
   * A logger whose lines all carry `fields` (one per connection: peer, console). Cheap:
   * nothing is merged until a line is written; a function is called for every line
   * written, so its fields may follow the state they describe.
   */
  child(fields: LazyFields): Logger;
}

/** Something that gives the fields of its log lines (see LazyChildLogger). */
export interface LogFieldsSource {
  logFields(): LogFields;
}

/**
 * A logger that writes through `target()`, made by the subclass only when a line is
 * written at a level `levels` enables: until then no target, no closure, no fields.
 * The shared part of LazyChildLogger and log-budget.ts's DeferredLogger.
 */
export abstract class OnDemandLogger<T extends Logger = Logger> implements Logger {
  /** Answers isLevelEnabled (the logger the target is made from, or its parent). */
  protected abstract readonly levels: Logger;

  /** The real logger, made on the first call. */
  protected abstract target(): T;

  error(message: string, fields?: LazyFields): void {
    if (this.levels.isLevelEnabled('error')) this.target().error(message, fields);
  }

  warn(message: string, fields?: LazyFields): void {
    if (this.levels.isLevelEnabled('warn')) this.target().warn(message, fields);
  }

  info(message: string, fields?: LazyFields): void {
    if (this.levels.isLevelEnabled('info')) this.target().info(message, fields);
  }

  debug(message: string, fields?: LazyFields): void {
    if (this.levels.isLevelEnabled('debug')) this.target().debug(message, fields);
  }

  isLevelEnabled(level: LogLevel): boolean {
    return this.levels.isLevelEnabled(level);
  }

  abstract child(fields: LazyFields): Logger;
}

/**
 * `parent.child(() => owner.logFields())`, made on the first line written at an
 * enabled level and not before: until then one small object, no closure and no child
 * logger. For objects there are thousands of, most of which never write a line (an idle
 * VM serial port's session at `--log-level warn`). The same lines as the child would
 * write; `child()` makes the child at once.
 */
export class LazyChildLogger extends OnDemandLogger {
  private real: Logger | null = null;

  constructor(
    protected readonly levels: Logger,
    private readonly owner: LogFieldsSource,
  ) {
    super();
  }

  protected target(): Logger {
    if (this.real) return this.real;
    const owner = this.owner;
    return (this.real = this.levels.child(() => owner.logFields()));
  }

  child(fields: LazyFields): Logger {
    return this.target().child(fields);
  }
}
