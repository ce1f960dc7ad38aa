import winston from 'winston';
import type { LogFields, LogLevel, Logger as DomainLogger, LazyFields } from '../domain/logger.js';

export { errorFields } from '../errors.js';
export type LogFormat = 'json' | 'text';

/** The process logger: vspc's `Logger` (src/domain/logger.ts) plus a settable level. */
export interface Logger extends DomainLogger {
  /** The level lines must reach to be written (`error`, `warn`, `info`, `debug`); settable at any time. */
  level: string;
  child(fields: LazyFields): Logger;
}

/** winston's npm levels (lower is more severe): the order `level` compares by. */
const RANKS: Readonly<Record<string, number>> = { error: 0, warn: 1, info: 2, http: 3, verbose: 4, debug: 5, silly: 6 };

/** The one winston logger and the level of a logger tree (the root and all its children share it). */
class Sink {
  /** Lines ranked above this are dropped before anything is built; -1: none written (silent). */
  rank: number;
  constructor(
    readonly out: winston.Logger,
    private levelName: string,
    silent: boolean,
  ) {
    this.rank = silent ? -1 : (RANKS[levelName] ?? RANKS.info);
  }
  get level(): string {
    return this.levelName;
  }
  set level(name: string) {
    if (RANKS[name] === undefined) throw new RangeError(`unknown log level "${name}"`);
    this.levelName = name;
    this.out.level = name;
    if (this.rank >= 0) this.rank = RANKS[name];
  }
}

/**
 * vspc's logger: cheap where it runs most, on connections that log nothing at the
 * configured level (info lines at `--log-level warn`, thousands of vMotions a second).
 *
 * - `child(fields)` allocates one small object: the fields are not merged, copied or
 *   looked at until a line is written (winston's `child()` builds a logger object and
 *   merges metadata for every connection, whether it logs or not).
 * - A line below the level costs one comparison: no timestamp, no formatting, no
 *   metadata merge; fields given as a function are not even computed.
 * - Fields given as a function (for a line or a child) are computed when a line is
 *   written, each time: a child's fields can follow what they describe (a connection
 *   that learns its VM's name) without a new child logger.
 *
 * Lines that pass go to winston (JSON or text, stderr or a stream) as before: the
 * child's ancestors' fields first, then its own, then the line's, later ones winning.
 */
class VspcLogger implements Logger {
  constructor(
    private readonly sink: Sink,
    private readonly parent: VspcLogger | null,
    private readonly fields: LazyFields | null,
  ) {}

  get level(): string {
    return this.sink.level;
  }

  set level(name: string) {
    this.sink.level = name;
  }

  isLevelEnabled(level: LogLevel | string): boolean {
    return (RANKS[level] ?? Infinity) <= this.sink.rank;
  }

  error(message: string, fields?: LazyFields): void {
    if (this.sink.rank >= 0) this.write('error', message, fields);
  }

  warn(message: string, fields?: LazyFields): void {
    if (this.sink.rank >= 1) this.write('warn', message, fields);
  }

  info(message: string, fields?: LazyFields): void {
    if (this.sink.rank >= 2) this.write('info', message, fields);
  }

  debug(message: string, fields?: LazyFields): void {
    if (this.sink.rank >= 5) this.write('debug', message, fields);
  }

  child(fields: LazyFields): Logger {
    return new VspcLogger(this.sink, this, fields);
  }

  private write(level: string, message: string, fields: LazyFields | undefined): void {
    const meta: LogFields = {};
    this.collect(meta);
    if (fields) Object.assign(meta, typeof fields === 'function' ? fields() : fields);
    this.sink.out.log(level, message, meta);
  }

  /** Ancestors' fields first, then this logger's. */
  private collect(into: LogFields): void {
    this.parent?.collect(into);
    const f = this.fields;
    if (f) Object.assign(into, typeof f === 'function' ? f() : f);
  }
}

/**
 * Structured logs only: console bytes never pass through here (they go to the
 * console log files, issue 5). One child logger per connection carries peer and VM.
 */
export function createLogger(options: { level?: string; format?: LogFormat; silent?: boolean; stream?: NodeJS.WritableStream } = {}): Logger {
  const format =
    options.format === 'text'
      ? winston.format.combine(
          winston.format.timestamp(),
          winston.format.printf(({ level, message, timestamp, ...meta }) => {
            const rest = Object.keys(meta).length ? ' ' + JSON.stringify(meta) : '';
            return `${timestamp} ${level} ${message}${rest}`;
          }),
        )
      : winston.format.combine(winston.format.timestamp(), winston.format.json());
  const transport = options.stream
    ? new winston.transports.Stream({ stream: options.stream })
    : new winston.transports.Console({ stderrLevels: ['error', 'warn', 'info', 'debug', 'verbose', 'silly'] });
  const level = options.level ?? 'info';
  const out = winston.createLogger({ level, format, transports: [transport], silent: options.silent });
  return new VspcLogger(new Sink(out, level, options.silent ?? false), null, null);
}
