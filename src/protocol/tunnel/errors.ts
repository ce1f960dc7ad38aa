import { VspcError, ProtocolError, type ErrorContext } from '../../errors.js';
import { reasonName } from './constants.js';

export { VspcError, ProtocolError };

/**
 * Stable error codes of the tunnel. Thrown `TunnelError`s (API misuse) and reported
 * `ProtocolError`s / `TunnelStreamError`s carry one of these as `code`.
 */
export const TunnelErrorCode = {
  /** An option or argument is out of range. */
  BAD_ARGUMENT: 'VSPC_TUNNEL_BAD_ARGUMENT',
  /** write() after end(). */
  STREAM_ENDED: 'VSPC_TUNNEL_STREAM_ENDED',
  /** An operation on a stream that is closed or reset. */
  STREAM_CLOSED: 'VSPC_TUNNEL_STREAM_CLOSED',
  /** An operation not valid in the stream's state (accept twice, consume too much, ...). */
  STREAM_STATE: 'VSPC_TUNNEL_STREAM_STATE',
  /** write() would exceed the stream's hard send-buffer limit. */
  BUFFER_FULL: 'VSPC_TUNNEL_BUFFER_FULL',
  /** openStream() with maxStreams streams open, or every id of our partition in use. */
  TOO_MANY_STREAMS: 'VSPC_TUNNEL_TOO_MANY_STREAMS',
  /** A frame payload larger than MAX_PAYLOAD was given to the encoder. */
  FRAME_TOO_LARGE: 'VSPC_TUNNEL_FRAME_TOO_LARGE',
  /** receive()/poll()/drained() called from inside one of the endpoint's own callbacks. */
  REENTRANT: 'VSPC_TUNNEL_REENTRANT',
  /** An operation on a destroyed endpoint. */
  DESTROYED: 'VSPC_TUNNEL_DESTROYED',
  /** Reported: the peer speaks another protocol version. */
  VERSION_MISMATCH: 'VSPC_TUNNEL_VERSION_MISMATCH',
  /** Reported: the peer has our role (two hosts or two agents on one line). */
  ROLE_MISMATCH: 'VSPC_TUNNEL_ROLE_MISMATCH',
  /** Reported: our own HELLO came back (a tty echoing the line). */
  ECHO: 'VSPC_TUNNEL_ECHO',
  /** Stream error: the stream was reset (by the peer or locally). */
  STREAM_RESET: 'VSPC_TUNNEL_STREAM_RESET',
  /** Stream error: the peer refused the OPEN. */
  OPEN_FAILED: 'VSPC_TUNNEL_OPEN_FAILED',
} as const;

/** One of the codes above. */
export type TunnelErrorCodeValue = (typeof TunnelErrorCode)[keyof typeof TunnelErrorCode];

/** Misuse of the tunnel API; thrown synchronously. */
export class TunnelError extends VspcError {}

/**
 * Why a stream ended abnormally, given to the stream's `reset` handler.
 * `code` is VSPC_TUNNEL_OPEN_FAILED (the OPEN was refused) or VSPC_TUNNEL_STREAM_RESET;
 * `reason` is the wire/local reason code (see `Reason`), `remote` tells whether the
 * peer sent it.
 */
export class TunnelStreamError extends VspcError {
  readonly reason: number;
  readonly reasonName: string;
  readonly remote: boolean;
  constructor(
    code: typeof TunnelErrorCode.STREAM_RESET | typeof TunnelErrorCode.OPEN_FAILED,
    reason: number,
    remote: boolean,
    text: string,
    context: ErrorContext = {},
  ) {
    const name = reasonName(reason);
    super(code, `${remote ? 'peer' : 'local'} ${code === TunnelErrorCode.OPEN_FAILED ? 'refused open' : 'reset'}: ${name}${text ? ` (${text})` : ''}`, {
      ...context,
      reason,
      reasonName: name,
      remote,
      text,
    });
    this.reason = reason;
    this.reasonName = name;
    this.remote = remote;
  }
}
