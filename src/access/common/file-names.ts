/**
 * File names for per-console endpoints in a directory: unix sockets
 * (`/run/vspc/console/<name>`) and pty links (`/run/vspc/pty/<name>`).
 *
 * The mapping (docs/access-methods.md):
 *
 * - a console's name (the VM's name; a declared console's name; the key, a UUID,
 *   while an ESXi VM has not reported its name), then `@LABEL` when it has a label
 *   (`web01@com2`), like the console logs' `by-name/` links;
 * - each UTF-8 byte outside `[A-Za-z0-9._-]` percent-encoded (`/` → `%2F`, a space →
 *   `%20`, `@` inside a name → `%40`, `%` → `%25`), and a leading `.` too, so that a
 *   name is never `.`, `..` or a hidden file: injective, so different names never
 *   share a file (the same encoding as src/logging/console-log/names.ts, plus the dot);
 * - when several consoles map to the same name in one directory (two VMs called
 *   web01), the first gets it — a declared console before the others, then the oldest
 *   record — and each other one gets `NAME~KEY` (`web01~421a5b77-09c3-8e21-9f00-aa105c2e7d01`);
 * - too long for the file system (255 bytes) or, for a unix socket, for the socket
 *   address (107 bytes for the whole path): a readable prefix, `~` and 12 hex digits
 *   of the SHA-256 of the whole name.
 */
import { createHash } from 'node:crypto';
import { displayKey, type ConsoleIdentity } from '../../domain/identity.js';

/** Longest file name on the file systems we care about. */
export const NAME_MAX = 255;
/** Longest unix socket path (sun_path is 108 bytes with its terminating NUL). */
export const UNIX_PATH_MAX = 107;
/** A unix socket directory must leave at least this much of UNIX_PATH_MAX for names. */
export const MIN_NAME_ROOM = 24;

/**
 * Percent-encodes every UTF-8 byte outside [A-Za-z0-9._-] and a leading dot. Longer
 * than `max`: a readable prefix, `~` and 12 hex digits of the SHA-256 of the text.
 */
export function encodeFileName(text: string, max = NAME_MAX): string {
  let out = '';
  for (const b of Buffer.from(text, 'utf8')) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9._-]/.test(c) && !(out === '' && c === '.') ? c : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out.length <= max ? out : shorten(out, max);
}

/** An encoded name cut to `max`: a readable prefix, `~` and 12 hex digits of the SHA-256 of the whole. */
function shorten(encoded: string, max: number): string {
  const hash = createHash('sha256').update(encoded, 'utf8').digest('hex').slice(0, 12);
  let prefix = encoded.slice(0, Math.max(0, max - 13));
  const pct = prefix.lastIndexOf('%');
  if (pct >= 0 && pct > prefix.length - 3) prefix = prefix.slice(0, pct); // do not cut an escape in half
  return `${prefix}~${hash}`;
}

/**
 * The encoded name a console's endpoint file would have alone: `NAME[@LABEL]`, each part
 * encoded on its own (an `@` inside a name is `%40`, so name "a@b" and name "a" with
 * label "b" differ), not yet shortened.
 */
export function consoleBaseName(id: Pick<ConsoleIdentity, 'key' | 'label' | 'name'>): string {
  const name = encodeFileName(id.name ?? displayKey(id), Number.MAX_SAFE_INTEGER);
  return id.label ? `${name}@${encodeFileName(id.label, Number.MAX_SAFE_INTEGER)}` : name;
}

/** What `assignFileNames` needs of a console. */
export type NamedConsole = Pick<ConsoleIdentity, 'id' | 'kind' | 'key' | 'label' | 'name'>;

/**
 * File names for the consoles that share one directory, unique among them (see the
 * module comment); `max` bytes at most each.
 */
export function assignFileNames<T extends { identity: NamedConsole }>(consoles: readonly T[], max = NAME_MAX): Map<T, string> {
  // The encoding is injective; only equal names (and labels) collide.
  const byBase = new Map<string, T[]>();
  for (const c of consoles) {
    const base = consoleBaseName(c.identity);
    const list = byBase.get(base);
    if (list) list.push(c);
    else byBase.set(base, [c]);
  }
  const out = new Map<T, string>();
  for (const [base, list] of byBase) {
    list.sort((a, b) => rank(a.identity) - rank(b.identity) || a.identity.id - b.identity.id);
    list.forEach((c, i) => {
      // `~` is encoded inside a name, so `NAME~KEY` never equals another console's name.
      const name = i === 0 ? base : `${base}~${encodeFileName(displayKey(c.identity), Number.MAX_SAFE_INTEGER)}`;
      out.set(c, name.length <= max ? name : shorten(name, max));
    });
  }
  return out;
}

/**
 * What decides, in one directory of NAME_MAX-byte names, whether two file names can be
 * the same: every name `assignFileNames` may give the consoles of one base `B` (`B`,
 * `B~KEY`, or shortened, a prefix of at least NAME_MAX - 15 bytes of those and `~HASH`)
 * has the stem of `B` (`~` is always encoded inside a base). So file names with
 * different stems never collide, and consoles with different stems never change each
 * other's names (src/access/common/endpoints.ts groups consoles by it).
 */
export function fileNameStem(name: string): string {
  const tilde = name.indexOf('~');
  return (tilde < 0 ? name : name.slice(0, tilde)).slice(0, NAME_MAX - 16);
}

/** Declared consoles are named by the operator: they keep their names before any other. */
function rank(id: NamedConsole): number {
  return id.kind === 'config' ? 0 : 1;
}
