/**
 * What vspc itself writes into a console log: the header line of every file and the
 * timestamped lines between the console's bytes (docs/console-logs.md, "What is in a
 * file"). Tests pin these formats byte for byte.
 */
import { sanitizeText } from '../../util/text.js';
import { describeKey, type ConsoleIdentity } from '../../domain/identity.js';
import type { ConsoleEvent } from '../../domain/console-hub.js';

/** Text for vspc's own lines: one line, no control characters, no closing bracket games. */
export function clean(text: string): string {
  return sanitizeText(text);
}

/** `user@peer` when the client gave a user name (VSPC-CONTROL), else the peer. */
function who(user: string | undefined, peer: string): string {
  return user ? `${user}@${peer}` : peer;
}

/** The text of an event's line, e.g. `VM connected from 10.0.0.5:1234`. */
export function describeEvent(e: ConsoleEvent): string {
  switch (e.kind) {
    case 'vm-connected':
      return `VM connected from ${e.peer}`;
    case 'vm-disconnected':
      return `VM disconnected (was ${e.peer})`;
    case 'vmotion':
      return `vMotion ${e.outcome} after ${e.durationMs} ms`;
    case 'break-from-source':
      return `BREAK from the VM (${e.peer})`;
    case 'client-attached':
      return `client ${e.clientId} attached from ${who(e.user, e.peer)} (${e.mode})`;
    case 'client-detached':
      return `client ${e.clientId} (${who(e.user, e.peer)}) detached: ${e.reason}`;
    case 'client-takeover':
      return `client ${e.clientId} from ${who(e.user, e.peer)} took over from client ${e.displacedClientId} (${who(e.displacedUser, e.displacedPeer)})`;
  }
}

/**
 * `\r\n[vspc <ISO-8601 UTC> <text>]\r\n`, UTF-8; the leading `\r\n` is left out when the
 * console is already at the start of a line (`atLineStart`), so there are no blank lines.
 */
export function stampedLine(nowMs: number, text: string, atLineStart: boolean): Buffer {
  return Buffer.from(`${atLineStart ? '' : '\r\n'}[vspc ${new Date(nowMs).toISOString()} ${clean(text)}]\r\n`, 'utf8');
}

/**
 * First line of every file: whose it is.
 * `[vspc <stamp> console log of VM "<name>", uuid <key>, label "<label>"]\r\n`
 * (no name yet: no quoted name; no label: no label part; another kind than ESXi names
 * its key by the kind: `proxmox 101`). The key is sanitised: a discovered one is a path.
 */
export function headerLine(nowMs: number, id: Pick<ConsoleIdentity, 'key' | 'name' | 'label'> & Partial<Pick<ConsoleIdentity, 'kind'>>): Buffer {
  const parts = [id.name ? `console log of VM ${JSON.stringify(clean(id.name))}` : 'console log of VM', clean(describeKey({ kind: id.kind ?? 'esxi', key: id.key }))];
  if (id.label) parts.push(`label ${JSON.stringify(clean(id.label))}`);
  return Buffer.from(`[vspc ${new Date(nowMs).toISOString()} ${parts.join(', ')}]\r\n`, 'utf8');
}

/** The line where output was dropped because the file could not keep up. */
export function droppedText(bytes: number): string {
  return `${bytes} bytes of console output dropped: the log file could not keep up`;
}

/** The line where a failed write lost output (`sysCode`: ENOSPC, EIO, ...). */
export function lostText(bytes: number, sysCode: string): string {
  return `${bytes} bytes of console output lost: write failed (${sysCode})`;
}

/** One of vspc's own lines (the header, a timestamped line), with its CRLF. */
const STAMP = String.raw`\[vspc \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z [^\r\n]*\]\r\n`;
/** Such a line at the start of a line. */
const OWN_LINE = new RegExp(`(?<=^|\n)${STAMP}`, 'g');
/** A file's header, then a CRLF vspc put before its first line (nothing was printed yet). */
const AFTER_HEADER = new RegExp(`^(${STAMP})\r\n(?=${STAMP})`);

/**
 * The console's own bytes from a stretch of a log file: vspc's lines (header, events,
 * marks, loss notes) removed. The CRLF vspc put before a line when the console was not
 * at the start of one stays (it cannot be told from the console's own), so where a line
 * was there may be a line break more. Binary-safe: bytes are not decoded.
 */
export function withoutOwnLines(bytes: Buffer): Buffer {
  const text = bytes.toString('latin1');
  OWN_LINE.lastIndex = 0;
  if (!OWN_LINE.test(text)) return bytes;
  return Buffer.from(text.replace(AFTER_HEADER, '$1').replace(OWN_LINE, ''), 'latin1');
}
