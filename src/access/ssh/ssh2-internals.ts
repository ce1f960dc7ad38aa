/**
 * The one place vspc reaches into ssh2's internals (pinned to ssh2 1.17.0 in
 * package.json; test/access/ssh-*.test.ts exercise it with the real OpenSSH client).
 *
 * ssh2's server answers every channel request it does not know with a failure and
 * tells no one, and RFC 4335's `break` (what OpenSSH's `~B` sends) is one of those.
 * `installBreakRequests` wraps the connection's CHANNEL_REQUEST handler so that a
 * `break` on a session channel is emitted on that session (`onBreakRequest`) and
 * answered as the listener decides. When the internals are not what this code
 * expects (another ssh2 version), nothing is patched, `~B` is refused as before, and
 * the caller logs it once.
 *
 * ssh2's channel-open `reject()` takes no reason: the client is told "connect failed"
 * with an empty description (OpenSSH: `channel 0: open failed: connect failed: `).
 * `rejectChannelOpen` has that one reply say "administratively prohibited" and why.
 */
import type { Connection, Session } from 'ssh2';

const BREAK_EVENT = 'vspc:break';

interface Internals {
  _protocol?: {
    _handlers?: Record<string, unknown>;
    channelSuccess?(id: number): void;
    channelFailure?(id: number): void;
    channelOpenFail?(remote: number, reason: number, description: string): void;
  };
  _chanMgr?: { get(id: number): unknown };
}

interface SessionInternals {
  _chanInfo?: { outgoing?: { id?: number } };
  emit(event: string, ...args: unknown[]): boolean;
  listenerCount(event: string): number;
}

/** Returns false when ssh2's internals are not as expected (nothing patched). */
export function installBreakRequests(connection: Connection): boolean {
  const c = connection as unknown as Internals;
  const proto = c._protocol;
  const handlers = proto?._handlers;
  const original = handlers?.CHANNEL_REQUEST;
  if (!proto || !handlers || typeof original !== 'function' || !c._chanMgr || typeof proto.channelSuccess !== 'function' || typeof proto.channelFailure !== 'function') {
    return false;
  }
  handlers.CHANNEL_REQUEST = (p: unknown, recipient: number, type: string, wantReply: boolean, data: unknown) => {
    if (type === 'break') {
      const session = c._chanMgr!.get(recipient) as SessionInternals | undefined;
      const outgoing = session?._chanInfo?.outgoing?.id;
      if (session && typeof session === 'object' && typeof outgoing === 'number' && session.listenerCount(BREAK_EVENT) > 0) {
        let replied = false;
        const reply = (ok: boolean) => {
          if (replied || !wantReply) return;
          replied = true;
          if (ok) proto.channelSuccess!(outgoing);
          else proto.channelFailure!(outgoing);
        };
        const length = Buffer.isBuffer(data) && data.length >= 4 ? data.readUInt32BE(0) : 0;
        session.emit(BREAK_EVENT, () => reply(true), () => reply(false), length);
        return;
      }
    }
    (original as (...args: unknown[]) => void)(p, recipient, type, wantReply, data);
  };
  return true;
}

/** Listens for RFC 4335 break requests on a session channel (after installBreakRequests). */
export function onBreakRequest(session: Session, listener: (accept: () => void, reject: () => void, lengthMs: number) => void): void {
  session.on(BREAK_EVENT, listener);
}

/** RFC 4254 SSH_OPEN_ADMINISTRATIVELY_PROHIBITED. */
const OPEN_ADMINISTRATIVELY_PROHIBITED = 1;

/**
 * Calls a channel-open `reject` (of a `tcpip` or `openssh.streamlocal` event) so that
 * the failure it sends says "administratively prohibited" with `description`; with
 * internals not as expected, a plain reject (no text).
 */
export function rejectChannelOpen(connection: Connection, reject: () => void, description: string): void {
  const proto = (connection as unknown as Internals)._protocol;
  const original = proto?.channelOpenFail;
  if (!proto || typeof original !== 'function') return reject();
  const own = Object.prototype.hasOwnProperty.call(proto, 'channelOpenFail');
  // reject() sends the failure synchronously: the substitute is in place for exactly that call.
  proto.channelOpenFail = (remote: number) => original.call(proto, remote, OPEN_ADMINISTRATIVELY_PROHIBITED, description);
  try {
    reject();
  } finally {
    if (own) proto.channelOpenFail = original;
    else delete proto.channelOpenFail;
  }
}
