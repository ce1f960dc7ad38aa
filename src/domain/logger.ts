/**
 * vspc's own logging seam. The domain, sources and access methods log through this
 * small interface; `src/logging/logger.ts` implements it with winston. Console bytes
 * never pass through a logger (they go to console log files).
 */

/** Structured fields of one log line. */
export type LogFields = Record<string, unknown>;

export interface Logger {
  error(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  debug(message: string, fields?: LogFields): void;
  /** A logger whose lines all carry `fields` (one per connection: peer, console). */
  child(fields: LogFields): Logger;
  /**
   * Whether lines at `level` are written at all (winston's). Optional: a log budget
   * (log-budget.ts) uses it so that lines below the level spend nothing.
   */
  isLevelEnabled?(level: string): boolean;
}
