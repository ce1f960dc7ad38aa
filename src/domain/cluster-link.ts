/**
 * The seam between a node's mirrors of other nodes' consoles (src/sources/cluster/)
 * and the internal link that reaches those nodes (src/access/cluster/): one client's
 * attachment to a console another node owns, relayed over the link.
 */
import type { ClientAuth, LockMode, LockRequest } from './locks.js';

/** A node and where its internal link listens (the `nodes` row it advertised). */
export interface NodeAddress {
  readonly node: string;
  readonly host: string;
  readonly port: number;
}

/** What the owner needs to attach the client to its hub as one of its own. */
export interface RemoteAttachRequest {
  /** The console's id in the shared database and its telnet port (checked together on the owner). */
  readonly consoleId: number;
  readonly tcpPort: number;
  readonly request: LockRequest;
  readonly force: boolean;
  readonly replay: boolean;
  /** The client as this node sees it, for the owner's WHO, audit log and lock holders. */
  readonly peer: string;
  readonly method: string;
  readonly user?: string;
  readonly auth?: ClientAuth;
  /**
   * Instead of the scrollback, replay only what the console printed since this node
   * took it over from the asking node (a relay set up after a cross-node vMotion).
   */
  readonly sinceTakeover?: boolean;
  /**
   * Cross-node vMotion: not a client but the destination's node asking for the
   * migration with this token (sequence + secret, hex). The owner answers with the
   * held input (data), then the notice `released` once it gave the console up; the
   * asker closes the stream with `claimed` once it owns it.
   */
  readonly handover?: string;
  /**
   * With `handover`: the owner sends the console's scrollback first, between the
   * notices `scrollback` and `held` (an owner of an earlier version ignores this and
   * sends only the held input, so the asker tells the two apart by the notices).
   */
  readonly handoverScrollback?: boolean;
}

/** What becomes of a remote attachment: called in the event loop, in order. */
export interface RemoteAttachHandlers {
  /** The owner attached the client under `mode`. */
  accepted(mode: LockMode): void;
  /** Console output (the scrollback replay first, when asked). */
  data(data: Buffer): void;
  notice(text: string): void;
  breakFromSource(): void;
  /** `write` may be called again (it returned false). */
  drain(): void;
  /** Refused, detached or displaced by the owner, or the link broke; nothing more follows. */
  closed(reason: string): void;
}

/** One client's stream to the owning node. */
export interface RemoteAttachment {
  /** Client input. False: the owner's window is full, wait for `drain`. */
  write(data: Buffer): boolean;
  sendBreak(): void;
  /**
   * `callback` runs once every byte written so far has left for the owner (at once
   * when nothing waits for credit, or when the attachment has ended).
   */
  whenFlushed(callback: () => void): void;
  /** Detach (idempotent): `closed` is not called. */
  close(reason: string): void;
}

/** The node's side of the link that dials the others. */
export interface ClusterLinks {
  attach(owner: NodeAddress, request: RemoteAttachRequest, handlers: RemoteAttachHandlers): RemoteAttachment;
}
