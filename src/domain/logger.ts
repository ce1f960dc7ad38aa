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
