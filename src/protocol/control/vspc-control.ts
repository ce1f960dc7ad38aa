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
 * On the console broker (src/access/broker/, `vspc-admin console`), before a console is
 * chosen:
 *
 *   client → server   IAC SB 201 LIST-REQUEST <glob pattern…> IAC SE   (empty: every console)
 *   server → client   IAC SB 201 LIST-REPLY <flags> <JSON array of entries> IAC SE   (bit 0: more follow)
 *   client → server   IAC SB 201 SELECT <address…> IAC SE               (NAME, NAME:LABEL, NAME:, UUID)
 *   server → client   IAC SB 201 SELECTED <name…> IAC SE                (then the LOCK-REQUEST flow above)
 *                  or IAC SB 201 SELECT-REFUSED <reason> <JSON {message, candidates}> IAC SE
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
  LIST_REQUEST: 7,
  LIST_REPLY: 8,
  SELECT: 9,
  SELECTED: 10,
  SELECT_REFUSED: 11,
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
const FLAG_MORE = 1;
const MAX_USER_BYTES = 64;
/** LIST-REQUEST's pattern and SELECT's address, at most (UTF-8 bytes). */
export const MAX_PATTERN_BYTES = 256;
export const MAX_ADDRESS_BYTES = 256;

/**
 * One console as the broker lists it (docs/console-protocol.md, "What the list
 * reveals"): no UUID, no port, no peer address.
 */
export interface ConsoleListEntry {
  /** The console's name (without its label). */
  name: string;
  /** Which serial port of the machine; '' when it has none. */
  label: string;
  /** The source kind: esxi, config, qemu, ... */
  kind: string;
  /** connected, disconnected, migrating, or a maintained source's endpoint state (connecting, waiting, ...). */
  state: string;
  /** Console clients attached now. */
  clients: number;
  /** The shortest spelling SELECT takes for this console alone; null when its name is shared (ask an administrator). */
  address: string | null;
}

/**
 * Why a SELECT was refused; the wire byte is the index + 1. Only ever appended to.
 * `not-found`: no console has that name (or it is one the broker does not offer);
 * `ambiguous`: several have it, the candidates say how to name each.
 */
export const SELECT_REFUSALS = ['not-found', 'ambiguous'] as const;
export type SelectRefusal = (typeof SELECT_REFUSALS)[number];

export type ControlMessage =
  | ({ kind: 'lock-request'; mode: LockRequest; force: boolean; user: string } & Partial<StreamRequest>)
  | { kind: 'lock-granted'; mode: LockMode }
  | { kind: 'lock-refused'; reason: string }
  | { kind: 'who' }
  | { kind: 'who-reply'; holders: unknown[] }
  | { kind: 'lock-revoked'; reason: string }
  | { kind: 'list-request'; pattern: string }
  | { kind: 'list-reply'; more: boolean; entries: ConsoleListEntry[] }
  | { kind: 'select'; address: string }
  | { kind: 'selected'; name: string }
  | { kind: 'select-refused'; reason: SelectRefusal; message: string; candidates: string[] };

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
    case 'list-request':
      return Buffer.concat([Buffer.of(Control.LIST_REQUEST), bounded('LIST-REQUEST pattern', msg.pattern, MAX_PATTERN_BYTES)]);
    case 'list-reply':
      return Buffer.concat([Buffer.of(Control.LIST_REPLY, msg.more ? FLAG_MORE : 0), Buffer.from(JSON.stringify(msg.entries.map(entryFields)), 'utf8')]);
    case 'select': {
      const address = bounded('SELECT address', msg.address, MAX_ADDRESS_BYTES);
      if (address.length === 0) throw new ProtocolError('VSPC_CONTROL_BAD_REQUEST', 'SELECT needs an address');
      return Buffer.concat([Buffer.of(Control.SELECT), address]);
    }
    case 'selected':
      return Buffer.concat([Buffer.of(Control.SELECTED), Buffer.from(msg.name, 'utf8')]);
    case 'select-refused': {
      const body = JSON.stringify({ message: msg.message, candidates: msg.candidates });
      return Buffer.concat([Buffer.of(Control.SELECT_REFUSED, SELECT_REFUSALS.indexOf(msg.reason) + 1), Buffer.from(body, 'utf8')]);
    }
  }
}

