/**
 * The authorized-keys file of the SSH front door: OpenSSH's format
 * (`[options] keytype base64 [comment]`, one key a line, `#` comments), with vspc's own
 * per-key options:
 *
 *   vspc-consoles="web*,db01,!web-secret"   consoles the key reaches (default: all)
 *   vspc-modes="readonly,readwrite,force"   lock modes it may take, `force` to displace (default: all)
 *   vspc-user="alice"                       user name shown to others and logged (default: the comment)
 *   vspc-idle="30m"  vspc-max-session="8h"  session limits (default: --ssh-idle-timeout, --ssh-max-session)
 *   from="10.0.0.0/8,!10.9.*"               OpenSSH's: source addresses allowed
 *
 * OpenSSH's restrictions that vspc always applies (`restrict`, `no-port-forwarding`,
 * `no-agent-forwarding`, `no-X11-forwarding`, `no-user-rc`) are accepted and change
 * nothing; every other option (`command=`, `permitopen=`, a misspelt vspc option...) is
 * refused with its line number, and so is the whole file: a typo must not widen a key.
 */
import ssh2 from 'ssh2';
import type { ParsedKey } from 'ssh2';
import { ConfigError } from '../../errors.js';
import { LOCK_MODES } from '../../domain/locks.js';
import { fingerprintOf } from './fingerprint.js';
import {
  AddressPatterns,
  cleanUserName,
  ConsolePatterns,
  MODE_WORDS,
  modesFrom,
  parseDurationText,
  type KeyRights,
} from './rights.js';

/** Key types accepted (what ssh2 can verify). Certificates and security keys are not. */
export const KEY_TYPES: ReadonlySet<string> = new Set([
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'ssh-rsa',
]);

/** Options that only restrict what vspc never allows anyway. */
const NO_OPS: ReadonlySet<string> = new Set(['restrict', 'no-port-forwarding', 'no-agent-forwarding', 'no-x11-forwarding', 'no-user-rc']);
const VALUED: ReadonlySet<string> = new Set(['vspc-consoles', 'vspc-modes', 'vspc-user', 'vspc-idle', 'vspc-max-session', 'from']);

/** Bounds: a line (OpenSSH's is 8 KiB; RSA 16384 keys need more), and the file. */
const MAX_LINE = 16 * 1024;
export const MAX_FILE = 4 * 1024 * 1024;

/** One usable key: its public key (to verify signatures), fingerprint and rights. */
export interface AuthorizedKey {
  readonly type: string;
  /** The public key blob, base64 (the map key). */
  readonly blob: string;
  readonly fingerprint: string;
  readonly key: ParsedKey;
  readonly rights: KeyRights;
}

/** A parsed file: keys by blob (base64). */
export type AuthorizedKeys = ReadonlyMap<string, AuthorizedKey>;

/**
 * Parses the file's text. Throws ConfigError `FILE:LINE: what` at the first problem:
 * a line that is not a key, an unknown option, a bad value, a key listed twice.
 */
export function parseAuthorizedKeys(text: string, file: string): Map<string, AuthorizedKey> {
  const keys = new Map<string, AuthorizedKey>();
  const lineOf = new Map<string, number>();
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const n = i + 1;
    const line = lines[i].replace(/\r$/, '').trim();
    if (line === '' || line.startsWith('#')) continue;
    const fail = (what: string): never => {
      throw new ConfigError(`--ssh-authorized-keys: ${file}:${n}: ${what}`, { field: '--ssh-authorized-keys', file, line: n });
    };
    if (line.length > MAX_LINE) fail(`line longer than ${MAX_LINE} characters`);
    const entry = parseLine(line, `${basename(file)}:${n}`, fail);
    const seen = lineOf.get(entry.blob);
    if (seen !== undefined) fail(`the same key as line ${seen} (one line per key, so that its rights are unambiguous)`);
    lineOf.set(entry.blob, n);
    keys.set(entry.blob, entry);
  }
  return keys;
}

function basename(path: string): string {
  const i = path.lastIndexOf('/');
  return i < 0 ? path : path.slice(i + 1);
}

function parseLine(line: string, where: string, fail: (what: string) => never): AuthorizedKey {
  let options = new Map<string, string | true>();
  let rest = line;
  const first = line.split(/\s/, 1)[0];
  if (!KEY_TYPES.has(first)) {
    if (/^(ssh-|ecdsa-|sk-)/.test(first) && !first.includes('=')) fail(`unsupported key type ${JSON.stringify(first)} (use ${[...KEY_TYPES].join(', ')})`);
    const parsed = parseOptions(line, fail);
    options = parsed.options;
    rest = line.slice(parsed.end).trimStart();
  }
  const [type, b64, ...comment] = rest.split(/\s+/);
  if (!type || !b64) fail('expected [options] key-type base64-key [comment]');
  if (!KEY_TYPES.has(type)) fail(`unsupported key type ${JSON.stringify(type.slice(0, 40))} (use ${[...KEY_TYPES].join(', ')})`);
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) fail('the key is not base64');
  const parsedKey = ssh2.utils.parseKey(`${type} ${b64}`);
  if (parsedKey instanceof Error || Array.isArray(parsedKey)) fail(`not a valid ${type} key${parsedKey instanceof Error ? `: ${parsedKey.message}` : ''}`);
  const key = parsedKey as ParsedKey;
  if (key.type !== type) fail(`the key is a ${key.type} key, not ${type}`);
  const blob = key.getPublicSSH();
  const fingerprint = fingerprintOf(blob);
  const rights = rightsFromOptions(options, comment.join(' '), fingerprint, where, fail);
  return { type, blob: blob.toString('base64'), fingerprint, key, rights };
}

