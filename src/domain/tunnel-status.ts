/**
 * What a serial tunnel's link reports (src/access/tunnel/link.ts fills it): the one
 * shape for the admin API's `tunnels` view and for metrics, so that admin/ can name
 * it without importing an access method.
 */

/** handshaking (no session with an agent yet), up, down (the agent stopped answering), closed. */
export type TunnelLinkState = 'handshaking' | 'up' | 'down' | 'closed';

/** Counters and state of one link (admin API `tunnels`, metrics). */
export interface TunnelLinkStatus {
  state: TunnelLinkState;
  /** ms since the epoch: when `state` was entered. */
  since: number;
  /** Smoothed round-trip time, ms; null before the first sample. */
  rttMs: number | null;
  rtoMs: number;
  /** Frames sent again (timeouts, fast retransmits). */
  retransmits: number;
  timeouts: number;
  framesSent: number;
  framesReceived: number;
  /** Bytes written to and read from the line, framing included. */
  lineBytesOut: number;
  lineBytesIn: number;
  /** Bytes thrown away by the frame decoder (garbage, damaged frames) and frames with a bad CRC. */
  discardedBytes: number;
  badFrames: number;
  /** Our own frames come back (an echoing line). */
  echoes: number;
  sessions: number;
  peerRestarts: number;
  linkDowns: number;
  /** Streams open now; opened, refused by the guest, reset, in total. */
  streams: number;
  streamsOpened: number;
  streamsRefused: number;
  streamsReset: number;
  /** Stream payload bytes to and from the guest. */
  bytesToGuest: number;
  bytesFromGuest: number;
  hostBootId: string;
  agentBootId: string | null;
}

/**
 * What a person is told who asks for a console that carries a serial tunnel (every
 * access method, the broker and the SSH front door by name): why not, and the ways in.
 */
export function tunnelConsoleRefusal(console: string, tunnel: string): string {
  return `${console} carries the serial tunnel "${tunnel}" (TCP forwards into the guest), not a console for people; use the tunnel's forwards or vspc-admin tunnel ${tunnel} PORT`;
}
