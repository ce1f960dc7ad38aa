/**
 * Errors of the sources vspc maintains itself (QEMU sockets, devices). Every failure of
 * an attempt or of a live link is a `SourceError` with a stable `VSPC_SOURCE_*` code;
 * `context.sysCode` keeps the operating system's code (ECONNREFUSED, ENOENT, ...) when
 * there was one. Callers and tests branch on `code`, never on the message.
 */
import { VspcError, type ErrorContext } from '../../errors.js';

export const SOURCE_ERROR_CODES = {
  /** A unix socket path (or a listen path's directory entry) does not exist: the VM is not running. */
  NOT_FOUND: 'VSPC_SOURCE_NOT_FOUND',
  /** The peer refused or could not be reached (ECONNREFUSED, EHOSTUNREACH, a name that does not resolve...). */
  CONNECT_FAILED: 'VSPC_SOURCE_CONNECT_FAILED',
  /** A dial did not complete within connectTimeoutMs (a black-holed TCP address). */
  CONNECT_TIMEOUT: 'VSPC_SOURCE_CONNECT_TIMEOUT',
  /** Something that is not a socket is at the path (a regular file, a directory, a symlink where vspc listens). */
  NOT_A_SOCKET: 'VSPC_SOURCE_NOT_A_SOCKET',
  /** EACCES / EPERM: vspc may not connect to, create or replace the path, or bind the port. */
  PERMISSION_DENIED: 'VSPC_SOURCE_PERMISSION_DENIED',
  /** A listen path's directory does not exist or is not a directory. */
  NO_DIRECTORY: 'VSPC_SOURCE_NO_DIRECTORY',
  /** The listen address is taken (EADDRINUSE; a live listener on a unix-listen path). */
  ADDRESS_IN_USE: 'VSPC_SOURCE_ADDRESS_IN_USE',
  /** Any other bind/listen failure (EADDRNOTAVAIL, ...). */
  LISTEN_FAILED: 'VSPC_SOURCE_LISTEN_FAILED',
  /** A second peer connected to a listen endpoint while one is attached: it was refused; or another program holds a device locked (flock). */
  BUSY: 'VSPC_SOURCE_BUSY',
  /** The peer closed the connection (end of stream). */
  CLOSED: 'VSPC_SOURCE_CLOSED',
  /** The connection failed under way (ECONNRESET, EPIPE, ...). */
  RESET: 'VSPC_SOURCE_RESET',
  /** The peer broke the telnet protocol; the link is closed and the endpoint redialled. */
  PROTOCOL_ERROR: 'VSPC_SOURCE_PROTOCOL_ERROR',
  /** A bug while handling the peer's bytes; contained to this link. */
  INTERNAL: 'VSPC_SOURCE_INTERNAL',
  /** A device path that is not a terminal (a regular file, a directory, a FIFO, a socket, /dev/null...). */
  NOT_A_TTY: 'VSPC_SOURCE_NOT_A_TTY',
  /** Line settings the device (or serialport on this platform) cannot apply: parity mark/space, 1.5 stop bits, a baud rate the driver refuses. */
  LINE_UNSUPPORTED: 'VSPC_SOURCE_LINE_UNSUPPORTED',
  /** No link factory is registered for the spec's type (a type no source module registered). */
  UNSUPPORTED: 'VSPC_SOURCE_UNSUPPORTED',
  /** File descriptors are exhausted: the attempt waits for the process's descriptor budget (docs/security.md). */
  NO_DESCRIPTORS: 'VSPC_SOURCE_NO_DESCRIPTORS',
  /** The peer did not read what vspc sent it (input, telnet negotiation replies) past --client-queue-limit; the link is closed and the endpoint redialled. */
  NOT_READING: 'VSPC_SOURCE_NOT_READING',
} as const;

export type SourceErrorCode = (typeof SOURCE_ERROR_CODES)[keyof typeof SOURCE_ERROR_CODES];

