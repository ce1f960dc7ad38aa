import { ProtocolError } from '../../errors.js';
import { sanitizeText } from '../../util/text.js';

/**
 * VSPC-CONTROL: our private telnet option for console clients that want more than a
 * stock telnet (`vspc-admin connect`). Option 201 is unassigned by IANA; a stock
 * client refuses our `DO 201` with `WONT 201` and simply gets the default lock.
 *
 *   client → server   IAC WILL 201
 *   client → server   IAC SB 201 LOCK-REQUEST <mode> <flags> <user…> IAC SE
 *   server → client   IAC SB 201 LOCK-GRANTED <mode> IAC SE         (then console data)
 *                  or IAC SB 201 LOCK-REFUSED <reason…> IAC SE      (then the server closes)
 *   client → server   IAC SB 201 WHO IAC SE
 *   server → client   IAC SB 201 WHO-REPLY <JSON array of holders> IAC SE
 *   server → client   IAC SB 201 LOCK-REVOKED <reason…> IAC SE      (displaced by --force, or kicked)
 *
 * <mode> is one byte, the index in CONTROL_LOCK_MODES (0 readwrite, 1 readonly, 2 exclusive,
 * 3 excl_write, 4 readonly_ok); <flags> bit 0 = force, bit 1 = no scrollback replay,
 * bit 2 = no notices, bit 3 = no greeting (a clean stream for programs); text is UTF-8. Documented in
 * docs/console-protocol.md.
 */
export const VSPC_CONTROL_OPTION = 201;

/**
 * The wire values of <mode>: byte i names CONTROL_LOCK_MODES[i]. Fixed by the protocol
 * (clients in the field depend on them), so this table is the protocol's own and is
 * only ever appended to; the lock rules themselves live in src/domain/locks.ts.
 */
export const CONTROL_LOCK_MODES = ['readwrite', 'readonly', 'exclusive', 'excl_write', 'readonly_ok'] as const;
/** A lock mode a client may request. */
export type LockRequest = (typeof CONTROL_LOCK_MODES)[number];
/** A lock mode the server may grant (READONLY_OK is a request only). */
export type LockMode = Exclude<LockRequest, 'readonly_ok'>;

export const Control = {
  LOCK_REQUEST: 1,
  LOCK_GRANTED: 2,
  LOCK_REFUSED: 3,
  WHO: 4,
  WHO_REPLY: 5,
  LOCK_REVOKED: 6,
} as const;

const FLAG_FORCE = 1;
const FLAG_NO_REPLAY = 2;
const FLAG_NO_NOTICES = 4;
const FLAG_NO_GREETING = 8;

/** What a client may ask to leave out of its stream (all false: the console's defaults). */
export interface StreamRequest {
  noReplay: boolean;
  noNotices: boolean;
  noGreeting: boolean;
}
const MAX_USER_BYTES = 64;

export type ControlMessage =
  | ({ kind: 'lock-request'; mode: LockRequest; force: boolean; user: string } & Partial<StreamRequest>)
  | { kind: 'lock-granted'; mode: LockMode }
  | { kind: 'lock-refused'; reason: string }
  | { kind: 'who' }
  | { kind: 'who-reply'; holders: unknown[] }
  | { kind: 'lock-revoked'; reason: string };

/**
 * The UTF-8 of `text`, cut to at most `max` bytes before a character that would not
 * fit whole (a cut inside a character would decode as U+FFFD on the other side).
 */
function utf8Prefix(text: string, max: number): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= max) return bytes;
  let end = max;
  // bytes[end] is the first byte left out: while it continues a character (10xxxxxx),
  // that character started inside the kept part, so leave it out whole.
  while (end > 0 && (bytes[end] & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end);
}

function modeByte(mode: LockRequest): number {
  return CONTROL_LOCK_MODES.indexOf(mode);
}

