/**
 * Errors of the log file machinery (writer, rotation, tail). Each carries a stable
 * `VSPC_LOG_*` code to branch on, the file's path, and the operating system's code
 * (`sysCode`: ENOSPC, EACCES, ENOTDIR, ...) when the file system said no; the original
 * error is the `cause`.
 */
import { VspcError } from '../../errors.js';

export type LogFileErrorCode =
  /** Opening (or creating, or writing the header of) the file failed; data stays queued. */
  | 'VSPC_LOG_OPEN_FAILED'
  /** A write failed; that write's bytes are lost, the rest stays queued. */
  | 'VSPC_LOG_WRITE_FAILED'
  /** Renaming or deleting files during a rotation failed. */
  | 'VSPC_LOG_ROTATE_FAILED'
  /** Closing the file handle failed (the descriptor is gone either way). */
  | 'VSPC_LOG_CLOSE_FAILED'
  /** The writer's queue bound was reached: data was dropped (and counted). */
  | 'VSPC_LOG_BACKLOG_FULL'
  /** An operation was queued on a writer already closed or destroyed. */
  | 'VSPC_LOG_WRITER_CLOSED'
  /** Reading a log file (`tail`) failed. */
  | 'VSPC_LOG_READ_FAILED';

export class LogFileError extends VspcError {
  declare readonly code: LogFileErrorCode;
  /** The file concerned. */
  readonly path: string;
  /** The operating system's error code, when there was one (`UNKNOWN` when the cause had none). */
  readonly sysCode: string | undefined;

  constructor(code: LogFileErrorCode, message: string, path: string, cause?: unknown) {
    const sysCode = cause === undefined ? undefined : sysCodeOf(cause);
    super(code, message, sysCode === undefined ? { path } : { path, sysCode }, cause === undefined ? undefined : { cause });
    this.path = path;
    this.sysCode = sysCode;
  }
}

/** `err.code` of a Node.js system error, as a string; `UNKNOWN` when there is none. */
export function sysCodeOf(err: unknown): string {
  return String((err as { code?: unknown } | null)?.code ?? 'UNKNOWN');
}

/** For `.catch()`: a missing file is not an error here. */
export function ignoreEnoent(err: unknown): void {
  if (sysCodeOf(err) !== 'ENOENT') throw err;
}