export class SourceError extends VspcError {
  declare readonly code: SourceErrorCode;
  constructor(code: SourceErrorCode, message: string, context: ErrorContext = {}, options?: { cause?: unknown }) {
    super(code, message, context, options);
  }

  /** The OS error code behind this error, if any (ECONNREFUSED, ENOENT, ...). */
  get sysCode(): string | undefined {
    const c = this.context.sysCode;
    return typeof c === 'string' ? c : undefined;
  }

  /** `CODE/SYSCODE`: what "the same error again" means for log rate limiting. */
  get key(): string {
    return this.sysCode ? `${this.code}/${this.sysCode}` : this.code;
  }
}

/** The `code` of a Node system error (ECONNREFUSED, ...), if it has one. */
export function sysCodeOf(err: unknown): string | undefined {
  const c = (err as { code?: unknown } | null)?.code;
  return typeof c === 'string' ? c : undefined;
}

/** What an error on an established link means. */
export function linkError(err: unknown, peer: string): SourceError {
  if (err instanceof SourceError) return err;
  const sysCode = sysCodeOf(err);
  return new SourceError('VSPC_SOURCE_RESET', `${sysCode ?? 'error'}: connection to ${peer} failed: ${(err as Error)?.message ?? String(err)}`, {
    sysCode,
  });
}

/** What a failed connect means (the unix dialer refines ENOENT/ECONNREFUSED by looking at the path). */
export function connectError(err: unknown, peer: string): SourceError {
  if (err instanceof SourceError) return err;
  const sysCode = sysCodeOf(err);
  const detail = (err as Error)?.message ?? String(err);
  switch (sysCode) {
    case 'ENOENT':
    case 'ENOTDIR':
      return new SourceError('VSPC_SOURCE_NOT_FOUND', `${sysCode}: ${peer} does not exist`, { sysCode });
    case 'EACCES':
    case 'EPERM':
      return new SourceError('VSPC_SOURCE_PERMISSION_DENIED', `${sysCode}: no permission to connect to ${peer}`, { sysCode });
    case 'ETIMEDOUT':
      return new SourceError('VSPC_SOURCE_CONNECT_TIMEOUT', `${sysCode}: connecting to ${peer} timed out`, { sysCode });
    default:
      return new SourceError('VSPC_SOURCE_CONNECT_FAILED', `${sysCode ?? 'error'}: cannot connect to ${peer}: ${detail}`, { sysCode });
  }
}

/** What a failed bind/listen means. */
export function listenError(err: unknown, where: string): SourceError {
  if (err instanceof SourceError) return err;
  const sysCode = sysCodeOf(err);
  const detail = (err as Error)?.message ?? String(err);
  switch (sysCode) {
    case 'EADDRINUSE':
      return new SourceError('VSPC_SOURCE_ADDRESS_IN_USE', `${sysCode}: ${where} is already in use`, { sysCode });
    case 'EACCES':
    case 'EPERM':
      return new SourceError('VSPC_SOURCE_PERMISSION_DENIED', `${sysCode}: no permission to listen on ${where}`, { sysCode });
    case 'ENOENT':
    case 'ENOTDIR':
      return new SourceError('VSPC_SOURCE_NO_DIRECTORY', `${sysCode}: the directory of ${where} does not exist`, { sysCode });
    default:
      return new SourceError('VSPC_SOURCE_LISTEN_FAILED', `${sysCode ?? 'error'}: cannot listen on ${where}: ${detail}`, { sysCode });
  }
}

/** Any error as a SourceError (unexpected ones become INTERNAL). */
export function asSourceError(err: unknown): SourceError {
  if (err instanceof SourceError) return err;
  return new SourceError('VSPC_SOURCE_INTERNAL', `internal error: ${(err as Error)?.message ?? String(err)}`, { sysCode: sysCodeOf(err) }, { cause: err });
}