function modeOf(b: number | undefined): LockRequest {
  const m = b === undefined ? undefined : CONTROL_LOCK_MODES[b];
  if (!m) throw new ProtocolError('VSPC_CONTROL_BAD_MODE', `unknown lock mode byte ${String(b)}`);
  return m;
}

export function encodeControl(msg: ControlMessage): Buffer {
  switch (msg.kind) {
    case 'lock-request': {
      const user = utf8Prefix(msg.user, MAX_USER_BYTES);
      const flags =
        (msg.force ? FLAG_FORCE : 0) | (msg.noReplay ? FLAG_NO_REPLAY : 0) | (msg.noNotices ? FLAG_NO_NOTICES : 0) | (msg.noGreeting ? FLAG_NO_GREETING : 0);
      return Buffer.concat([Buffer.of(Control.LOCK_REQUEST, modeByte(msg.mode), flags), user]);
    }
    case 'lock-granted':
      return Buffer.of(Control.LOCK_GRANTED, modeByte(msg.mode));
    case 'lock-refused':
      return Buffer.concat([Buffer.of(Control.LOCK_REFUSED), Buffer.from(msg.reason, 'utf8')]);
    case 'who':
      return Buffer.of(Control.WHO);
    case 'who-reply':
      return Buffer.concat([Buffer.of(Control.WHO_REPLY), Buffer.from(JSON.stringify(msg.holders), 'utf8')]);
    case 'lock-revoked':
      return Buffer.concat([Buffer.of(Control.LOCK_REVOKED), Buffer.from(msg.reason, 'utf8')]);
  }
}

/** Parses one VSPC-CONTROL subnegotiation payload; throws ProtocolError on nonsense. */
export function decodeControl(payload: Buffer): ControlMessage {
  const code = payload[0];
  const body = payload.subarray(1);
  switch (code) {
    case Control.LOCK_REQUEST: {
      if (body.length < 2) throw new ProtocolError('VSPC_CONTROL_BAD_REQUEST', 'LOCK-REQUEST needs a mode and flags');
      if (body.length - 2 > MAX_USER_BYTES) throw new ProtocolError('VSPC_CONTROL_BAD_REQUEST', 'LOCK-REQUEST user name too long');
      // The name reaches other people's screens (who, lock refusals, the audit log).
      const user = sanitizeText(body.subarray(2).toString('utf8'));
      const flags = body[1];
      const stream =
        flags & (FLAG_NO_REPLAY | FLAG_NO_NOTICES | FLAG_NO_GREETING)
          ? { noReplay: (flags & FLAG_NO_REPLAY) !== 0, noNotices: (flags & FLAG_NO_NOTICES) !== 0, noGreeting: (flags & FLAG_NO_GREETING) !== 0 }
          : {};
      return { kind: 'lock-request', mode: modeOf(body[0]), force: (flags & FLAG_FORCE) !== 0, user, ...stream };
    }
    case Control.LOCK_GRANTED: {
      const mode = modeOf(body[0]);
      if (mode === 'readonly_ok') throw new ProtocolError('VSPC_CONTROL_BAD_MODE', 'READONLY_OK is a request, not a granted mode');
      return { kind: 'lock-granted', mode };
    }
    case Control.LOCK_REFUSED:
      return { kind: 'lock-refused', reason: body.toString('utf8') };
    case Control.WHO:
      return { kind: 'who' };
    case Control.WHO_REPLY: {
      let holders: unknown;
      try {
        holders = JSON.parse(body.toString('utf8'));
      } catch {
        throw new ProtocolError('VSPC_CONTROL_BAD_REPLY', 'WHO-REPLY is not JSON');
      }
      return { kind: 'who-reply', holders: Array.isArray(holders) ? holders : [] };
    }
    case Control.LOCK_REVOKED:
      return { kind: 'lock-revoked', reason: body.toString('utf8') };
    default:
      throw new ProtocolError('VSPC_CONTROL_UNKNOWN', `unknown VSPC-CONTROL code ${String(code)}`);
  }
}
