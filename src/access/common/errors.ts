/**
 * Errors setting up a console's endpoint for an access method other than telnet (a raw
 * TCP port, a unix socket, a pty link). Each is recorded on the console (`list`,
 * `show`), logged, and the endpoint is tried again later; it never stops the server or
 * touches the console's other endpoints. `context.sysCode` keeps the system's code.
 */
import { VspcError, type ErrorContext } from '../../errors.js';

export type AccessErrorCode =
  | 'VSPC_ACCESS_NO_DIRECTORY'
  | 'VSPC_ACCESS_UNSAFE_DIRECTORY'
  | 'VSPC_ACCESS_PATH_OCCUPIED'
  | 'VSPC_ACCESS_PATH_IN_USE'
  | 'VSPC_ACCESS_ADDRESS_IN_USE'
  | 'VSPC_ACCESS_PERMISSION_DENIED'
  | 'VSPC_ACCESS_FAILED'
  | 'VSPC_PTY_UNAVAILABLE';

export class AccessError extends VspcError {
  declare readonly code: AccessErrorCode;
  constructor(code: AccessErrorCode, message: string, context: ErrorContext = {}, options?: { cause?: unknown }) {
    super(code, message, context, options);
  }
}

/** The `code` of a Node system error (EACCES, ...), if it has one. */
export function sysCodeOf(err: unknown): string | undefined {
  const c = (err as { code?: unknown } | null)?.code;
  return typeof c === 'string' ? c : undefined;
}

/** A system error while doing `what` (at `path`) as an AccessError. */
export function accessError(err: unknown, what: string, context: ErrorContext = {}): AccessError {
  if (err instanceof AccessError) return err;
  const sysCode = sysCodeOf(err);
  const code =
    sysCode === 'EACCES' || sysCode === 'EPERM'
      ? 'VSPC_ACCESS_PERMISSION_DENIED'
      : sysCode === 'EADDRINUSE'
        ? 'VSPC_ACCESS_ADDRESS_IN_USE'
        : sysCode === 'ENOENT' || sysCode === 'ENOTDIR'
          ? 'VSPC_ACCESS_NO_DIRECTORY'
          : 'VSPC_ACCESS_FAILED';
  return new AccessError(code, `${sysCode ?? 'error'}: ${what}`, { ...context, ...(sysCode ? { sysCode } : {}) }, { cause: err });
}
