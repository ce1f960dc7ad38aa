/**
 * File names for console logs. A console's log follows its identity (key + label),
 * which never changes, not its name, which does (and is not unique). Names get a
 * symbolic link in `by-name/` for operators. See docs/console-logs.md.
 *
 * Every name made here fits in NAME_MAX (255 bytes, the limit of ext4, XFS, btrfs,
 * tmpfs) with room to spare for the suffixes added to it: `.log`, `.log.<n>` for
 * rotated files. The names are ASCII, so characters are bytes.
 */
import { createHash } from 'node:crypto';
import { formatUuid } from '../../util/uuid.js';

/** Longest file name (bytes) on the file systems we care about. */
export const NAME_MAX = 255;
/** Longest rotation suffix allowed for: `.log.` and up to 20 digits (any `--log-keep` there is). */
const SUFFIX_ROOM = '.log.'.length + 20;
/** Longest encoded key / label kept in a file name before it is shortened with a hash. */
const MAX_KEY_PART = 64;
const MAX_LABEL_PART = 100;
/** A link name is `<name>:<label>.log` (never rotated): the name gets what the label leaves. */
const MAX_NAME_PART = NAME_MAX - ':'.length - MAX_LABEL_PART - '.log'.length;

// The budgets above add up: checked once at load rather than trusted.
if (MAX_KEY_PART + 1 + MAX_LABEL_PART + SUFFIX_ROOM > NAME_MAX || MAX_NAME_PART < 64) {
  throw new Error('console log name budget exceeds NAME_MAX');
}

/**
 * Percent-encodes every UTF-8 byte outside [A-Za-z0-9._-] (so '/', spaces, ':' and '%'
 * itself): injective, so two different labels never share a file, and safe on every
 * filesystem we care about. Longer than `max`: a readable prefix, `~` and 12 hex
 * digits of the SHA-256 of the whole text, `max` characters at most.
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

/**
 * `<uuid 8-4-4-4-12>[-<label>]` (a key that is not a UUID: encoded), without the
 * `.log` suffix. At most 165 characters.
 */
export function consoleLogBaseName(key: string, label: string): string {
  const k = /^[0-9a-f]{32}$/.test(key) ? formatUuid(key) : encodeFilePart(key, MAX_KEY_PART);
  return label ? `${k}-${encodeFilePart(label, MAX_LABEL_PART)}` : k;
}

/** Room for `~<rank>` after a name (ranks have at most 6 digits, src/domain/address.ts). */
const RANK_ROOM = 7;

/**
 * `<name>[~<rank>][:<label>]`, the name of the link in `by-name/` (without `.log`):
 * the console's display name, spelled as the console broker addresses it
 * (`web01:com2`; `web01~2` for the second machine calling itself web01, see
 * nameRanks in src/domain/address.ts). ':' and '~' are always encoded inside a part,
 * so name "a:b" and name "a" with label "b" differ, as do name "a~2" and the second
 * "a". (Links made before were `<name>@<label>`; such a link keeps pointing at its
 * file.) With `.log`, at most NAME_MAX characters.
 */
export function nameLinkBaseName(name: string, label: string, rank = 1): string {
  const n = rank > 1 ? `${encodeFilePart(name, MAX_NAME_PART - RANK_ROOM)}~${rank}` : encodeFilePart(name, MAX_NAME_PART);
  return label ? `${n}:${encodeFilePart(label, MAX_LABEL_PART)}` : n;
}
