/**
 * The seams between the domain and the edges. A console's bytes come from a source
 * (an ESXi connection, a QEMU socket, a host tty: src/sources/<kind>/); the people
 * reading it are clients of an access method (telnet, SSH, ...: src/access/<method>/).
 * The hub only sees these interfaces.
 */
import type { SerialLineSettings } from './serial-line.js';

/** Where a console's bytes come from and where client input goes. */
export interface ConsoleSource {
  /** The source type: 'esxi', or a SourceSpec type ('unix', 'telnet', 'device', ...). */
  readonly kind: string;
  /** Human-readable remote end, for `list` and logs. */
  readonly peer: string;
  /** Input for the VM. Returns false when the transport's buffer is full (wait for `onDrain`). */
  write(data: Buffer): boolean;
  /** Register the one drain listener (the hub's). */
  onDrain(listener: () => void): void;
  /** Send a serial BREAK, where the source supports it. */
  sendBreak?(): void;
  /**
   * Change the line settings (baud rate, data size, parity, stop bits), where the source
   * can act on them (a device: termios; RFC 2217 from a telnet client). Resolves with the
   * settings now in effect; rejects with a VspcError when the source refuses them.
   */
  setLineSettings?(settings: SerialLineSettings): Promise<SerialLineSettings>;
  /** Retire the source (drain what was written, then close). */
  close(reason: string): void;
}

/**
 * Where a source that vspc maintains itself stands (it dials or listens, and reconnects
 * with backoff): declared and discovered consoles. ESXi connections come in on their own
 * and have no endpoint status.
 */
export type EndpointState = 'connecting' | 'listening' | 'connected' | 'waiting' | 'stopped';

export interface EndpointStatus {
  /** The source spec, canonical text (src/domain/source-spec.ts). */
  readonly spec: string;
  readonly state: EndpointState;
  /** Why the last attempt or connection ended (`ECONNREFUSED: ...`); null when none did. */
  readonly lastError: string | null;
  /** Connections lost (or attempts failed) since vspc started watching this endpoint. */
  readonly reconnects: number;
  /** ms since the epoch: when `state` was entered. */
  readonly since: number;
  /** ms since the epoch of the next attempt while `waiting`; null otherwise. */
  readonly nextAttemptAt: number | null;
  /** Dials or binds started. */
  readonly attempts: number;
  /** Peers refused because one was already connected (listen types). */
  readonly refusedPeers: number;
  /** The connected link's far end; null when none. */
  readonly peer: string | null;
  /** What `connected` means when it is not obvious (udp: bound, the far end is not checked). */
  readonly note: string | null;
}

/** A person (or program) attached to a VM serial port. */
export interface ConsoleClient {
  readonly id: number;
  readonly peer: string;
  /**
   * The access method it came through: `telnet`, `telnets`, `raw`, `unix`, `pty`, `ssh`,
   * `tunnel` (a serial tunnel's own link) (`who`, metrics, the audit log). Absent: `telnet`.
   */
  readonly method?: string;
  /**
   * Where it came from beyond `peer`, for the audit log: a unix socket's path, owner,
   * group and mode and the peer's uid; a pty's link and device.
   */
  readonly origin?: Readonly<Record<string, string | number | boolean | null>>;
  /** Serial output for the client. The client bounds its own queue and drops itself if slow. */
  deliver(data: Buffer): void;
  /** A message from the concentrator, not from the VM (e.g. "VM disconnected"). */
  notice(text: string): void;
  /**
   * The VM sent a serial BREAK. Optional: an access method without a way to say it
   * leaves it out (the console log still records it). Telnet: IAC BRK (RFC 854).
   */
  breakFromSource?(): void;
  /** Stop/resume reading this client's input (backpressure from the VM side). */
  pauseInput(): void;
  resumeInput(): void;
  close(reason: string): void;
}