/** The UTF-8 of a request's text, refused (not cut: a cut name names something else) past `max` bytes. */
function bounded(what: string, text: string, max: number): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length > max) throw new ProtocolError('VSPC_CONTROL_BAD_REQUEST', `${what} longer than ${max} bytes`);
  return bytes;
}

/** Exactly the fields of an entry, in a fixed order (nothing else a caller's object carries goes on the wire). */
function entryFields(e: ConsoleListEntry): ConsoleListEntry {
  return { name: e.name, label: e.label, kind: e.kind, state: e.state, clients: e.clients, address: e.address };
}

function parseJson(what: string, body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    throw new ProtocolError('VSPC_CONTROL_BAD_REPLY', `${what} is not JSON`);
  }
}

/** An entry of LIST-REPLY, checked field by field; its text made safe for a terminal (src/util/text.ts). */
function entryOf(v: unknown): ConsoleListEntry {
  const bad = (why: string) => new ProtocolError('VSPC_CONTROL_BAD_REPLY', `LIST-REPLY entry ${why}`);
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw bad('is not an object');
  const o = v as Record<string, unknown>;
  for (const f of ['name', 'label', 'kind', 'state'] as const) if (typeof o[f] !== 'string') throw bad(`has no text ${f}`);
  if (typeof o.clients !== 'number' || !Number.isSafeInteger(o.clients) || o.clients < 0) throw bad('has no count of clients');
  if (o.address !== null && typeof o.address !== 'string') throw bad('has an address that is neither text nor null');
  const text = (f: 'name' | 'label' | 'kind' | 'state') => sanitizeText(o[f] as string);
  return {
    name: text('name'),
    label: text('label'),
    kind: text('kind'),
    state: text('state'),
    clients: o.clients,
    address: o.address === null ? null : sanitizeText(o.address as string),
  };
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
    case Control.LIST_REQUEST:
      if (body.length > MAX_PATTERN_BYTES) throw new ProtocolError('VSPC_CONTROL_BAD_REQUEST', `LIST-REQUEST pattern longer than ${MAX_PATTERN_BYTES} bytes`);
      return { kind: 'list-request', pattern: sanitizeText(body.toString('utf8')) };
    case Control.LIST_REPLY: {
      if (body.length < 1) throw new ProtocolError('VSPC_CONTROL_BAD_REPLY', 'LIST-REPLY needs flags');
      const entries = parseJson('LIST-REPLY', body.subarray(1));
      if (!Array.isArray(entries)) throw new ProtocolError('VSPC_CONTROL_BAD_REPLY', 'LIST-REPLY is not a JSON array');
      return { kind: 'list-reply', more: (body[0] & FLAG_MORE) !== 0, entries: entries.map(entryOf) };
    }
    case Control.SELECT:
      if (body.length === 0) throw new ProtocolError('VSPC_CONTROL_BAD_REQUEST', 'SELECT needs an address');
      if (body.length > MAX_ADDRESS_BYTES) throw new ProtocolError('VSPC_CONTROL_BAD_REQUEST', `SELECT address longer than ${MAX_ADDRESS_BYTES} bytes`);
      // The address may be echoed in a refusal, the log and the audit log.
      return { kind: 'select', address: sanitizeText(body.toString('utf8')) };
    case Control.SELECTED:
      return { kind: 'selected', name: sanitizeText(body.toString('utf8')) };
    case Control.SELECT_REFUSED: {
      const reason = body.length > 0 ? SELECT_REFUSALS[body[0] - 1] : undefined;
      if (!reason) throw new ProtocolError('VSPC_CONTROL_BAD_REPLY', `SELECT-REFUSED with an unknown reason ${String(body[0])}`);
      const v = parseJson('SELECT-REFUSED', body.subarray(1)) as { message?: unknown; candidates?: unknown } | null;
      const candidates = v !== null && typeof v === 'object' ? v.candidates : undefined;
      if (typeof v?.message !== 'string' || !Array.isArray(candidates) || !candidates.every((c) => typeof c === 'string')) {
        throw new ProtocolError('VSPC_CONTROL_BAD_REPLY', 'SELECT-REFUSED is not {"message": text, "candidates": [text, ...]}');
      }
      return { kind: 'select-refused', reason, message: sanitizeText(v.message), candidates: (candidates as string[]).map(sanitizeText) };
    }
    default:
      throw new ProtocolError('VSPC_CONTROL_UNKNOWN', `unknown VSPC-CONTROL code ${String(code)}`);
  }
}
