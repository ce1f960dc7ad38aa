import winston from 'winston';

export type Logger = winston.Logger;
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
  return winston.createLogger({ level: options.level ?? 'info', format, transports: [transport], silent: options.silent });
}

/** Error fields for a log line: code and context, not the stack (unless it is a bug). */
export function errorFields(err: unknown): Record<string, unknown> {
  if (err && typeof err === 'object') {
    const e = err as { code?: unknown; message?: unknown; context?: unknown };
    return { errorCode: e.code ?? 'UNKNOWN', error: String(e.message ?? err), ...((e.context as object) ?? {}) };
  }
  return { error: String(err) };
}
