/**
 * File names for console logs. A VM serial port's log follows its identity (UUID +
 * label), which never changes, not its name, which does (and is not unique). Names get
 * a symbolic link in `by-name/` for operators. See docs/console-logs.md.
 */
import { createHash } from 'node:crypto';
import { formatUuid } from '../util/uuid.js';

/** Longest encoded label / name kept in a file name before it is shortened with a hash. */
const MAX_LABEL_PART = 100;
const MAX_NAME_PART = 150;

/**
 * Percent-encodes every UTF-8 byte outside [A-Za-z0-9._-] (so '/', spaces, ':' and '%'
 * itself): injective, so two different labels never share a file, and safe on every
 * filesystem we care about.
 */
export function encodeFilePart(text: string, max: number): string {
  let out = '';
  for (const b of Buffer.from(text, 'utf8')) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9._-]/.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  if (out.length <= max) return out;
  // Too long for a file name: keep a readable prefix and a hash of the whole.
  const hash = createHash('sha256').update(text, 'utf8').digest('hex').slice(0, 12);
  let prefix = out.slice(0, max - 13);
  const pct = prefix.lastIndexOf('%');
  if (pct >= 0 && pct > prefix.length - 3) prefix = prefix.slice(0, pct); // do not cut an escape in half
  return `${prefix}~${hash}`;
}

/** `<uuid 8-4-4-4-12>[-<label>]`, without the `.log` suffix. */
export function consoleLogBaseName(uuid: string, label: string): string {
  const u = /^[0-9a-f]{32}$/.test(uuid) ? formatUuid(uuid) : encodeFilePart(uuid, 64);
  return label ? `${u}-${encodeFilePart(label, MAX_LABEL_PART)}` : u;
}

/**
 * `<name>[@<label>]`, the name of the link in `by-name/` (without `.log`). '@' is
 * always encoded inside a part, so name "a@b" and name "a" with label "b" differ.
 */
export function nameLinkBaseName(name: string, label: string): string {
  const n = encodeFilePart(name, MAX_NAME_PART);
  return label ? `${n}@${encodeFilePart(label, MAX_LABEL_PART)}` : n;
}
