import type { NegotiationVerb } from './constants.js';

/**
 * What the decoder yields, in wire order. Data tokens are views of the input chunk
 * (or fresh buffers where IAC IAC had to be unescaped); subnegotiation payloads are
 * always fresh buffers that the caller may keep.
 */
export type TelnetToken =
  | { type: 'data'; data: Buffer }
  | { type: 'command'; command: number }
  | { type: 'negotiation'; verb: NegotiationVerb; option: number }
  | { type: 'subnegotiation'; option: number; payload: Buffer }
  | { type: 'error'; code: TelnetErrorCode; message: string; offset: number };

/** Stable codes for protocol violations found by the decoder. */
export type TelnetErrorCode =
  /** IAC followed by a byte that is not a telnet command. */
  | 'TELNET_BAD_COMMAND'
  /** Inside a subnegotiation, IAC followed by something other than IAC or SE. */
  | 'TELNET_BAD_SB_ESCAPE'
  /** A subnegotiation payload grew past the decoder's bound. */
  | 'TELNET_SB_TOO_LONG';