/** OpenSSH's option syntax: `name` or `name="value"` (`\"` inside), comma-separated, up to the first unquoted blank. */
function parseOptions(line: string, fail: (what: string) => never): { options: Map<string, string | true>; end: number } {
  const options = new Map<string, string | true>();
  let i = 0;
  for (;;) {
    const m = /^[A-Za-z0-9_-]+/.exec(line.slice(i));
    if (!m) fail(`expected an option name at column ${i + 1}`);
    const name = m[0].toLowerCase();
    i += m[0].length;
    let value: string | true = true;
    if (line[i] === '=') {
      if (line[i + 1] !== '"') fail(`${name}: the value must be in double quotes`);
      i += 2;
      let v = '';
      for (;;) {
        if (i >= line.length) fail(`${name}: the closing quote is missing`);
        if (line[i] === '\\' && line[i + 1] === '"') {
          v += '"';
          i += 2;
        } else if (line[i] === '"') {
          i++;
          break;
        } else v += line[i++];
      }
      value = v;
    }
    if (!NO_OPS.has(name) && !VALUED.has(name)) {
      fail(`unknown option ${JSON.stringify(name)} (vspc knows vspc-consoles, vspc-modes, vspc-user, vspc-idle, vspc-max-session, from, and accepts ${[...NO_OPS].join(', ')})`);
    }
    if (VALUED.has(name) && value === true) fail(`${name} needs a value: ${name}="..."`);
    if (NO_OPS.has(name) && value !== true) fail(`${name} takes no value`);
    if (options.has(name)) fail(`${name} is given twice`);
    options.set(name, value);
    if (line[i] === ',') {
      i++;
      continue;
    }
    if (i >= line.length || !/\s/.test(line[i])) fail('expected a blank between the options and the key');
    return { options, end: i };
  }
}

function rightsFromOptions(
  options: Map<string, string | true>,
  comment: string,
  fingerprint: string,
  where: string,
  fail: (what: string) => never,
): KeyRights {
  const get = (name: string) => {
    const v = options.get(name);
    return typeof v === 'string' ? v : undefined;
  };
  const list = (name: string, text: string) => {
    const items = text.split(',').map((s) => s.trim());
    if (items.some((s) => s === '')) fail(`${name}: an empty item in "${text}"`);
    return items;
  };

  let consoles = ConsolePatterns.all();
  const consolesText = get('vspc-consoles');
  if (consolesText !== undefined) {
    const patterns = list('vspc-consoles', consolesText);
    for (const p of patterns) {
      const problem = ConsolePatterns.problem(p);
      if (problem) fail(`vspc-consoles: ${problem}`);
    }
    consoles = new ConsolePatterns(patterns);
  }

  let words: string[] | null = null;
  const modesText = get('vspc-modes');
  if (modesText !== undefined) {
    words = list('vspc-modes', modesText).map((w) => w.toLowerCase().replace(/-/g, '_'));
    for (const w of words) {
      if (!MODE_WORDS.includes(w)) fail(`vspc-modes: unknown mode ${JSON.stringify(w)} (use ${[...LOCK_MODES, 'force'].join(', ')})`);
    }
  }
  const { modes, force } = modesFrom(words);

  const duration = (name: string): number | null => {
    const t = get(name);
    if (t === undefined) return null;
    const ms = parseDurationText(t);
    if (ms === null) fail(`${name}: "${t}" is not a duration (e.g. 30m, 8h; 0 = none)`);
    return ms;
  };

  let from: AddressPatterns | null = null;
  const fromText = get('from');
  if (fromText !== undefined) {
    const problem = AddressPatterns.problem(fromText);
    if (problem) fail(`from: ${problem}`);
    from = new AddressPatterns(fromText);
  }

  const userText = get('vspc-user');
  if (userText !== undefined && userText.trim() === '') fail('vspc-user: the name is empty');
  return {
    user: cleanUserName(userText ?? comment, `key-${fingerprint.slice(7, 15)}`),
    consoles,
    modes,
    force,
    idleMs: duration('vspc-idle'),
    maxSessionMs: duration('vspc-max-session'),
    from,
    source: 'file',
    where,
  };
}
