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
 * `parent.child(() => owner.logFields())`, made on the first line written at an
 * enabled level and not before: until then one small object, no closure and no child
 * logger. For objects there are thousands of, most of which never write a line (an idle
 * VM serial port's session at `--log-level warn`). The same lines as the child would
 * write; `child()` makes the child at once.
 */
export class LazyChildLogger implements Logger {
  private real: Logger | null = null;

  constructor(
    private readonly parent: Logger,
    private readonly owner: LogFieldsSource,
  ) {}

  private target(): Logger {
    if (this.real) return this.real;
    const owner = this.owner;
    return (this.real = this.parent.child(() => owner.logFields()));
  }

  error(message: string, fields?: LazyFields): void {
    if (this.parent.isLevelEnabled('error')) this.target().error(message, fields);
  }

  warn(message: string, fields?: LazyFields): void {
    if (this.parent.isLevelEnabled('warn')) this.target().warn(message, fields);
  }

  info(message: string, fields?: LazyFields): void {
    if (this.parent.isLevelEnabled('info')) this.target().info(message, fields);
  }

  debug(message: string, fields?: LazyFields): void {
    if (this.parent.isLevelEnabled('debug')) this.target().debug(message, fields);
  }

  isLevelEnabled(level: LogLevel): boolean {
    return this.parent.isLevelEnabled(level);
  }

  child(fields: LazyFields): Logger {
    return this.target().child(fields);
  }
}
