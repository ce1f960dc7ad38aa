/**
 * Error classes with stable `code`s (undici style). Callers branch on `code`,
 * never on message text; `context` carries the structured facts for the log line.
 */
export type ErrorContext = Record<string, unknown>;

export class VspcError extends Error {
  readonly code: string;
  readonly context: ErrorContext;
  constructor(code: string, message: string, context: ErrorContext = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.context = context;
  }
}

/** A peer broke the telnet or option-232 protocol; the connection is closed. */
export class ProtocolError extends VspcError {}

/** Bad configuration or command-line input; the process exits non-zero. */
export class ConfigError extends VspcError {
  constructor(message: string, context: ErrorContext & { field?: string } = {}) {
    super('VSPC_CONFIG_INVALID', message, context);
  }
}

/** Storage (SQLite) failures: schema, port range exhausted, constraint violations. */
export class StorageError extends VspcError {}

/** A lifecycle misuse: write after destroy, and the like. */
export class LifecycleError extends VspcError {}

/** Error fields for a log line: code and context, not the stack (unless it is a bug). */
export function errorFields(err: unknown): Record<string, unknown> {
  if (err && typeof err === 'object') {
    const e = err as { code?: unknown; message?: unknown; context?: unknown };
    return { errorCode: e.code ?? 'UNKNOWN', error: String(e.message ?? err), ...((e.context as object) ?? {}) };
  }
  return { error: String(err) };
}
