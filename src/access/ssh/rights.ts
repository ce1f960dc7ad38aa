/**
 * What one SSH key may do: which consoles it reaches (patterns), which lock modes it
 * may take, whether it may force, under which user name, from which addresses, and
 * its session limits. Built from an authorized-keys line (authorized-keys.ts) or from
 * the keys command's JSON (keys-command.ts); pure, no I/O.
 */
import net from 'node:net';
import { Glob } from '../../util/glob.js';
import { sanitizeText } from '../../util/text.js';
import { displayKey, type ConsoleIdentity } from '../../domain/identity.js';
import { LOCK_MODES, type LockMode, type LockRequest } from '../../domain/locks.js';

/** The longest user name kept (as VSPC-CONTROL's). */
export const MAX_USER_NAME = 64;

/** Words `vspc-modes` (and the keys command's `modes`) may hold: the lock modes, and `force`. */
export const MODE_WORDS: readonly string[] = [...LOCK_MODES, 'force'];

/**
 * A list of console patterns, OpenSSH pattern-list style: `web*,db01,!web-secret*`.
 * A console is allowed when a positive pattern matches it and no negated one does.
 * Patterns use util/glob.ts (`*`, `?`, any case). A pattern without `:` matches the
 * console's name (every serial port of that machine) or its key (an ESXi VM's UUID); one with
 * `:` matches `NAME:LABEL` (or `KEY:LABEL`): one serial port.
 */
export class ConsolePatterns {
  private readonly allow: Array<{ glob: Glob; labelled: boolean }> = [];
  private readonly deny: Array<{ glob: Glob; labelled: boolean }> = [];

  constructor(readonly patterns: readonly string[]) {
    for (const raw of patterns) {
      const negated = raw.startsWith('!');
      const p = negated ? raw.slice(1) : raw;
      (negated ? this.deny : this.allow).push({ glob: new Glob(p, { ignoreCase: true }), labelled: p.includes(':') });
    }
  }

  /** Every console. */
  static all(): ConsolePatterns {
    return new ConsolePatterns(['*']);
  }

  /** Checks one pattern's text; returns a reason it is unusable, or null. */
  static problem(pattern: string): string | null {
    const p = pattern.startsWith('!') ? pattern.slice(1) : pattern;
    if (p.length === 0) return 'an empty console pattern';
    if (p.length > 256) return 'a console pattern longer than 256 characters';
    return null;
  }

  allows(id: Pick<ConsoleIdentity, 'kind' | 'key' | 'label' | 'name'>): boolean {
    const hit = (l: { glob: Glob; labelled: boolean }) => matches(l.glob, l.labelled, id);
    return this.allow.some(hit) && !this.deny.some(hit);
  }

  toString(): string {
    return this.patterns.join(',');
  }
}

function matches(glob: Glob, labelled: boolean, id: Pick<ConsoleIdentity, 'key' | 'label' | 'name'>): boolean {
  const key = displayKey(id);
  if (!labelled) return (id.name !== null && glob.test(id.name)) || glob.test(key);
  return (id.name !== null && glob.test(`${id.name}:${id.label}`)) || glob.test(`${key}:${id.label}`);
}

/**
 * OpenSSH's `from="..."`: a comma-separated list of address patterns, each an
 * address, a CIDR block (`10.0.0.0/8`, `fd00::/8`), or a glob over the address text
 * (`10.1.*`); `!` negates. A negated match refuses at once; otherwise a positive match
 * allows. Host names are not resolved (vspc does no DNS): a name never matches.
 */
export class AddressPatterns {
  private readonly entries: Array<{ negated: boolean; test: (address: string, family: 'ipv4' | 'ipv6') => boolean }> = [];

  constructor(readonly text: string) {
    for (const raw of text.split(',')) {
      const t = raw.trim();
      const negated = t.startsWith('!');
      const p = negated ? t.slice(1) : t;
      const slash = p.indexOf('/');
      if (slash >= 0) {
        const base = p.slice(0, slash);
        const bits = Number(p.slice(slash + 1));
        const family = net.isIPv4(base) ? 'ipv4' : net.isIPv6(base) ? 'ipv6' : null;
        const list = new net.BlockList();
        list.addSubnet(base, bits, family!);
        this.entries.push({ negated, test: (a, f) => list.check(a, f) });
      } else {
        const glob = new Glob(p, { ignoreCase: true });
        this.entries.push({ negated, test: (a) => glob.test(a) });
      }
    }
  }

  /** Checks the text; returns a reason it is unusable, or null. */
  static problem(text: string): string | null {
    if (text.trim() === '') return 'an empty address list';
    for (const raw of text.split(',')) {
      const t = raw.trim();
      const p = t.startsWith('!') ? t.slice(1) : t;
      if (p === '') return `an empty address pattern in "${text}"`;
      const slash = p.indexOf('/');
      if (slash < 0) continue;
      const base = p.slice(0, slash);
      const bitsText = p.slice(slash + 1);
      const max = net.isIPv4(base) ? 32 : net.isIPv6(base) ? 128 : -1;
      if (max < 0) return `"${p}": ${base} is not an IP address`;
      if (!/^\d{1,3}$/.test(bitsText) || Number(bitsText) > max) return `"${p}": the prefix length must be 0-${max}`;
    }
    return null;
  }

