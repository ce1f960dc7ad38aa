import winston from 'winston';

/** The process logger: vspc's `Logger` (src/domain/logger.ts) plus a settable level. */
export type Logger = winston.Logger;
export { errorFields } from '../errors.js';
export type LogFormat = 'json' | 'text';

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
  const logger = winston.createLogger({ level: options.level ?? 'info', format, transports: [transport], silent: options.silent });
  // winston formats every line (timestamp, JSON) before its transport drops it for being
  // below the level; on a busy server most lines are (info at --log-level warn). Check
  // the level first. Child loggers inherit these methods; the level stays changeable.
  const methods = logger as unknown as Record<string, (...args: unknown[]) => Logger>;
  for (const level of Object.keys(logger.levels)) {
    const write = methods[level];
    if (typeof write !== 'function') continue;
    methods[level] = function (this: Logger, ...args: unknown[]): Logger {
      return this.isLevelEnabled(level) ? write.apply(this, args) : this;
    };
  }
  return logger;
}