  /** Whether a peer address (as the socket reports it; IPv4-mapped IPv6 is taken as IPv4) may use the key. */
  allows(address: string): boolean {
    const a = normalizeAddress(address);
    const family = net.isIPv4(a) ? 'ipv4' : 'ipv6';
    let allowed = false;
    for (const e of this.entries) {
      if (!e.test(a, family)) continue;
      if (e.negated) return false;
      allowed = true;
    }
    return allowed;
  }
}

/** `::ffff:10.0.0.1` → `10.0.0.1`: what people write in `from=`. */
export function normalizeAddress(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m ? m[1] : address;
}

/** Where a key's rights come from. */
export type RightsSource = 'file' | 'command';

/** What one key may do. */
export interface KeyRights {
  /** The user name: given (vspc-user=, the command's `user`), else the key comment, else `key-<fingerprint start>`; sanitised. */
  readonly user: string;
  readonly consoles: ConsolePatterns;
  /** The lock modes the key may ask for; null: all. */
  readonly modes: ReadonlySet<LockRequest> | null;
  /** May displace other holders (--force). */
  readonly force: boolean;
  /** Session limits; null: the global default (--ssh-idle-timeout, --ssh-max-session); 0: none. */
  readonly idleMs: number | null;
  readonly maxSessionMs: number | null;
  /** from=: null, any address. */
  readonly from: AddressPatterns | null;
  readonly source: RightsSource;
  /** `authorized_keys:12`, or `keys command`: for log lines. */
  readonly where: string;
}

/** A user name as shown to others: sanitised, bounded; `fallback` when nothing is left. */
export function cleanUserName(text: string | undefined, fallback: string): string {
  const t = sanitizeText((text ?? '').trim()).slice(0, MAX_USER_NAME);
  return t === '' ? fallback : t;
}

/** `modes` words → the lock modes and the force flag; null modes when `words` is null (no restriction). */
export function modesFrom(words: readonly string[] | null): { modes: ReadonlySet<LockRequest> | null; force: boolean } {
  if (words === null) return { modes: null, force: true };
  const modes = new Set<LockRequest>();
  let force = false;
  for (const w of words) {
    if (w === 'force') force = true;
    else modes.add(w as LockRequest);
  }
  return { modes, force };
}

export function modeAllowed(rights: KeyRights, mode: LockRequest): boolean {
  return rights.modes === null || rights.modes.has(mode);
}

/**
 * The lock request for a session: the one asked for, checked against the key; without
 * one, the console's default when the key allows it, else `readonly` when allowed,
 * else the first mode the key lists. `readonly_ok` becomes `readonly` for a key that may
 * not write shared (`readwrite`). Returns an error text when the key may not.
 */
export function chooseRequest(
  rights: KeyRights,
  asked: LockRequest | undefined,
  consoleDefault: LockRequest,
  force: boolean,
): { request: LockRequest } | { error: string } {
  if (force && !rights.force) return { error: 'this key may not use --force' };
  if (asked !== undefined) {
    if (asked === 'readonly_ok' && !modeAllowed(rights, 'readonly_ok') && !modeAllowed(rights, 'readwrite') && modeAllowed(rights, 'readonly')) {
      return { request: 'readonly' };
    }
    if (!modeAllowed(rights, asked)) return { error: `this key may not take ${asked.toUpperCase()} (allowed: ${allowedText(rights)})` };
    return { request: asked };
  }
  if (modeAllowed(rights, consoleDefault)) return { request: consoleDefault };
  if (modeAllowed(rights, 'readonly')) return { request: 'readonly' };
  const first = rights.modes ? [...rights.modes][0] : undefined;
  return first ? { request: first } : { error: 'this key may take no lock mode' };
}

/** Whether a lock mode held now is still one the key may hold (after a reload). */
export function holdAllowed(rights: KeyRights, held: LockMode): boolean {
  if (modeAllowed(rights, held)) return true;
  // A readonly_ok request may have resolved to either.
  return rights.modes !== null && rights.modes.has('readonly_ok') && (held === 'readwrite' || held === 'readonly');
}

export function allowedText(rights: KeyRights): string {
  if (rights.modes === null) return 'all';
  const words: string[] = [...rights.modes];
  if (rights.force) words.push('force');
  return words.length > 0 ? words.join(', ') : 'none';
}

/** Two rights that grant the same (for reload: was something withdrawn?). */
export function sameRights(a: KeyRights, b: KeyRights): boolean {
  return (
    a.consoles.toString() === b.consoles.toString() &&
    allowedText(a) === allowedText(b) &&
    (a.from?.text ?? null) === (b.from?.text ?? null) &&
    a.idleMs === b.idleMs &&
    a.maxSessionMs === b.maxSessionMs &&
    a.user === b.user
  );
}

/** A duration as in vspc's options: `500ms`, `30s` (the default unit), `5m`, `8h`, `1d`. Null when malformed. */
export function parseDurationText(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(text);
  if (!m) return null;
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] ?? 's']!;
  return Math.round(Number(m[1]) * unit);
}
